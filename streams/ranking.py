"""Rank and diversify candidates from several generators into one recommendation.

Steps (all vectorised numpy, O(candidates x (recent + k)), never O(catalogue)):

1. **Normalise per source.** Generators score on different scales (ANN cosine, co-visit
   probability, decayed popularity), so each source's scores are mapped to ``[0, 1]``:
   ``(s - lo) / (hi - lo)`` with ``lo = min(0, min s)`` and ``hi = max(max s, floor)`` (for
   non-negative scores: ``s / max s``; a source whose scores are all equal maps to 1). The
   per-source ``score_floors`` keep thin evidence thin: without one, a single click in the
   crowd would be "the most trending item" at full weight.
2. **Blend and merge.** ``relevance = source_weight[source] * normalised``. An item offered by
   several sources keeps its best (source, relevance) and gains ``multi_source_bonus`` per
   extra source that agrees.
3. **Exposure penalty** (fairness knob): ``relevance -= exposure_penalty * exposure[item]``
   where ``exposure`` (caller-supplied, expected in ``[0, 1]``) is e.g. an item's share of
   recent recommendations; it nudges the long tail up.
4. **MMR diversification** (Carbonell & Goldstein, 1998): pick greedily
   ``argmax (1 - lambda) * relevance - lambda * max_{s in selected} max(cos(i, s), 0)`` with
   ``lambda = diversity``. A candidate without a vector is similar to nothing. The reported
   score is that MMR value, which never increases from one pick to the next, so the list is
   in descending score order; exact ties are ordered by item_id.
5. **Reasons.** ``because`` lists up to ``max_because`` of the user's recent items most similar
   to the item (positive cosine only); a generator's own reason (the co-visited item) comes
   first when it is one of the recent items.

Pure: no clock, no I/O, deterministic for equal inputs (ties broken by item_id).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from streams.errors import ConfigError

__all__ = [
    "DEFAULT_SOURCE_WEIGHTS",
    "Offers",
    "RankParams",
    "RankedItem",
    "normalise_rows",
    "rank_offers",
]

#: How much a perfect candidate from each generator is worth. Interest (long-term ANN) is
#: the reference; session and co-visitation are nearly as strong on the next click;
#: trending is a weak prior, mostly for cold users.
DEFAULT_SOURCE_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"interest": 1.0, "session": 0.9, "covisit": 0.9, "trending": 0.4}
)

@dataclass(frozen=True, slots=True)
class RankParams:
    """Knobs of ranking; ``diversity`` mirrors ``RecommendSettings.diversity``.

    Attributes:
        diversity: MMR lambda: 0 = pure relevance, 1 = pure diversity.
        source_weights: weight per generator name.
        default_source_weight: weight of a generator not in ``source_weights``.
        multi_source_bonus: added per extra generator that offered the same item.
        exposure_penalty: multiplies the caller's ``exposure`` before subtracting it.
        max_because: reasons per item.
        score_floors: per source, the raw score that counts as full strength at the least
            (the normaliser is ``max(max score, floor)``).
    """

    diversity: float = 0.3
    source_weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_SOURCE_WEIGHTS)
    default_source_weight: float = 0.5
    multi_source_bonus: float = 0.05
    exposure_penalty: float = 0.05
    max_because: int = 2
    fusion: str = "max"
    score_floors: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    # fusion: "max" keeps an item's best (source, relevance); "sum" adds the relevance of
    # every source that offered it (a linear blend of the signals; the reported source is
    # the largest contributor). multi_source_bonus applies in both.

    def __post_init__(self) -> None:
        if not 0.0 <= self.diversity <= 1.0:
            raise ConfigError(f"diversity must lie in [0, 1], got {self.diversity}")
        if self.max_because < 0:
            raise ConfigError(f"max_because must be >= 0, got {self.max_because}")
        if self.fusion not in ("max", "sum"):
            raise ConfigError(f"fusion must be 'max' or 'sum', got {self.fusion!r}")


@dataclass(frozen=True, slots=True)
class RankedItem:
    """One recommended item, as published (``to_record`` gives the JSON shape)."""

    item_id: str
    score: float
    because: tuple[str, ...]
    source: str

    def to_record(self) -> dict[str, object]:
        """The ``items[]`` entry of a recommendation record (docs/architecture.md)."""
        return {
            "item_id": self.item_id,
            "score": self.score,
            "because": list(self.because),
            "source": self.source,
        }


def unit_score(score: float) -> float:
    """A ranker score as published: in [0, 1], monotone in the fused MMR score
    (``max(s, 0) / (1 + max(s, 0))``), so that any list's scores share one scale. Not a
    calibrated click probability: that needs a learned ranker."""
    positive = max(float(score), 0.0)
    return positive / (1.0 + positive)


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; zero or non-finite rows become zero).

    Args:
        matrix: ``(n, dim)``; not modified.

    Returns:
        A new ``(n, dim)`` float32 array.
    """
    m = np.array(matrix, dtype=np.float32, copy=True, ndmin=2)
    if not np.isfinite(m).all():
        m[~np.isfinite(m)] = 0.0
    norms = np.sqrt(np.einsum("ij,ij->i", m, m))[:, None]
    np.divide(m, norms, out=m, where=norms > 0)
    return m


def _source_norm(scores: np.ndarray, floor: float = 0.0) -> np.ndarray:
    lo = min(0.0, float(scores.min()))
    hi = max(float(scores.max()), floor)
    if not hi > lo:
        return np.ones_like(scores)
    return (scores - lo) / (hi - lo)


@dataclass(frozen=True, slots=True)
class Offers:
    """Every candidate item once, with each generator's score for it: what :func:`rank_offers` ranks.

    Generators build this directly, column by column, with no per-offer objects.

    Attributes:
        item_ids: ``n`` distinct items.
        vectors: ``(n, dim)`` float32, a zero row where an item has no vector.
        sources: the generator behind each column of ``scores``.
        scores: ``(n, len(sources))`` float64, each generator's best score for the item,
            NaN where it did not score it.
        reasons: item_id -> the generators' own reasons, in offer order.
    """

    item_ids: list[str]
    vectors: np.ndarray
    sources: list[str]
    scores: np.ndarray
    reasons: Mapping[str, list[str]]

    def by_source(self, source: str) -> list[tuple[str, float]]:
        """``(item_id, score)`` of every item ``source`` scored, in item order."""
        if source not in self.sources:
            return []
        column = self.scores[:, self.sources.index(source)]
        return [(self.item_ids[j], float(column[j])) for j in np.flatnonzero(~np.isnan(column)).tolist()]


def rank_offers(
    offers: Offers,
    *,
    recent: Sequence[tuple[str, np.ndarray | None]],
    k: int,
    params: RankParams,
    exposure: Mapping[str, float] | None = None,
) -> list[RankedItem]:
    """Blend, diversify and explain the offers (the module docstring's steps 1-5).

    Args:
        offers: every candidate item once, scored by the generators that offered it.
        recent: the user's recent items as ``(item_id, vector or None)``, newest last; the
            only ids ``because`` may contain.
        k: how many items to return at most.
        params: ranking knobs.
        exposure: optional ``item_id -> exposure in [0, 1]`` for the exposure penalty.

    Returns:
        Up to ``k`` distinct items, score descending, ties by item_id.
    """
    ids = offers.item_ids
    if k <= 0 or not ids:
        return []
    names = offers.sources
    # ---- 1-2. per-source normalisation and weights: one (item x source) relevance matrix
    matrix = np.full(offers.scores.shape, -np.inf)
    for col, name in enumerate(names):
        column = offers.scores[:, col]
        mask = np.isfinite(column)
        if mask.any():
            weight = params.source_weights.get(name, params.default_source_weight)
            matrix[mask, col] = weight * _source_norm(column[mask], params.score_floors.get(name, 0.0))
    offered = np.isfinite(matrix)
    keep = offered.any(axis=1)
    if not keep.all():  # an item no generator scored with a finite number
        keep_rows = np.flatnonzero(keep)
        if keep_rows.size == 0:
            return []
        ids = [ids[j] for j in keep_rows.tolist()]
        matrix, offered = matrix[keep_rows], offered[keep_rows]
        vectors = offers.vectors[keep_rows]
    else:
        vectors = offers.vectors
    by_name = sorted(range(len(names)), key=names.__getitem__)
    ordered = matrix[:, by_name]
    if params.fusion == "sum":
        base = np.where(offered, matrix, 0.0).sum(axis=1)
        # the reported source is the largest contributor; ties: the last name
        winner = len(by_name) - 1 - np.argmax(ordered[:, ::-1], axis=1)
    else:
        base = matrix.max(axis=1)
        winner = np.argmax(ordered, axis=1)  # ties: the first name
    relevance = base + params.multi_source_bonus * (offered.sum(axis=1) - 1)

    # ---- 3. exposure penalty
    if exposure and params.exposure_penalty:
        relevance -= params.exposure_penalty * np.array(
            [float(exposure.get(i, 0.0)) for i in ids], dtype=np.float64
        )
    # Only candidates MMR could ever pick go on (exact, see _pickable): at ~60 offers and
    # k = 10 most fall away, and with them most of the similarity and sorting work.
    pickable = _pickable(relevance, k, params.diversity)
    if pickable is not None:
        ids = [ids[j] for j in pickable.tolist()]
        relevance, winner, vectors = relevance[pickable], winner[pickable], vectors[pickable]
    # Deterministic candidate order: relevance desc, then item_id; argmax takes the first.
    order = np.lexsort((np.array(ids), -relevance))
    ranked = order.tolist()
    ids = [ids[j] for j in ranked]
    winner = winner[order].tolist()
    relevance = relevance[order]

    # ---- 4. MMR over unit vectors (missing vectors are zero rows: similar to nothing)
    mat = normalise_rows(vectors[order]) if vectors.size else np.zeros((len(ids), 0), dtype=np.float32)
    dim = mat.shape[1]
    lam = params.diversity
    n = min(k, len(ids))
    max_sim = np.zeros(len(ids), dtype=np.float64)
    taken = np.zeros(len(ids), dtype=bool)
    picks: list[tuple[int, float]] = []
    for _ in range(n):
        mmr = (1.0 - lam) * relevance - lam * max_sim
        mmr[taken] = -np.inf
        j = int(np.argmax(mmr))
        picks.append((j, float(mmr[j])))
        taken[j] = True
        if lam > 0.0 and dim:
            sims = (mat @ mat[j]).astype(np.float64)
            np.maximum(max_sim, np.maximum(sims, 0.0), out=max_sim)

    # ---- 5. reasons from the user's recent items
    picked = [j for j, _ in picks]
    because = _because([ids[j] for j in picked], mat[picked], offers.reasons, recent, dim, params)
    sources = [names[by_name[winner[j]]] for j in picked]
    out = [  # a trending item is there for the crowd, not for anything the user did: no reason
        RankedItem(item_id=ids[j], score=score, because=() if source == "trending" else because[pos], source=source)
        for pos, ((j, score), source) in enumerate(zip(picks, sources, strict=True))
    ]
    out.sort(key=lambda r: (-r.score, r.item_id))  # only reorders exact ties
    return out


def _pickable(relevance: np.ndarray, k: int, diversity: float) -> np.ndarray | None:
    """The rows MMR may pick among the top ``k``; None when that is every row.

    At every step fewer than ``k`` items are picked, so one of the ``k`` most relevant is
    still free, and its MMR value is at least ``(1 - lam) * r_k - lam`` (``r_k`` the k-th
    largest relevance; the similarity penalty is at most 1). A candidate whose best MMR value,
    ``(1 - lam) * r``, is below that never wins a step. A margin covers float32 similarities
    a hair above 1.
    """
    n = relevance.size
    if n <= k or diversity >= 1.0:
        return None
    r_k = np.partition(relevance, n - k)[n - k]
    bound = r_k - diversity / (1.0 - diversity) * (1.0 + 1e-6) - 1e-9
    rows = np.flatnonzero(relevance >= bound)
    return rows if rows.size < n else None


def _because(
    picked: list[str],
    picked_mat: np.ndarray,
    reasons: Mapping[str, list[str]],
    recent: Sequence[tuple[str, np.ndarray | None]],
    dim: int,
    params: RankParams,
) -> list[tuple[str, ...]]:
    m = params.max_because
    if m == 0:
        return [() for _ in picked]
    # Distinct recent ids, newest occurrence wins; newest first for tie-breaks.
    recent_ids: list[str] = []
    recent_vecs: list[np.ndarray] = []
    seen: set[str] = set()
    for rid, v in reversed(recent):
        if rid in seen:
            continue
        seen.add(rid)
        recent_ids.append(rid)
        arr = None if v is None else np.asarray(v).reshape(-1)
        recent_vecs.append(arr if arr is not None and arr.shape[0] == dim else np.zeros(dim, np.float32))
    sims = None
    if recent_ids and dim:
        sims = picked_mat @ normalise_rows(np.stack(recent_vecs)).T  # (k, recent)

    out: list[tuple[str, ...]] = []
    for row, item in enumerate(picked):
        chosen = [r for r in reasons.get(item, ()) if r in seen and r != item][:m]
        if sims is not None and len(chosen) < m:
            s = sims[row]
            for idx in np.lexsort((np.arange(len(s)), -s)):  # cosine desc, newest first
                if s[idx] <= 0.0 or len(chosen) >= m:
                    break
                rid = recent_ids[idx]
                if rid != item and rid not in chosen:
                    chosen.append(rid)
        out.append(tuple(chosen))
    return out

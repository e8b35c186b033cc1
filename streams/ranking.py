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

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import math

import numpy as np

from streams.errors import ConfigError

__all__ = [
    "DEFAULT_SOURCE_WEIGHTS",
    "Candidate",
    "Offers",
    "RankParams",
    "RankedItem",
    "cosine_top",
    "normalise_rows",
    "rank",
    "rank_offers",
]

#: How much a perfect candidate from each generator is worth. Interest (long-term ANN) is
#: the reference; session and co-visitation are nearly as strong on the next click;
#: trending is a weak prior, mostly for cold users.
DEFAULT_SOURCE_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"interest": 1.0, "session": 0.9, "covisit": 0.9, "trending": 0.4}
)

_NO_EXCLUDE: frozenset[str] = frozenset()


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
class Candidate:
    """One item offered by one generator.

    Attributes:
        item_id: the item.
        score: the generator's own score (higher is better; any scale).
        source: the generator (``interest``, ``session``, ``covisit``, ``trending``, ...).
        vector: the item's embedding, shape ``(dim,)``, or None when unknown.
        because: the generator's own reasons (e.g. the co-visited recent item).
    """

    item_id: str
    score: float
    source: str
    vector: np.ndarray | None = None
    because: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RankedItem:
    """One recommended item, as published (``to_record`` gives the JSON shape)."""

    item_id: str
    score: float
    because: tuple[str, ...]
    source: str

    def to_record(self) -> dict[str, object]:
        """The ``items[]`` entry of a recommendation record (DESIGN.md)."""
        return {
            "item_id": self.item_id,
            "score": self.score,
            "because": list(self.because),
            "source": self.source,
        }


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


def cosine_top(query: np.ndarray, vectors: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The ``n`` rows of ``vectors`` most cosine-similar to ``query``.

    Args:
        query: ``(dim,)``.
        vectors: ``(m, dim)``.
        n: how many.

    Returns:
        ``[(row index, cosine), ...]``, cosine descending, ties by lower index.
    """
    if n <= 0 or len(vectors) == 0:
        return []
    q = normalise_rows(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
    sims = normalise_rows(vectors) @ q
    order = np.lexsort((np.arange(len(sims)), -sims))[:n]
    return [(int(i), float(sims[i])) for i in order]


def _source_norm(scores: np.ndarray, floor: float = 0.0) -> np.ndarray:
    lo = min(0.0, float(scores.min()))
    hi = max(float(scores.max()), floor)
    if not hi > lo:
        return np.ones_like(scores)
    return (scores - lo) / (hi - lo)


@dataclass(frozen=True, slots=True)
class Offers:
    """Every candidate item once, with each generator's score for it: what :func:`rank_offers` ranks.

    Generators build this directly (the recommender does, with no per-offer objects);
    :func:`rank` builds it from a list of :class:`Candidate`.

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


def rank(
    candidates: Sequence[Candidate],
    *,
    recent: Sequence[tuple[str, np.ndarray | None]],
    k: int,
    params: RankParams,
    exposure: Mapping[str, float] | None = None,
    exclude: Container[str] = _NO_EXCLUDE,
) -> list[RankedItem]:
    """Merge, score, diversify and explain candidates (:func:`rank_offers` over a list).

    Args:
        candidates: from every generator, in any order, duplicates allowed (a generator's
            best offer of an item counts). An item's vector is that of its offer from the
            source first by name, among the offers that carry one.
        recent: the user's recent items as ``(item_id, vector or None)``, newest last; the
            only ids ``because`` may contain.
        k: how many items to return at most.
        params: ranking knobs.
        exposure: optional ``item_id -> exposure in [0, 1]`` for the exposure penalty.
        exclude: item ids never to return (usually already dropped by the caller).

    Returns:
        Up to ``k`` distinct items, score descending, ties by item_id.
    """
    slot: dict[str, int] = {}  # item_id -> row
    ids: list[str] = []
    first_vector: list[np.ndarray | None] = []
    vector_source: list[str] = []
    reasons: dict[str, list[str]] = {}
    source_col: dict[str, int] = {}
    offer_row: list[int] = []
    offer_col: list[int] = []
    offer_score: list[float] = []
    for c in candidates:
        if c.item_id in exclude or not math.isfinite(c.score):
            continue
        row = slot.get(c.item_id)
        if row is None:
            row = slot[c.item_id] = len(ids)
            ids.append(c.item_id)
            first_vector.append(c.vector)
            vector_source.append(c.source)
        elif c.vector is not None and (first_vector[row] is None or c.source < vector_source[row]):
            first_vector[row] = c.vector
            vector_source[row] = c.source
        offer_row.append(row)
        offer_col.append(source_col.setdefault(c.source, len(source_col)))
        offer_score.append(c.score)
        if c.because:
            r = reasons.setdefault(c.item_id, [])
            r.extend(b for b in c.because if b not in r)
    if not ids:
        return []
    matrix = np.full((len(ids), len(source_col)), -np.inf)
    np.maximum.at(matrix, (np.array(offer_row, dtype=np.intp), np.array(offer_col, dtype=np.intp)),
                  np.array(offer_score, dtype=np.float64))
    matrix[np.isneginf(matrix)] = np.nan
    vectors = [None if v is None else np.asarray(v).reshape(-1) for v in first_vector]
    dim = _common_dim([v for v in vectors if v is not None], recent)
    zero = np.zeros(dim, dtype=np.float32)
    stacked = np.stack([v if v is not None and v.size == dim else zero for v in vectors]).astype(np.float32)
    offers = Offers(item_ids=ids, vectors=stacked, sources=sorted(source_col, key=source_col.__getitem__),
                    scores=matrix, reasons=reasons)
    return rank_offers(offers, recent=recent, k=k, params=params, exposure=exposure)


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
    out = [
        RankedItem(item_id=ids[j], score=score, because=because[pos], source=names[by_name[winner[j]]])
        for pos, (j, score) in enumerate(picks)
    ]
    out.sort(key=lambda r: (-r.score, r.item_id))  # only reorders exact ties
    return out


def _common_dim(vectors: Iterable[np.ndarray], recent: Sequence[tuple[str, np.ndarray | None]]) -> int:
    """The dimension most vectors share (ties: larger); 0 when there are none."""
    counts: dict[int, int] = {}
    for v in vectors:  # already flattened
        counts[v.size] = counts.get(v.size, 0) + 1
    for _, v in recent:
        if v is not None:
            d = int(np.size(v))
            counts[d] = counts.get(d, 0) + 1
    if not counts:
        return 0
    return max(counts, key=lambda d: (counts[d], d))


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

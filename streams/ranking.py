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

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from streams.errors import ConfigError
from streams.learned import LinearRanker, feature_rows

__all__ = [
    "DEFAULT_SOURCE_WEIGHTS",
    "OfferBatch",
    "Offers",
    "RankParams",
    "RankRequest",
    "RankedItem",
    "normalise_rows",
    "rank_batch",
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


class RankRequest(NamedTuple):
    """One user's part of a :func:`rank_batch`.

    Attributes:
        offers: every candidate item once, scored by the generators that offered it.
        recent: the user's recent items as ``(item_id, vector or None)``, newest last; the
            only ids ``because`` may contain.
        exposure: optional ``item_id -> exposure in [0, 1]`` for the exposure penalty.
    """

    offers: Offers
    recent: Sequence[tuple[str, np.ndarray | None]] = ()
    exposure: Mapping[str, float] | None = None
    activity: int = 0  # the user's recent events (a feature of a learned ranker)


def rank_offers(
    offers: Offers,
    *,
    recent: Sequence[tuple[str, np.ndarray | None]],
    k: int,
    params: RankParams,
    exposure: Mapping[str, float] | None = None,
) -> list[RankedItem]:
    """One user's list: :func:`rank_batch` of one."""
    return rank_batch([RankRequest(offers, recent, exposure)], k=k, params=params)[0]


#: Called with (request index, candidate ids, their feature rows, their relevance) for each user.
Questions = Callable[[int, list[str], np.ndarray, np.ndarray], None]


def rank_batch(requests: Sequence[RankRequest], *, k: int, params: RankParams, ranker: LinearRanker | None = None,
               questions: Questions | None = None, stacked: OfferBatch | None = None) -> list[list[RankedItem]]:
    """Blend, diversify and explain the offers of every user of a batch (the module
    docstring's steps 1-5), each list as if its user were ranked alone.

    The users' offers are stacked into one (row x source) matrix, so that normalisation,
    blending, pruning and the MMR steps are a fixed number of numpy calls per batch rather
    than per user; what stays per user is what only reads that user's rows (the candidates'
    similarities, the reasons). A user's list never depends on who else is in the batch:
    every reduction runs within a user's rows, and the similarities are computed per user.

    With a learned ``ranker`` (:mod:`streams.learned`), its click probability over the user's
    best candidate replaces the hand-tuned blend of steps 1-2 as relevance, and the reported
    source is the generator that adds most to it. ``questions``, when given, receives every
    user's candidates with their features (what a learned ranker is trained on).
    ``stacked``, when given, is the offers of the requests that have any, already stacked
    (each such request's ``offers`` a view of it: :meth:`OfferBatch.offers`).

    Returns:
        For each request, up to ``k`` distinct items, score descending, ties by item_id.
    """
    out: list[list[RankedItem]] = [[] for _ in requests]
    live = [b for b, r in enumerate(requests) if r.offers.item_ids]
    if k <= 0 or not live:
        return out
    if stacked is not None and stacked.starts.size != len(live):
        raise ValueError(f"the stacked offers hold {stacked.starts.size} users, {len(live)} requests have offers")
    stack = stacked if stacked is not None else _stack(requests, live)
    relevance, winner, rows = _relevance(stack, requests, live, params, ranker, questions)
    names, seg, starts = stack.names, stack.seg, stack.starts

    # ---- 3. exposure penalty
    if params.exposure_penalty and any(requests[b].exposure for b in live):
        penalty = np.zeros(relevance.size)
        for user, b in enumerate(live):
            exposure = requests[b].exposure
            if exposure:
                lo_row = int(starts[user])
                ids = requests[b].offers.item_ids
                penalty[lo_row:lo_row + len(ids)] = [float(exposure.get(i, 0.0)) for i in ids]
        relevance -= params.exposure_penalty * penalty
    # Only candidates MMR could ever pick go on (exact, see _pickable): at ~60 offers and
    # k = 10 most fall away, and with them most of the similarity and sorting work.
    rows = rows[_pickable(relevance[rows], seg[rows], len(live), k, params.diversity)]
    # Deterministic candidate order per user: relevance desc, then item_id (argmax takes the first).
    row_ids = np.array([stack.ids[r] for r in rows.tolist()])
    rows = rows[np.lexsort((row_ids, -relevance[rows], seg[rows]))]
    counts = np.bincount(seg[rows], minlength=len(live))
    width = int(counts.max())
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    user_of = seg[rows]
    slot = np.arange(rows.size) - first[user_of]

    # ---- 4. MMR over unit vectors (missing vectors are zero rows: similar to nothing),
    # all users at once over a (users x width) grid; a user's empty slots are never picked.
    lam = params.diversity
    rel = np.zeros((len(live), width))  # empty slots stay blocked
    rel[user_of, slot] = relevance[rows]
    blocked = np.ones((len(live), width), dtype=bool)
    blocked[user_of, slot] = False
    unit = normalise_rows(stack.vectors[rows]) if stack.dim else np.zeros((rows.size, 0), dtype=np.float32)
    sims = np.zeros((len(live), width, width))
    if lam > 0.0 and stack.dim:
        for user in range(len(live)):  # per user, so that no user's figures depend on the batch
            mine = unit[first[user]:first[user] + counts[user]]
            n = mine.shape[0]
            np.maximum(mine @ mine.T, 0.0, out=sims[user, :n, :n], casting="unsafe")
    steps = min(k, width)
    everyone = np.arange(len(live))
    picks = np.empty((len(live), steps), dtype=np.intp)
    values_picked = np.empty((len(live), steps))
    max_sim = np.zeros((len(live), width))
    for step in range(steps):
        mmr = (1.0 - lam) * rel - lam * max_sim
        mmr[blocked] = -np.inf
        j = np.argmax(mmr, axis=1)
        picks[:, step] = j
        values_picked[:, step] = mmr[everyone, j]
        blocked[everyone, j] = True
        if lam > 0.0 and stack.dim:
            np.maximum(max_sim, sims[everyone, j], out=max_sim)

    # ---- 5. reasons from the user's recent items
    recent = _recent([requests[b].recent for b in live], stack.dim)
    for user, b in enumerate(live):
        n = min(k, int(counts[user]))
        at = first[user] + picks[user, :n]
        picked_rows = rows[at]
        picked_ids = [stack.ids[r] for r in picked_rows.tolist()]
        recent_ids = recent.ids[user]
        because = _because(picked_ids, unit[at], stack.reasons[user], recent_ids,
                           recent.unit[recent.first[user]:recent.first[user] + len(recent_ids)], params)
        sources = [names[w] for w in winner[picked_rows].tolist()]
        ranked = [  # a trending item is there for the crowd, not for anything the user did: no reason
            RankedItem(item_id=item_id, score=score, because=() if source == "trending" else reasons, source=source)
            for item_id, score, reasons, source in zip(picked_ids, values_picked[user, :n].tolist(), because, sources,
                                                        strict=True)
        ]
        ranked.sort(key=lambda r: (-r.score, r.item_id))  # only reorders exact ties
        out[b] = ranked
    return out


@dataclass(frozen=True, slots=True)
class OfferBatch:
    """The offers of a batch's users, one under the other (each user's rows together, users
    in request order): the form :func:`rank_batch` ranks. A caller that gathers many users'
    offers at once builds it directly, its users' :class:`Offers` being views of it
    (:meth:`offers`), and so spares rank_batch stacking them again."""

    ids: list[str]  # every row's item id
    vectors: np.ndarray  # (rows, dim) float32
    dim: int
    names: list[str]  # the columns: every source any user has, sorted by name
    scores: np.ndarray  # (rows, sources), NaN where a source did not score the row's item
    seg: np.ndarray  # (rows,) the row's user, 0..users-1
    starts: np.ndarray  # (users,) each user's first row; every user has at least one row
    reasons: Sequence[Mapping[str, list[str]]]  # per user: item_id -> the generators' own reasons

    @staticmethod
    def segments(sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``seg`` and ``starts`` for users of these sizes (rows each, every one at least one)."""
        starts = np.zeros(len(sizes), dtype=np.intp)
        starts[1:] = np.cumsum(sizes[:-1])
        return np.repeat(np.arange(len(sizes)), sizes), starts

    def span(self, user: int) -> tuple[int, int]:
        """The user's rows: ``[start, end)``."""
        start = int(self.starts[user])
        return start, int(self.starts[user + 1]) if user + 1 < self.starts.size else len(self.ids)

    def offers(self, user: int) -> Offers:
        """One user's offers, as views of the batch's arrays (every column of the batch;
        one a user's generators did not fill is all NaN, which ranks as no column)."""
        start, end = self.span(user)
        return Offers(item_ids=self.ids[start:end], vectors=self.vectors[start:end], sources=self.names,
                      scores=self.scores[start:end], reasons=self.reasons[user])


def _stack(requests: Sequence[RankRequest], live: Sequence[int]) -> OfferBatch:
    offers = [requests[b].offers for b in live]
    names = sorted({name for o in offers for name in o.sources})
    column = {name: c for c, name in enumerate(names)}
    sizes = [len(o.item_ids) for o in offers]
    seg, starts = OfferBatch.segments(sizes)
    scores = np.full((seg.size, len(names)), np.nan)
    ids: list[str] = []
    for o, start in zip(offers, starts.tolist(), strict=True):
        scores[start:start + len(o.item_ids), [column[name] for name in o.sources]] = o.scores
        ids.extend(o.item_ids)
    # One dimension for the batch (the index's); a user whose offers carry none (or another)
    # gets zero rows: similar to nothing, as without vectors.
    dims = Counter(o.vectors.shape[1] for o in offers if o.vectors.ndim == 2 and o.vectors.size)
    dim = dims.most_common(1)[0][0] if dims else 0
    vectors = np.concatenate([
        o.vectors if o.vectors.ndim == 2 and o.vectors.shape[1] == dim else np.zeros((len(o.item_ids), dim))
        for o in offers]).astype(np.float32, copy=False)
    return OfferBatch(ids=ids, vectors=vectors, dim=dim, names=names, scores=scores, seg=seg, starts=starts,
                      reasons=[o.reasons for o in offers])


def _relevance(stack: OfferBatch, requests: Sequence[RankRequest], live: list[int], params: RankParams,
               ranker: LinearRanker | None, questions: Questions | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-2: every row's relevance, the column of the generator that contributes most to
    it, and the rows any generator scored (the others never go on).

    Each generator's scores are normalised within each user's rows; relevance is then either
    the hand-tuned blend of ``params`` or, with a learned ``ranker``, its click probability
    over the user's best candidate's (MMR's trade-off keeps its scale either way).
    """
    names, raw, seg, starts = stack.names, stack.scores, stack.seg, stack.starts
    finite = np.isfinite(raw)
    values = np.where(finite, raw, np.nan)
    with np.errstate(invalid="ignore"):
        lo = np.minimum(np.fmin.reduceat(values, starts, axis=0), 0.0)  # (users, sources); NaN: no score
        floors = np.array([params.score_floors.get(name, 0.0) for name in names])
        hi = np.maximum(np.fmax.reduceat(values, starts, axis=0), floors)
        spread = hi - lo
        flat = ~(spread > 0)  # a source whose scores are all equal maps to 1
        norm = (values - lo[seg]) / np.where(flat, 1.0, spread)[seg]
    norm = np.where(finite, np.where(flat[seg], 1.0, norm), 0.0)  # 0 where a generator gave no score
    rows = np.flatnonzero(finite.any(axis=1))  # an item no generator scored with a finite number goes
    features = None
    if ranker is not None or questions is not None:
        popularity = (np.nan_to_num(raw[:, names.index("trending")], nan=0.0) if "trending" in names
                      else np.zeros(seg.size))
        features = feature_rows(norm, names, popularity, np.array([requests[b].activity for b in live])[seg])
    if ranker is not None:
        chance = 1.0 / (1.0 + np.exp(-ranker.relevance(features)))
        with np.errstate(invalid="ignore"):
            peak = np.fmax.reduceat(np.where(finite.any(axis=1), chance, np.nan), starts)
        base = chance / np.where(peak > 0, peak, 1.0)[seg]
        weights = np.array([ranker.source_weight(name) for name in names])
        fusion = "sum"
    else:
        weights = np.array([params.source_weights.get(name, params.default_source_weight) for name in names])
        fusion = params.fusion
    matrix = np.where(finite, weights * norm, -np.inf)
    if fusion == "sum":
        # the reported source is the largest contributor; ties: the last name
        winner = len(names) - 1 - np.argmax(matrix[:, ::-1], axis=1)
        if ranker is None:
            base = np.where(finite, matrix, 0.0).sum(axis=1)
    else:
        base = matrix.max(axis=1)
        winner = np.argmax(matrix, axis=1)  # ties: the first name
    relevance = base + params.multi_source_bonus * (finite.sum(axis=1) - 1)
    if questions is not None:
        bounds = np.searchsorted(seg[rows], np.arange(len(live) + 1)).tolist()  # rows ascend, so do users
        for user, b in enumerate(live):
            mine = rows[bounds[user]:bounds[user + 1]]
            questions(b, [stack.ids[r] for r in mine.tolist()], features[mine], relevance[mine])
    return relevance, winner, rows


def _pickable(relevance: np.ndarray, seg: np.ndarray, users: int, k: int, diversity: float) -> np.ndarray:
    """Which rows MMR may pick among each user's top ``k`` (a boolean mask).

    At every step fewer than ``k`` items are picked, so one of the user's ``k`` most relevant
    is still free, and its MMR value is at least ``(1 - lam) * r_k - lam`` (``r_k`` the k-th
    largest relevance; the similarity penalty is at most 1). A candidate whose best MMR value,
    ``(1 - lam) * r``, is below that never wins a step. A margin covers float32 similarities
    a hair above 1.
    """
    counts = np.bincount(seg, minlength=users)
    if diversity >= 1.0 or counts.max() <= k:
        return np.ones(relevance.size, dtype=bool)
    order = np.lexsort((-relevance, seg))  # each user's rows, most relevant first
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    r_k = np.full(users, -np.inf)
    crowded = np.flatnonzero(counts > k)
    r_k[crowded] = relevance[order[first[crowded] + k - 1]]
    bound = r_k - diversity / (1.0 - diversity) * (1.0 + 1e-6) - 1e-9
    return relevance >= bound[seg]


class _Recent(NamedTuple):
    """Every user's distinct recent items, newest first, their unit vectors in one matrix."""

    ids: list[list[str]]  # per user
    first: list[int]  # per user: their first row of ``unit``
    unit: np.ndarray  # (rows, dim) float32; a zero row where an item has no vector


def _recent(recents: Sequence[Sequence[tuple[str, np.ndarray | None]]], dim: int) -> _Recent:
    ids: list[list[str]] = []
    first: list[int] = []
    vectors: list[np.ndarray] = []
    zero = np.zeros(dim, np.float32)
    for recent in recents:
        mine: dict[str, None] = {}
        first.append(len(vectors))
        for rid, v in reversed(recent):  # the newest occurrence of an id wins
            if rid in mine:
                continue
            mine[rid] = None
            arr = None if v is None else np.asarray(v).reshape(-1)
            vectors.append(arr if arr is not None and arr.shape[0] == dim else zero)
        ids.append(list(mine))
    unit = normalise_rows(np.stack(vectors)) if vectors and dim else np.zeros((len(vectors), dim), np.float32)
    return _Recent(ids, first, unit)


def _because(
    picked: list[str],
    picked_mat: np.ndarray,
    reasons: Mapping[str, list[str]],
    recent_ids: list[str],
    recent_unit: np.ndarray,
    params: RankParams,
) -> list[tuple[str, ...]]:
    """Up to ``max_because`` of the user's recent items per picked item: the generators' own
    reasons first, then the most similar recent items (cosine desc, newest first)."""
    m = params.max_because
    if m == 0:
        return [() for _ in picked]
    seen = set(recent_ids)
    ranked: list[list[int]] | None = None
    if recent_ids and picked_mat.shape[1] and picked:
        sims = picked_mat @ recent_unit.T  # (k, recent)
        ranked, row_sims = np.argsort(-sims, axis=-1, kind="stable").tolist(), sims.tolist()  # ties: newest first

    out: list[tuple[str, ...]] = []
    for row, item in enumerate(picked):
        chosen = [r for r in reasons.get(item, ()) if r in seen and r != item][:m]
        if ranked is not None and len(chosen) < m:
            sim_of = row_sims[row]
            for idx in ranked[row]:
                if sim_of[idx] <= 0.0 or len(chosen) >= m:
                    break
                rid = recent_ids[idx]
                if rid != item and rid not in chosen:
                    chosen.append(rid)
        out.append(tuple(chosen))
    return out

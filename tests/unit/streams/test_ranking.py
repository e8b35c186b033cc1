"""Ranking: merge, per-source normalisation, MMR diversity, reasons, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

from streams.ranking import (
    Offers,
    RankedItem,
    RankParams,
    RankRequest,
    normalise_rows,
    rank_batch,
    rank_offers,
)

DIM = 6
E = np.eye(DIM, dtype=np.float32)
fast = settings(max_examples=60, deadline=None)
SOURCES = ["interest", "session", "covisit", "trending", "other"]


# --------------------------------------------------------------------------- list-form ranking
# Ranking over a list of per-offer candidates, the shape these tests state their cases in;
# the product ranks columns (``rank_offers``), and ``test_rank_offers_is_rank_over_the_same_
# evidence_as_columns`` ties the two together.


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


def rank(
    candidates: Sequence[Candidate],
    *,
    recent: Sequence[tuple[str, np.ndarray | None]],
    k: int,
    params: RankParams,
    exposure: Mapping[str, float] | None = None,
    exclude: Container[str] = frozenset(),
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



def test_diversity_one_prefers_a_diverse_item_over_a_near_duplicate():
    near = (E[0] + 0.01 * E[1]).astype(np.float32)
    cands = [
        Candidate("a", 1.0, "interest", E[0]),
        Candidate("a2", 0.99, "interest", near),
        Candidate("b", 0.5, "interest", E[2]),
    ]
    plain = rank(cands, recent=[], k=2, params=RankParams(diversity=0.0))
    diverse = rank(cands, recent=[], k=2, params=RankParams(diversity=1.0))
    assert [r.item_id for r in plain] == ["a", "a2"]
    assert [r.item_id for r in diverse] == ["a", "b"]


def test_duplicates_across_sources_merge_and_keep_the_best():
    cands = [
        Candidate("x", 0.9, "interest", E[0]),
        Candidate("y", 0.3, "interest", E[1]),
        Candidate("x", 0.2, "covisit", None, because=("r2",)),
        Candidate("z", 0.8, "covisit", E[2], because=("r1",)),
    ]
    recent = [("r1", E[2]), ("r2", E[3]), ("r3", E[0])]
    out = rank(cands, recent=recent, k=10, params=RankParams(diversity=0.0))
    assert sorted(r.item_id for r in out) == ["x", "y", "z"]
    by_id = {r.item_id: r for r in out}
    assert by_id["x"].source == "interest"
    assert by_id["x"].because == ("r2", "r3")  # generator reason first, then most similar
    assert by_id["z"].because == ("r1",)  # only positive-cosine recent items support it
    assert by_id["y"].because == ()
    assert out[0].item_id == "x"  # multi-source bonus on top of the best score


def test_scores_are_normalised_per_source():
    cands = [
        Candidate("popular", 10_000.0, "trending", E[0]),
        Candidate("relevant", 0.8, "interest", E[1]),
        Candidate("weak", 0.2, "interest", E[2]),
    ]
    out = rank(cands, recent=[], k=3, params=RankParams(diversity=0.0))
    assert [r.item_id for r in out] == ["relevant", "popular", "weak"]


def test_exposure_penalty_and_exclude():
    cands = [Candidate("a", 1.0, "interest", E[0]), Candidate("b", 0.97, "interest", E[1])]
    params = RankParams(diversity=0.0, exposure_penalty=0.1)
    assert rank(cands, recent=[], k=1, params=params)[0].item_id == "a"
    assert rank(cands, recent=[], k=1, params=params, exposure={"a": 1.0})[0].item_id == "b"
    assert [r.item_id for r in rank(cands, recent=[], k=5, params=params, exclude={"a"})] == ["b"]


def test_ties_are_broken_by_item_id_and_output_is_a_record():
    cands = [Candidate(i, 1.0, "trending") for i in ("c", "a", "b")]
    out = rank(cands, recent=[], k=3, params=RankParams())
    assert [r.item_id for r in out] == ["a", "b", "c"]
    record = {"item_id": "a", "score": out[0].score, "because": [], "source": "trending"}
    assert out[0].to_record() == record
    assert rank([], recent=[], k=3, params=RankParams()) == []
    assert rank(cands, recent=[], k=0, params=RankParams()) == []


def test_missing_and_mismatched_vectors_are_tolerated():
    cands = [
        Candidate("a", 1.0, "interest", E[0]),
        Candidate("b", 0.9, "interest", None),
        Candidate("c", 0.8, "interest", np.ones(3, np.float32)),  # wrong dimension
        Candidate("d", float("nan"), "interest", E[1]),  # dropped
    ]
    out = rank(cands, recent=[("r", E[0]), ("s", None)], k=5, params=RankParams())
    assert sorted(r.item_id for r in out) == ["a", "b", "c"]
    assert {r.item_id: r.because for r in out}["a"] == ("r",)


candidates_st = st.lists(
    st.builds(
        lambda i, s, src, v: Candidate(f"i{i}", s, src, None if v is None else np.array(v, np.float32)),
        st.integers(0, 25),
        st.floats(-5, 5, allow_nan=False),
        st.sampled_from(SOURCES),
        st.none() | st.lists(st.floats(-1, 1, allow_nan=False), min_size=DIM, max_size=DIM),
    ),
    max_size=40,
)
recent_st = st.lists(
    st.tuples(
        st.integers(0, 40).map(lambda n: f"r{n}"),
        st.none() | st.lists(st.floats(-1, 1, allow_nan=False), min_size=DIM, max_size=DIM).map(
            lambda v: np.array(v, np.float32)
        ),
    ),
    max_size=10,
)


@fast
@given(candidates_st, recent_st, st.integers(1, 15), st.floats(0, 1))
def test_rank_properties(cands, recent, k, diversity):
    params = RankParams(diversity=diversity)
    out = rank(cands, recent=recent, k=k, params=params)
    ids = [r.item_id for r in out]
    assert len(ids) == len(set(ids)) == min(k, len({c.item_id for c in cands}))
    keys = [(-r.score, r.item_id) for r in out]
    assert keys == sorted(keys)
    recent_ids = {rid for rid, _ in recent}
    for r in out:
        assert set(r.because) <= recent_ids and len(r.because) <= params.max_because
        assert isinstance(r, RankedItem) and np.isfinite(r.score)
    assert rank(cands, recent=recent, k=k, params=params) == out


@fast
@given(candidates_st, st.randoms(use_true_random=False))
def test_rank_ignores_input_order_for_distinct_item_source_pairs(cands, rnd):
    unique = list({(c.item_id, c.source): c for c in cands}.values())
    shuffled = unique[:]
    rnd.shuffle(shuffled)
    params = RankParams()
    assert rank(shuffled, recent=[], k=10, params=params) == rank(unique, recent=[], k=10, params=params)


def test_helpers():
    m = np.array([[3.0, 4.0], [0.0, 0.0], [np.inf, 1.0]], dtype=np.float32)
    before = m.copy()
    n = normalise_rows(m)
    np.testing.assert_allclose(n, [[0.6, 0.8], [0.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(m, before)
    top = cosine_top(np.array([1.0, 0.0]), np.array([[0.0, 1.0], [2.0, 0.0], [1.0, 0.0]]), 2)
    assert [i for i, _ in top] == [1, 2] and top[0][1] == pytest.approx(1.0)
    assert cosine_top(np.array([1.0]), np.zeros((0, 1)), 3) == []


def test_a_score_floor_keeps_thin_evidence_thin():
    cands = [Candidate("once", 1.0, "trending", E[0]), Candidate("match", 0.6, "interest", E[1])]
    weights = {"interest": 0.1, "trending": 0.4}
    plain = RankParams(diversity=0.0, source_weights=weights)
    floored = RankParams(diversity=0.0, source_weights=weights, score_floors={"trending": 5.0})
    assert rank(cands, recent=[], k=1, params=plain)[0].item_id == "once"
    assert rank(cands, recent=[], k=1, params=floored)[0].item_id == "match"
    # evidence at or above the floor is full strength again
    strong = [Candidate("crowd", 50.0, "trending", E[0]), cands[1]]
    assert rank(strong, recent=[], k=1, params=floored)[0].item_id == "crowd"


def test_rank_offers_is_rank_over_the_same_evidence_as_columns():
    """Generators hand the ranker a score matrix (NaN: not scored); rank() over a list agrees."""
    nan = float("nan")
    offers = Offers(
        item_ids=["x", "y", "z"],
        vectors=np.stack([E[0], E[1], E[2]]),
        sources=["interest", "covisit", "trending"],
        scores=np.array([[0.9, 0.2, nan], [0.3, nan, 4.0], [nan, 0.8, 1.0]]),
        reasons={"x": ["r2"], "z": ["r1"]},
    )
    cands = [
        Candidate("x", 0.9, "interest", E[0]),
        Candidate("y", 0.3, "interest", E[1]),
        Candidate("x", 0.2, "covisit", E[0], because=("r2",)),
        Candidate("z", 0.8, "covisit", E[2], because=("r1",)),
        Candidate("y", 4.0, "trending", E[1]),
        Candidate("z", 1.0, "trending", E[2]),
    ]
    recent = [("r1", E[2]), ("r2", E[3])]
    for params in (RankParams(diversity=0.0), RankParams(diversity=0.5, fusion="sum")):
        assert rank_offers(offers, recent=recent, k=3, params=params) == rank(cands, recent=recent, k=3,
                                                                              params=params)
    assert offers.by_source("covisit") == [("x", 0.2), ("z", 0.8)]
    assert offers.by_source("session") == []


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 80), k=st.integers(1, 15), diversity=st.sampled_from([0.0, 0.1, 0.3, 0.7, 0.95]),
       seed=st.integers(0, 2**31), sources=st.integers(1, 4), dim=st.sampled_from([0, 4, 16]))
def test_pruning_the_unpickable_changes_no_list(n, k, diversity, seed, sources, dim):
    """rank_offers drops candidates MMR can never pick; the lists are those of full MMR."""
    import streams.ranking as ranking

    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n, sources)) * rng.choice([0.01, 1.0, 10.0])
    scores[rng.random((n, sources)) < 0.4] = np.nan
    scores[rng.random((n, sources)) < 0.05] = 0.5  # ties
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    if dim and n > 2:
        vectors[1] = vectors[0]  # a duplicate: similarity 1
    offers = Offers(item_ids=[f"i{j:03d}" for j in range(n)], vectors=vectors,
                    sources=["interest", "covisit", "trending", "session"][:sources], scores=scores,
                    reasons={})
    recent = [(f"i{j:03d}", vectors[j]) for j in range(min(n, 5))]
    params = RankParams(diversity=diversity, exposure_penalty=0.0, fusion="sum")
    pruned = rank_offers(offers, recent=recent, k=k, params=params)
    original = ranking._pickable
    try:
        ranking._pickable = lambda relevance, *_: np.ones(relevance.size, dtype=bool)
        full = rank_offers(offers, recent=recent, k=k, params=params)
    finally:
        ranking._pickable = original
    # the same items, reasons and sources; scores equal but for float32 rounding (the
    # similarity products run over matrices of other shapes)
    assert [(r.item_id, r.because, r.source) for r in pruned] == [(r.item_id, r.because, r.source) for r in full]
    assert np.allclose([r.score for r in pruned], [r.score for r in full], rtol=0, atol=1e-6)


@settings(max_examples=150, deadline=None)
@given(users=st.integers(1, 6), k=st.integers(1, 12), diversity=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
       fusion=st.sampled_from(["sum", "max"]), seed=st.integers(0, 2**31))
def test_a_users_list_does_not_depend_on_the_batch(users, k, diversity, fusion, seed):
    """rank_batch stacks every user's offers; each list is the one ranked alone, in any company
    (users with other sources, other sizes, exposure, no offers at all)."""
    rng = np.random.default_rng(seed)
    requests = []
    for u in range(users):
        n = int(rng.integers(0, 40))
        names = list(rng.permutation(SOURCES)[: int(rng.integers(1, len(SOURCES) + 1))])
        scores = rng.standard_normal((n, len(names))) * rng.choice([0.01, 1.0, 10.0])
        scores[rng.random((n, len(names))) < 0.4] = np.nan
        scores[rng.random((n, len(names))) < 0.05] = 0.25  # ties
        vectors = rng.standard_normal((n, DIM)).astype(np.float32)
        ids = [f"u{u}i{j:02d}" for j in rng.permutation(n)]
        recent = [(ids[j], vectors[j]) for j in range(min(n, 3))]
        exposure = {i: float(rng.random()) for i in ids[::2]} if u % 2 else None
        requests.append(RankRequest(Offers(item_ids=ids, vectors=vectors, sources=names, scores=scores,
                                           reasons={ids[0]: [ids[1]]} if n > 1 else {}), recent, exposure))
    params = RankParams(diversity=diversity, fusion=fusion)
    together = rank_batch(requests, k=k, params=params)
    alone = [rank_batch([r], k=k, params=params)[0] for r in requests]
    assert together == alone
    for request, ranked in zip(requests, together, strict=True):
        assert len(ranked) == min(k, int(np.isfinite(request.offers.scores).any(axis=1).sum()))

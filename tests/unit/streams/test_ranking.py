"""Ranking: merge, per-source normalisation, MMR diversity, reasons, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ranking import (
    Candidate,
    Offers,
    RankedItem,
    RankParams,
    cosine_top,
    normalise_rows,
    rank,
    rank_offers,
)

DIM = 6
E = np.eye(DIM, dtype=np.float32)
fast = settings(max_examples=60, deadline=None)
SOURCES = ["interest", "session", "covisit", "trending", "other"]


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

"""Streaming co-visitation: symmetry, decay, windows, bounds, candidates."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.covisit import CoScores, CovisitCounts, CovisitParams, lookup_batch

T0 = 1_700_000_000.0
H = 3_600.0
fast = settings(max_examples=60, deadline=None)


def lookup(scores: CoScores, item_ids: list[str]) -> list[tuple[float, str] | None]:
    """``(score, because)`` per item, None where the scores hold none."""
    values, because = scores.lookup(item_ids)
    return [None if b is None else (float(v), b) for v, b in zip(values.tolist(), because, strict=True)]


def score(counts: CovisitCounts, a: str, b: str, now_s: float) -> float:
    return dict(counts.neighbours(a, now_s, 10_000)).get(b, 0.0)


def feed(counts: CovisitCounts, sessions) -> None:
    """sessions: {user: [(item, ts_s), ...]} replayed user by user, in time order."""
    for events in sessions:
        history: list[tuple[str, float]] = []
        for item_id, ts_s in events:
            counts.observe(history, item_id, ts_s)
            history.append((item_id, ts_s))


sessions_st = st.lists(
    st.lists(
        st.tuples(st.sampled_from([f"i{n}" for n in range(12)]), st.floats(T0, T0 + 2 * H)),
        max_size=12,
    ).map(lambda evs: sorted(evs, key=lambda e: e[1])),
    max_size=6,
)


@fast
@given(sessions_st)
def test_counts_are_symmetric_without_pruning(sessions):
    counts = CovisitCounts(CovisitParams(half_life_s=H, max_neighbours=1000))
    feed(counts, sessions)
    now = T0 + 3 * H
    items = [f"i{n}" for n in range(12)]
    for a in items:
        for b in items:
            assert score(counts, a, b, now) == pytest.approx(score(counts, b, a, now), rel=1e-12)
        assert score(counts, a, a, now) == 0.0  # no self-pairs


@fast
@given(sessions_st, st.integers(1, 4))
def test_rows_stay_bounded(sessions, m):
    counts = CovisitCounts(CovisitParams(half_life_s=H, max_neighbours=m))
    feed(counts, sessions)
    for row in counts._rows.values():
        assert len(row) <= 2 * m
    assert all(len(counts.neighbours(f"i{n}", T0, m)) <= m for n in range(12))


def test_counts_decay_with_the_half_life():
    counts = CovisitCounts(CovisitParams(half_life_s=H))
    counts.observe([("a", T0)], "b", T0 + 1)
    s1 = score(counts, "a", "b", T0 + 1)
    assert s1 == pytest.approx(1.0)
    assert score(counts, "a", "b", T0 + 1 + H) == pytest.approx(0.5)
    assert score(counts, "b", "a", T0 + 1 + 3 * H) == pytest.approx(0.125)


def test_closer_previous_items_count_more_and_windows_apply():
    counts = CovisitCounts(CovisitParams(half_life_s=H, window_items=2, window_s=600))
    prev = [("far_in_time", T0 - 1000), ("third", T0 - 30), ("second", T0 - 20), ("first", T0 - 10)]
    counts.observe(prev, "new", T0)
    n = dict(counts.neighbours("new", T0, 10))
    assert n["first"] == pytest.approx(1.0) and n["second"] == pytest.approx(0.5)
    assert "third" not in n  # beyond window_items
    assert "far_in_time" not in n



def test_items_of_the_same_moment_share_a_rank():
    """Ranks count moments: items stamped alike pair as strongly with a new item, whatever
    their order in the log, and the moment before them comes second, not third."""
    counts = CovisitCounts(CovisitParams(half_life_s=H, window_items=3))
    prev = [("outside", T0 - 30), ("before", T0 - 20), ("same1", T0 - 10), ("same2", T0 - 10)]
    counts.observe(prev, "new", T0)
    n = dict(counts.neighbours("new", T0, 10))
    assert n == {"same1": pytest.approx(1.0), "same2": pytest.approx(1.0), "before": pytest.approx(0.5)}


def test_recent_items_of_the_same_moment_weigh_alike_in_candidates():
    counts = CovisitCounts(CovisitParams(half_life_s=H))
    for seed, target in (("old", "x"), ("now1", "y"), ("now2", "z")):
        counts.observe([(seed, T0)], target, T0 + 1)
    scores = counts.scores([("old", T0 + 5), ("now1", T0 + 9), ("now2", T0 + 9)], T0 + 10)
    (y, _), (z, _), (x, _) = lookup(scores, ["y", "z", "x"])
    assert y == pytest.approx(z) and x == pytest.approx(y / 2)

def test_repeated_and_self_items_pair_once():
    counts = CovisitCounts(CovisitParams(half_life_s=H))
    counts.observe([("a", T0), ("new", T0), ("a", T0)], "new", T0)
    assert counts.neighbours("new", T0, 10) == [("a", pytest.approx(1.0))]


def test_candidates_aggregate_recent_items_and_explain():
    counts = CovisitCounts(CovisitParams(half_life_s=H))
    feed(
        counts,
        [
            [("a", T0), ("x", T0 + 1)],
            [("a", T0), ("x", T0 + 1)],
            [("b", T0), ("y", T0 + 1)],
            [("a", T0), ("z", T0 + 1)],
        ],
    )
    recent = [("b", T0 + 5), ("a", T0 + 10)]  # newest last
    cands = counts.candidates(recent, T0 + 20, 10, exclude={"a", "b"})
    ids = [c for c, _, _ in cands]
    assert ids[0] == "x"
    assert set(ids) == {"x", "y", "z"}
    because = {c: r for c, _, r in cands}
    assert because == {"x": "a", "y": "b", "z": "a"}
    scores = [s for _, s, _ in cands]
    assert scores == sorted(scores, reverse=True)
    assert counts.candidates(recent, T0 + 20, 10, exclude={"x", "y", "z", "a", "b"}) == []
    assert counts.candidates([], T0, 10) == []
    assert len(counts.candidates(recent, T0 + 20, 1)) == 1


@fast
@given(sessions_st, st.lists(st.sampled_from([f"i{n}" for n in range(12)]), max_size=5))
def test_candidates_are_deterministic_excluded_and_explained(sessions, exclude):
    a, b = CovisitCounts(), CovisitCounts()
    feed(a, sessions)
    feed(b, sessions)
    recent = [(f"i{n}", T0 + n) for n in (0, 3, 5)]
    ca = a.candidates(recent, T0 + H, 8, exclude=set(exclude))
    assert ca == b.candidates(recent, T0 + H, 8, exclude=set(exclude))
    assert len({c for c, _, _ in ca}) == len(ca) <= 8
    for c, s, because in ca:
        assert c not in exclude and s > 0 and because in {"i0", "i3", "i5"}
    keys = [(-s, c) for c, s, _ in ca]
    assert keys == sorted(keys)


def test_remove_forgets_an_item_everywhere():
    counts = CovisitCounts()
    counts.observe([("a", T0), ("b", T0)], "c", T0)
    counts.remove("c")
    assert counts.neighbours("c", T0, 10) == []
    assert "c" not in dict(counts.neighbours("a", T0, 10))
    assert len(counts) == 0


def test_uniform_pairs_count_every_previous_item_alike():
    counts = CovisitCounts(CovisitParams(half_life_s=H, pair_weight="uniform", window_items=3))
    counts.observe([("c", T0), ("b", T0), ("a", T0)], "new", T0)
    assert dict(counts.neighbours("new", T0, 10)) == {"a": pytest.approx(1.0), "b": pytest.approx(1.0),
                                                      "c": pytest.approx(1.0)}


def test_cosine_prefers_a_specific_neighbour_to_a_blockbuster():
    """``hit`` co-occurs with ``a`` twice but is clicked by everyone; ``niche`` only with ``a``.

    Row shares (P(c | a)) favour the blockbuster; cosine divides by sqrt(n_c) and does not.
    """
    def fed(normalise: str) -> CovisitCounts:
        counts = CovisitCounts(CovisitParams(half_life_s=1e9, pair_weight="uniform",
                                             normalise=normalise))
        feed(counts, [[("a", T0), ("hit", T0 + 1)], [("a", T0), ("hit", T0 + 1)],
                      [("a", T0), ("niche", T0 + 1)]] + [[("hit", T0 + n)] for n in range(20)])
        return counts

    assert [c for c, _, _ in fed("row").candidates([("a", T0)], T0 + 30, 2)] == ["hit", "niche"]
    assert [c for c, _, _ in fed("cosine").candidates([("a", T0)], T0 + 30, 2)] == ["niche", "hit"]


@fast
@given(sessions_st, st.sampled_from(["row", "cosine"]))
def test_scores_hold_every_candidate_and_candidates_are_their_top(sessions, normalise):
    counts = CovisitCounts(CovisitParams(half_life_s=H, normalise=normalise))
    feed(counts, sessions)
    recent = [(f"i{n}", T0 + n) for n in (0, 3, 5)]
    scores = counts.scores(recent, T0 + H)
    top = counts.candidates(recent, T0 + H, 4)
    assert len(top) == min(4, len(scores))
    assert [(s, b) for _, s, b in top] == lookup(scores, [c for c, _, _ in top])
    others = lookup(scores, [f"i{n}" for n in range(12) if f"i{n}" not in {c for c, _, _ in top}])
    assert all(hit[0] <= top[-1][1] for hit in others if hit is not None)


@fast
@given(sessions_st, st.sampled_from(["row", "cosine"]),
       st.lists(st.tuples(st.lists(st.integers(0, 13), max_size=8), st.floats(0, 3 * H)), min_size=1, max_size=5))
def test_a_batch_scores_each_user_as_alone(sessions, normalise, users):
    """Bit for bit: a rebuild batches clicks differently from the worker that served them."""
    counts = CovisitCounts(CovisitParams(half_life_s=H, normalise=normalise))
    feed(counts, sessions)
    requests = [([(f"i{n}", T0 + m) for m, n in enumerate(items)], T0 + later, {"i1"} if len(items) % 2 else set())
                for items, later in users]  # i12, i13: items no one clicked
    batch = counts.scores_batch(requests)
    probe = [f"i{n}" for n in range(14)]
    assert len(batch) == len(requests)
    for together, (recent, now_s, exclude) in zip(batch, requests, strict=True):
        alone = counts.scores(recent, now_s, exclude)
        assert len(together) == len(alone)
        assert together.top(20) == alone.top(20)
        assert lookup(together, probe) == lookup(alone, probe)
    # every user's probes in one search, users interleaved (the last one, given a batch of
    # several, without scores), against each user's own lookup
    users_scores = [*batch[:-1], None] if len(batch) > 1 else batch
    owners = np.array([u for _ in probe for u in range(len(batch))])
    wanted = [item for item in probe for _ in batch]
    values, because = lookup_batch(users_scores, owners, wanted)
    for j, (u, item) in enumerate(zip(owners.tolist(), wanted, strict=True)):
        own = None if users_scores[u] is None else lookup(users_scores[u], [item])[0]
        assert (None if because[j] is None else (float(values[j]), because[j])) == own


def test_bad_modes_are_config_errors():
    from streams.errors import ConfigError

    with pytest.raises(ConfigError):
        CovisitParams(pair_weight="square")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        CovisitParams(normalise="l1")  # type: ignore[arg-type]


def test_lookup_honours_exclude_and_unknown_items():
    counts = CovisitCounts(CovisitParams(half_life_s=H))
    feed(counts, [[("a", T0), ("x", T0 + 1)], [("a", T0), ("y", T0 + 1)]])
    recent = [("a", T0 + 5)]
    assert lookup(counts.scores(recent, T0 + 9), ["x", "never-seen", "a"])[1:] == [None, None]
    assert lookup(counts.scores(recent, T0 + 9, exclude={"x"}), ["x", "y"])[0] is None
    assert lookup(counts.scores([("never-seen", T0)], T0 + 9), ["x"]) == [None]


@given(st.lists(st.integers(1, 4), min_size=30, max_size=80), st.integers(0, 40), st.integers(1, 6))
def test_top_over_many_neighbours_is_the_best_not_excluded_ties_by_id(strengths, excluded, n):
    """Rows longer than top's first window, ties at the cut and the best excluded: the same
    list as ranking every neighbour by (score desc, id)."""
    counts = CovisitCounts(CovisitParams(window_items=1, max_neighbours=1_000))
    t = T0  # one time for every pair: equal strengths are exact ties
    for k, times in enumerate(strengths):
        for _ in range(times):
            counts.observe([("a", t)], f"n{k:02d}", t)
    by_strength = sorted(range(len(strengths)), key=lambda k: -strengths[k])
    exclude = {f"n{k:02d}" for k in by_strength[:excluded]}
    scores = counts.scores([("a", t)], t, exclude)
    ids = [f"n{k:02d}" for k in range(len(strengths))]
    everything = sorted(((hit[0], i) for i, hit in zip(ids, lookup(scores, ids), strict=True) if hit is not None),
                        key=lambda pair: (-pair[0], pair[1]))
    assert [(i, s) for i, s, _ in scores.top(n)] == [(i, s) for s, i in everything[:n]]


@fast
@given(sessions_st, st.integers(1, 3), st.sampled_from(["row", "cosine"]))
def test_state_round_trips_every_count(sessions, m, normalise):
    import msgspec

    from streams.covisit import CovisitState

    params = CovisitParams(max_neighbours=m, normalise=normalise)  # small rows: pruning happens
    original = CovisitCounts(params)
    feed(original, sessions)
    original.remove("i3")
    wire = msgspec.msgpack.encode(original.state())
    copy = CovisitCounts.from_state(msgspec.msgpack.decode(wire, type=CovisitState), params)
    assert len(copy) == len(original)
    for n in range(12):
        assert copy.neighbours(f"i{n}", T0 + H, 100) == original.neighbours(f"i{n}", T0 + H, 100)
    recent = [(f"i{n}", T0 + n) for n in (0, 3, 5, 7)]
    assert copy.candidates(recent, T0 + H, 8) == original.candidates(recent, T0 + H, 8)
    # and it keeps counting the same way
    feed(original, sessions[:1])
    feed(copy, sessions[:1])
    assert copy.state() == original.state()


def test_an_inconsistent_or_foreign_state_is_refused():
    import msgspec

    counts = CovisitCounts()
    feed(counts, [[("a", T0), ("b", T0 + 1)]])
    state = counts.state()
    for bad in (msgspec.structs.replace(state, names=state.names[:1]),  # rows name unknown items
                msgspec.structs.replace(state, rows=[0, 0], lengths=[1, 0])):  # a repeated, empty row
        with pytest.raises(ValueError, match="inconsistent"):
            CovisitCounts.from_state(bad)
    # log-counts made at one half-life read as other counts at another
    with pytest.raises(ValueError, match="half-life"):
        CovisitCounts.from_state(state, CovisitParams(half_life_s=2 * counts.params.half_life_s))


def test_keep_only_forgets_the_absent_items():
    counts = CovisitCounts()
    feed(counts, [[("a", T0), ("b", T0 + 1), ("c", T0 + 2)]])
    assert counts.keep_only({"a", "b"}) == 1
    assert counts.neighbours("c", T0 + 3, 10) == [] and "c" not in dict(counts.neighbours("a", T0 + 3, 10))
    assert counts.keep_only({"a", "b"}) == 0

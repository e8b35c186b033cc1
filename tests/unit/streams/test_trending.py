"""Decayed popularity: order, decay, bounded memory, exact cached top list."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.trending import Trending, TrendingParams, log2_add

T0 = 1_700_000_000.0
H = 86_400.0
fast = settings(max_examples=80, deadline=None)


def test_order_follows_counts():
    t = Trending(TrendingParams(half_life_s=H))
    for item_id, n in (("a", 3), ("b", 2), ("c", 1)):
        for k in range(n):
            t.observe(item_id, T0 + k, 1.0)
    assert [i for i, _ in t.top(T0 + 10, 3)] == ["a", "b", "c"]
    assert [i for i, _ in t.top(T0 + 10, 3, exclude={"a"})] == ["b", "c"]
    assert t.top(T0, 0) == []


def test_recent_events_beat_old_ones_and_scores_decay():
    t = Trending(TrendingParams(half_life_s=H))
    for _ in range(3):
        t.observe("old", T0, 1.0)
    t.observe("new", T0 + 2 * H, 1.0)  # old is worth 3 / 4 = 0.75 by now
    assert [i for i, _ in t.top(T0 + 2 * H, 2)] == ["new", "old"]
    assert t.score("old", T0 + 2 * H) == pytest.approx(0.75)
    assert t.score("new", T0 + 3 * H) == pytest.approx(0.5)
    assert t.score("missing", T0) == 0.0


def test_dislikes_and_bad_values_are_ignored():
    t = Trending()
    t.observe("a", T0, -1.0)
    t.observe("b", T0, 0.0)
    t.observe("c", math.nan, 1.0)
    assert len(t) == 0


def test_log2_add():
    assert log2_add(3.0, 3.0) == pytest.approx(4.0)
    assert log2_add(-math.inf, 2.0) == 2.0
    assert log2_add(5000.0, 5000.0) == pytest.approx(5001.0)


item_st = st.integers(0, 30).map(lambda n: f"i{n:02d}")
events_st = st.lists(
    st.tuples(item_st, st.floats(T0, T0 + 5 * H), st.floats(0.1, 5.0)),
    max_size=120,
)


@fast
@given(events_st, st.integers(1, 6), st.lists(item_st, max_size=10), st.integers(1, 12))
def test_top_is_exact_and_memory_bounded(events, cache_top, exclude, n):
    params = TrendingParams(half_life_s=H, max_items=12, cache_top=cache_top)
    t = Trending(params)
    for item_id, ts_s, w in events:
        t.observe(item_id, ts_s, w)
        assert len(t) <= params.max_items + params.max_items // 4 + 1
    now = T0 + 6 * H
    got = t.top(now, n, exclude=set(exclude))
    # Reference: brute force over everything still remembered.
    ref = sorted((-log, i) for i, log in t._log.items() if i not in exclude)[:n]
    assert [i for i, _ in got] == [i for _, i in ref]
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)


@fast
@given(events_st)
def test_scores_match_the_decay_formula_without_pruning(events):
    t = Trending(TrendingParams(half_life_s=H, max_items=1000, cache_top=4))
    exact: dict[str, float] = {}
    now = T0 + 6 * H
    for item_id, ts_s, w in events:
        t.observe(item_id, ts_s, w)
        exact[item_id] = exact.get(item_id, 0.0) + w * 2 ** (-(now - ts_s) / H)
    for item_id, s in exact.items():
        assert t.score(item_id, now) == pytest.approx(s, rel=1e-9)


def test_remove_keeps_the_top_list_exact():
    t = Trending(TrendingParams(half_life_s=H, cache_top=2))
    for i, n in enumerate((5, 4, 3, 2)):
        for _ in range(n):
            t.observe(f"i{i}", T0, 1.0)
    t.remove("i0")
    assert [i for i, _ in t.top(T0, 3)] == ["i1", "i2", "i3"]
    assert "i0" not in t

"""Baselines: popularity, co-visitation, EASE and text under the eval's model interface."""

from __future__ import annotations

import numpy as np

from streams.baselines import CovisitModel, EaseModel, PopularityModel, TextModel
from streams.records import Click


def _feed(model, clicks):  # noqa: ANN001
    for c in clicks:
        model.observe(c)


CLICKS = [
    Click(user_id="u1", item_id="a", ts_s=0.0),
    Click(user_id="u1", item_id="b", ts_s=10.0),
    Click(user_id="u2", item_id="a", ts_s=20.0),
    Click(user_id="u2", item_id="b", ts_s=30.0),
    Click(user_id="u3", item_id="c", ts_s=40.0),
    Click(user_id="u3", item_id="a", ts_s=50.0),
    Click(user_id="u4", item_id="d", ts_s=60.0),
]


def test_popularity_ranks_by_count_skips_seen_and_unknown_items():
    m = PopularityModel()
    m.add_items(["a", "b", "c"])  # "d" has no item record: never recommended
    _feed(m, CLICKS)
    assert m.recommend("new", 100.0, 10, set()) == ["a", "b", "c"]
    assert m.recommend("u1", 100.0, 10, {"a"}) == ["b", "c"]
    assert m.recommend("new", 100.0, 1, set()) == ["a"]
    m.remove_items(["a"])
    assert m.recommend("new", 100.0, 10, set()) == ["b", "c"]


def test_covisit_uses_the_users_recent_items_then_fills_with_popularity():
    m = CovisitModel()
    m.add_items(["a", "b", "c", "d", "e"])
    _feed(m, CLICKS)
    m.observe(Click(user_id="u5", item_id="c", ts_s=70.0))
    recs = m.recommend("u5", 80.0, 4, {"c"})
    assert recs[0] == "a"  # co-visited with c (u3)
    assert recs == ["a", "b", "d"]  # then popularity; "e" was never clicked, "c" is seen
    assert m.recommend("nobody", 80.0, 2, set()) == ["a", "c"]  # popularity only (c: newer clicks)


def test_baselines_are_deterministic():
    def run(model_cls):  # noqa: ANN001
        m = model_cls()
        m.add_items(["a", "b", "c", "d"])
        out = []
        for c in CLICKS:
            out.append(m.recommend(c.user_id, c.ts_s, 3, set()))
            m.observe(c)
        return out

    for cls in (PopularityModel, CovisitModel, EaseModel):
        assert run(cls) == run(cls)


def test_ease_learns_only_at_refits_and_then_follows_the_users_own_clicks():
    m = EaseModel(lam=1.0, refit_every=6)
    m.add_items(["a", "b", "c", "d"])
    _feed(m, CLICKS[:5])  # no fit yet: popularity only
    assert m._b is None and m.recommend("u3", 45.0, 2, {"c"}) == ["b", "a"]  # b clicked more recently
    m.observe(CLICKS[5])  # the 6th click: fit on the clicks so far
    assert m._b is not None and set(m._column_ids) == {"a", "b", "c"}
    # a and b were clicked together twice: a user with "a" gets "b" first
    m.observe(Click(user_id="u9", item_id="a", ts_s=70.0))
    assert m.recommend("u9", 71.0, 1, {"a"}) == ["b"]
    # the closed form: B = -P / diag(P), zero diagonal, with P = (X^T X + lambda I)^-1
    x = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1]], dtype=np.float64)  # u1, u2, u3 over a, b, c
    p = np.linalg.inv(x.T @ x + np.eye(3))
    b = p / -np.diag(p)
    np.fill_diagonal(b, 0.0)
    order = [m._column_ids.index(i) for i in ("a", "b", "c")]
    np.testing.assert_allclose(m._b[np.ix_(order, order)], b, rtol=1e-5, atol=1e-6)


def test_ease_never_recommends_seen_or_unknown_items():
    m = EaseModel(lam=1.0, refit_every=1)
    m.add_items(["a", "b", "c"])  # "d" has no item record
    _feed(m, CLICKS)
    m.observe(Click(user_id="u4", item_id="a", ts_s=61.0))
    recs = m.recommend("u4", 70.0, 10, {"a", "d"})
    assert "a" not in recs and "d" not in recs and len(recs) == len(set(recs))


def _unit(x: float, y: float) -> np.ndarray:
    v = np.array([x, y], dtype=np.float32)
    return v / np.linalg.norm(v)


#: Two themes: a, b, e near the x axis (e nearest to a), c, d near the y axis.
TEXT_VECTORS = {"a": _unit(1, 0), "b": _unit(1, 0.3), "e": _unit(1, 0.1), "c": _unit(0, 1), "d": _unit(0.2, 1)}


def test_text_ranks_known_items_by_likeness_to_the_users_last_items():
    m = TextModel(TEXT_VECTORS, window=1)
    m.add_items(["a", "b", "c", "e"])  # "d" has no item record yet: never recommended
    assert m.recommend("u1", 0.0, 3, set()) == []  # nothing clicked: nothing to go on
    m.observe(Click(user_id="u1", item_id="a", ts_s=0.0))
    assert m.recommend("u1", 1.0, 3, {"a"}) == ["e", "b", "c"]
    m.observe(Click(user_id="u1", item_id="c", ts_s=2.0))  # window 1: only c counts now
    assert m.recommend("u1", 3.0, 2, {"a", "c"}) == ["b", "e"]
    m.add_items(["d"])
    assert m.recommend("u1", 3.0, 1, {"a", "c"}) == ["d"]


def test_text_profile_is_the_mean_of_the_window_and_ignores_dislikes():
    m = TextModel(TEXT_VECTORS, window=2)
    m.add_items(list(TEXT_VECTORS))
    m.observe(Click(user_id="u1", item_id="a", ts_s=0.0))
    m.observe(Click(user_id="u1", item_id="c", ts_s=1.0))
    m.observe(Click(user_id="u1", item_id="e", ts_s=2.0, event="dislike"))  # not a taste
    scores = {i: float(TEXT_VECTORS[i] @ (TEXT_VECTORS["a"] + TEXT_VECTORS["c"])) for i in ("b", "d", "e")}
    expected = sorted(scores, key=lambda i: (-scores[i], i))
    assert m.recommend("u1", 3.0, 3, {"a", "c"}) == expected


def test_text_never_recommends_withdrawn_or_excluded_items():
    m = TextModel(TEXT_VECTORS)
    m.add_items(list(TEXT_VECTORS))
    m.observe(Click(user_id="u1", item_id="a", ts_s=0.0))
    m.remove_items(["e"])
    recs = m.recommend("u1", 1.0, 10, {"a"})
    assert sorted(recs) == ["b", "c", "d"] and recs[0] == "b"
    m.remove_items(["a"])  # the user's own item withdrawn: nothing left to go on
    assert m.recommend("u1", 1.0, 10, set()) == []

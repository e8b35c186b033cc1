"""Baselines: popularity and co-visitation under the eval's model interface."""

from __future__ import annotations

from streams.baselines import CovisitModel, PopularityModel
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

    for cls in (PopularityModel, CovisitModel):
        assert run(cls) == run(cls)

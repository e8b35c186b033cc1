"""recstream eval: metrics, the prequential order, and the report's shape."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streams.datasets import Dataset
from streams.eval import gini, item_timeline, rank_metrics, run_eval, summarise
from streams.records import Click, ItemEvent


def _unit(rng: np.random.Generator, dim: int = 8) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _tiny(n_items: int = 12, n_users: int = 5, n_clicks: int = 60, seed: int = 0) -> tuple[Dataset, dict]:
    rng = np.random.default_rng(seed)
    items = [ItemEvent(item_id=f"i{j}", title=f"item {j}") for j in range(n_items)]
    clicks = []
    for e in range(n_clicks):
        u = f"u{e % n_users}"
        clicks.append(Click(user_id=u, item_id=f"i{(e * 7 + e // n_users) % n_items}", ts_s=1000.0 + 60 * e))
    vectors = {it.item_id: _unit(rng) for it in items}
    return Dataset(name="tiny", items=items, clicks=clicks), vectors


# ----------------------------------------------------------------------------- metrics


def test_rank_metrics_exact_values():
    recs = ["a", "b", "c", "d"]
    assert rank_metrics(recs, "a", 10) == (1.0, 1.0, 1.0)
    hit, ndcg, rr = rank_metrics(recs, "c", 10)
    assert (hit, rr) == (1.0, 1 / 3)
    assert ndcg == pytest.approx(1 / math.log2(4))  # rank 3 -> 1/log2(4) = 0.5
    assert rank_metrics(recs, "d", 3) == (0.0, 0.0, 0.0)  # beyond the cut-off: 0, also for MRR
    assert rank_metrics(recs, "zz", 10) == (0.0, 0.0, 0.0)
    assert rank_metrics([], "a", 10) == (0.0, 0.0, 0.0)


def test_gini_exact_values():
    assert gini([5, 5, 5, 5]) == 0.0
    assert gini([0, 0, 0, 0]) == 0.0
    assert gini([]) == 0.0
    assert gini([0, 0, 0, 8]) == pytest.approx(0.75)  # one of n gets all: 1 - 1/n
    assert gini([1, 2, 3]) == pytest.approx(2 / 9)  # sum|xi-xj| / (2 n^2 mean) = 8 / 36


def test_summarise_coverage_and_means():
    hits = np.array([1, 0, 1, 0], dtype=np.float32)
    ndcgs = np.array([1.0, 0.0, 0.5, 0.0], dtype=np.float32)
    rrs = np.array([1.0, 0.0, 1 / 3, 0.0], dtype=np.float32)
    out = summarise(hits, ndcgs, rrs, {"a": 3, "b": 1, "ghost": 9}, ["a", "b", "c", "d"], k=10)
    assert out["hr@10"] == pytest.approx(0.5)
    assert out["ndcg@10"] == pytest.approx(0.375)
    assert out["mrr"] == pytest.approx(1 / 3)
    assert out["coverage"] == pytest.approx(0.5)  # a and b of 4; non-catalogue ids ignored
    assert out["gini"] == pytest.approx(gini([3, 1, 0, 0]))


def test_item_timeline_orders_by_created_at_with_missing_first():
    items = [ItemEvent(item_id="late", created_at_s=50.0), ItemEvent(item_id="start"),
             ItemEvent(item_id="early", created_at_s=10.0)]
    assert [a.item.item_id for a in item_timeline(items)] == ["start", "early", "late"]


# ----------------------------------------------------------------------------- protocol


class _Oracle:
    """Cheats if it can: recommends every click it has been shown, newest first. Were the
    click to predict revealed before the prediction, every event would be a hit."""

    name = "oracle"

    def __init__(self) -> None:
        self.observed: list[Click] = []
        self.asked = 0

    def add_items(self, item_ids):  # noqa: ANN001
        pass

    def remove_items(self, item_ids):  # noqa: ANN001
        pass

    def recommend(self, user_id, now_s, k, exclude):  # noqa: ANN001
        self.asked += 1
        # Everything it has observed, newest first: if the current click were already
        # revealed, it would be first here and every event would be a hit.
        return [c.item_id for c in reversed(self.observed) if c.item_id not in exclude][:k]

    def observe(self, click):  # noqa: ANN001
        assert len(self.observed) == self.asked - 1, "observe must follow exactly one recommend"
        self.observed.append(click)


def test_a_model_never_sees_the_click_it_must_predict():
    # Every click is a fresh user's on a fresh item: with no history to match and no crowd
    # behind the item, only a model that saw the click could predict it.
    items = [ItemEvent(item_id=f"i{j}") for j in range(30)]
    clicks = [Click(user_id=f"u{j}", item_id=f"i{j}", ts_s=float(j)) for j in range(30)]
    ds = Dataset(name="fresh", items=items, clicks=clicks)
    rng = np.random.default_rng(1)
    oracle = _Oracle()
    out = run_eval(ds, {it.item_id: _unit(rng) for it in items}, k=5, progress=False,
                   extra_models=[lambda: oracle])
    assert out["events"] == 30
    assert oracle.asked == 30 and len(oracle.observed) == 30
    for name, metrics in out["models"].items():
        assert metrics["hr@5"] == 0.0, name  # nobody can hit: nobody saw the future


def test_seen_items_are_excluded_and_the_list_is_capped_at_k():
    ds, vectors = _tiny()
    seen_by_user: dict[str, set[str]] = {}
    violations = []

    class _Spy(_Oracle):
        name = "spy"

        def recommend(self, user_id, now_s, k, exclude):  # noqa: ANN001
            expected = seen_by_user.setdefault(user_id, set())
            if set(exclude) != expected:
                violations.append(user_id)
            return super().recommend(user_id, now_s, k, exclude)

        def observe(self, click):  # noqa: ANN001
            super().observe(click)
            seen_by_user.setdefault(click.user_id, set()).add(click.item_id)

    run_eval(ds, vectors, k=3, progress=False, extra_models=[lambda: _Spy()])
    assert violations == []


def test_run_eval_returns_the_contract_shape(tmp_path):
    ds, vectors = _tiny()
    out = run_eval(ds, vectors, k=10, progress=False, plot_path=tmp_path / "ndcg.png")
    assert {"dataset", "events", "k", "models", "seconds"} <= set(out)
    assert out["dataset"] == "tiny" and out["events"] == 60 and out["k"] == 10
    assert set(out["models"]) == {"recstream", "popularity", "covisit", "ease", "text"}
    for metrics in out["models"].values():
        segments = metrics.pop("segments")
        halves = metrics.pop("halves")
        assert metrics["ndcg@10"] == pytest.approx((halves["first"] + halves["second"]) / 2)
        assert set(metrics) == {"hr@10", "ndcg@10", "mrr", "coverage", "gini"}
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in metrics.values())
        assert metrics["mrr"] <= metrics["ndcg@10"] + 1e-9
        assert metrics["ndcg@10"] <= metrics["hr@10"] + 1e-9
        assert set(segments) == {"cold_items", "new_users", "rest"}
        for segment in segments.values():
            assert set(segment) == {"events", "ndcg@10", "hr@10"}
            assert 0.0 <= segment["ndcg@10"] <= segment["hr@10"] <= 1.0
    assert (tmp_path / "ndcg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Deterministic: the same replay gives the same figures.
    again = run_eval(ds, vectors, k=10, progress=False)
    for metrics in again["models"].values():
        metrics.pop("segments")
        metrics.pop("halves")
    assert again["models"] == out["models"]


def test_segments_split_the_events_by_what_came_before():
    """cold_items: the target had < 5 earlier clicks; new_users: the user < 3; rest: neither."""
    items = [ItemEvent(item_id=i) for i in ("hot", "cold")]
    # u0 clicks "hot" 6 times (events 0-5), then u1 clicks "hot" (6), then u0 "cold" (7)
    clicks = [Click(user_id="u0", item_id="hot", ts_s=float(t)) for t in range(6)]
    clicks += [Click(user_id="u1", item_id="hot", ts_s=6.0), Click(user_id="u0", item_id="cold", ts_s=7.0)]
    rng = np.random.default_rng(3)
    out = run_eval(Dataset("seg", items, clicks), {"hot": _unit(rng), "cold": _unit(rng)}, k=1, progress=False)
    segments = out["models"]["popularity"]["segments"]
    # cold: events 0-4 (hot had 0..4 earlier clicks) and 7; new users: 0-2 (u0) and 6 (u1)
    assert segments["cold_items"]["events"] == 6
    assert segments["new_users"]["events"] == 4
    assert segments["rest"]["events"] == 1  # event 5: hot had 5 clicks, u0 had 5
    # u1's click on "hot" is the one popularity gets right among the new users' events
    assert segments["new_users"]["hr@1"] == 0.25 and segments["rest"]["hr@1"] == 0.0


def test_limit_and_clicks_without_vectors_still_count():
    ds, vectors = _tiny()
    del vectors["i3"]  # an item never encoded: still an event, a miss for recstream
    out = run_eval(ds, vectors, k=5, limit=25, progress=False)
    assert out["events"] == 25
    assert out["unrecommendable"] == sum(1 for c in ds.clicks[:25] if c.item_id == "i3")


def test_items_appear_at_created_at():
    items = [ItemEvent(item_id="old"), ItemEvent(item_id="new", created_at_s=100.0)]
    clicks = [Click(user_id="a", item_id="old", ts_s=1.0), Click(user_id="b", item_id="new", ts_s=50.0),
              Click(user_id="c", item_id="new", ts_s=150.0)]
    rng = np.random.default_rng(2)
    out = run_eval(Dataset("t", items, clicks), {"old": _unit(rng), "new": _unit(rng)}, k=5, progress=False)
    assert out["unrecommendable"] == 1  # "new" clicked before its record: not known yet
    assert out["catalogue"] == 2


def test_bad_k_is_refused():
    ds, vectors = _tiny()
    with pytest.raises(ValueError):
        run_eval(ds, vectors, k=0, progress=False)


def test_the_sequence_model_is_retrained_on_earlier_clicks_only(tmp_path):
    """Retrained every 20 clicks, at the next request: on clicks 1-20, 1-40; never after
    the last click (nothing is left to score), and the halves are reported."""
    pytest.importorskip("torch")
    dataset, vectors = _tiny(n_clicks=60)
    result = run_eval(dataset, vectors, k=5, progress=False, sequence_every=20, sequence_dir=tmp_path)
    assert [fit["clicks"] for fit in result["sequence"]] == [20, 40]
    assert all(fit["version"].startswith("sasrec@") for fit in result["sequence"])
    halves = result["models"]["recstream"]["halves"]
    assert set(halves) == {"first", "second"}
    assert result["models"]["recstream"]["ndcg@5"] == pytest.approx((halves["first"] + halves["second"]) / 2)
    with pytest.raises(ValueError, match="sequence_dir"):
        run_eval(dataset, vectors, k=5, progress=False, sequence_every=20)

"""`recstream bench clickpath`, small: the report's shape and accounting on the real Qdrant Edge.

Figures are not asserted (speed is measured by benchmarks, not timed tests).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from streams.bench.clickpath import STEPS, run_clickpath_bench
from streams.settings import Settings

pytestmark = pytest.mark.integration


def test_small_clickpath_bench_reports_both_indexes(tmp_path: Path) -> None:
    steps: list[str] = []
    report = run_clickpath_bench(Settings(data_dir=tmp_path), items=3000, clicks=120, baseline_clicks=50,
                                 idle_clicks=20, idle_gap_ms=2.0, progress=steps.append)
    assert report["items"] == 3000 and report["clicks"] == 120 and report["index"] == "qdrant-edge"
    assert report["baseline"] == {**report["baseline"], "index": "numpy-exact", "clicks": 50}
    batched = report["batched"]
    assert batched["batch"] == 64 and batched["speedup"] > 0 and batched["clicks_s"] > 0
    for summary in (report["ms_per_click"], report["baseline"]["ms_per_click"], batched["ms_per_click"]):
        assert set(summary) == {"mean", "p50", "p99"}
        assert all(math.isfinite(v) and v > 0 for v in summary.values())
    idle = report["after_idle"]
    assert idle["gap_ms"] == 2.0 and idle["clicks"] == 20 and idle["ratio"] > 0
    assert set(idle["ms_per_click"]) == {"mean", "p50", "p99"} and idle["ms_per_click"]["mean"] > 0
    assert report["speedup"] > 0 and report["clicks_s"] > 0
    assert len(steps) == 5  # load, one at a time, batched, after idle, baseline
    for run in (report, batched):  # where a click's time goes: the steps add up to (nearly) all of it
        split = run["steps_ms_per_click"]
        assert list(split) == list(STEPS) and all(v >= 0 for v in split.values())
        assert split["search"] > 0 and split["rank"] > 0
        assert 0.5 * run["ms_per_click"]["mean"] <= sum(split.values()) <= run["ms_per_click"]["mean"] + 0.01


def test_the_clickpath_bench_serves_a_sequence_model_when_asked(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    steps: list[str] = []
    report = run_clickpath_bench(Settings(data_dir=tmp_path), items=3000, clicks=40, baseline_clicks=10, batch=8,
                                 sequence=True, idle_clicks=5, idle_gap_ms=1.0, progress=steps.append)
    assert report["sequence"].startswith("sasrec@")
    assert steps[0].startswith("exporting a sequence model") and len(steps) == 6
    plain = run_clickpath_bench(Settings(data_dir=tmp_path), items=500, clicks=5, baseline_clicks=5, idle_clicks=0)
    assert plain["sequence"] is None and plain["after_idle"] is None


def test_every_timed_run_starts_from_the_warm_states() -> None:
    """A run that went on from another's states would serve replays, which cost a state
    nothing: each timed run must start from the states taken after the warm-up."""
    from streams.bench.clickpath import _Run
    from streams.bench.load import item_key, synthetic_vectors
    from streams.index.memory import MemoryIndex
    from streams.recommend import RecommenderParams
    from streams.records import Click

    vectors = synthetic_vectors(200)
    ids = [item_key(i) for i in range(200)]
    run = _Run(MemoryIndex(vectors.shape[1]), vectors, ids, RecommenderParams(), optimize=False)
    clicks = [Click(user_id=f"u{n % 3}", item_id=ids[(7 * n) % 200], ts_s=1_700_000_000.0 + n) for n in range(30)]
    run.replay(clicks[:10])
    states, crowd = dict(run.states), run.recommender.crowd()
    warm = dict(states)
    for _ in range(2):
        run.reset(states, crowd)
        run.replay(clicks[10:], batch=4)
        assert states == warm  # the runs never wrote into the warm states
        assert all(run.states[u] is not warm[u] for u in warm)  # and each served its clicks anew

"""`recstream bench latency` end to end, short: every click gets its recommendation.

A smoke run of the real benchmark (worker subprocess, sender and relay processes) on the
session broker. It checks the report's shape and accounting, never the latency figures:
targets are measured by benchmarks, not by timed tests (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.bench.latency import run_latency_bench
from streams.brokers import LocalBroker
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SUMMARY_KEYS = {"p50", "p90", "p99", "p999", "max"}


def test_short_bench_accounts_for_every_click(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", state={"store": "memory"}, index={"kind": "edge"})
    plot = tmp_path / "latency.png"

    report = run_latency_bench(settings, rate=50, seconds=3, items=2000, mode="rate", burn_in_s=1.0,
                               bootstrap_servers=kafka_broker.bootstrap_servers, plot_path=plot,
                               progress=False, keep_dir=tmp_path / "bench")

    assert {"rate", "items", "seconds", "broker", "pipeline_ms", "relay_ms", "ratio_p99", "throughput",
            "missing", "late_sends"} <= set(report)
    assert (report["rate"], report["items"], report["seconds"]) == (50, 2000, 3)
    for key in ("pipeline_ms", "relay_ms"):
        summary = report[key]
        assert set(summary) == SUMMARY_KEYS
        assert 0 < summary["p50"] <= summary["p99"] <= summary["max"]
    assert report["missing"] == {"pipeline": 0, "relay": 0, "pipeline_dead_letters": 0, "send_failures": 0}
    assert report["ratio_p99"] > 0
    assert report["throughput"]["pipeline_clicks_s"] > 0 and report["throughput"]["relay_clicks_s"] > 0
    assert report["diagnostics"]["pipeline"]["sent"] == 150
    # the pull API timed beside the push path: every pull answered
    assert report["pull_ms"]["n"] == 500 and report["pull_ms"]["failed"] == 0
    assert 0 < report["pull_ms"]["p50"] <= report["pull_ms"]["p99"]
    assert plot.stat().st_size > 0
    assert report["sequence"] is None


def test_the_bench_serves_a_sequence_model_when_asked(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    settings = Settings(data_dir=tmp_path / "data", state={"store": "memory"}, index={"kind": "edge"})

    report = run_latency_bench(settings, rate=20, seconds=2, items=500, mode="rate", burn_in_s=0.5,
                               bootstrap_servers=kafka_broker.bootstrap_servers, progress=False,
                               keep_dir=tmp_path / "bench", sequence=True)

    published = (tmp_path / "bench" / "data" / "models" / "sequence" / "latest").read_text().strip()
    assert report["sequence"].startswith("sasrec@") and published == report["sequence"].replace("@", "-")
    assert report["missing"] == {"pipeline": 0, "relay": 0, "pipeline_dead_letters": 0, "send_failures": 0}


def test_saturation_searches_the_relay_floor_then_the_pipeline(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", state={"store": "memory"}, index={"kind": "edge"})

    report = run_latency_bench(settings, items=500, mode="saturation", burn_in_s=0.5,
                               saturation_step_s=1.0, saturation_budget_s=6.0, saturation_start_rate=20.0,
                               bootstrap_servers=kafka_broker.bootstrap_servers, progress=False,
                               keep_dir=tmp_path / "bench")

    for key, steps_key in (("relay_saturation_clicks_s", "relay_steps"), ("saturation_clicks_s", "steps")):
        steps = report[steps_key]
        assert steps and steps[0]["rate"] == 20.0
        passed = [s["rate"] for s in steps if s["ok"]]
        assert report[key] == (max(passed) if passed else None)
    assert "pipeline_ms" not in report  # no timed run in this mode
    relay, pipeline = report["relay_saturation_clicks_s"], report["saturation_clicks_s"]
    assert report["saturation_ratio"] == (round(pipeline / relay, 3) if relay and pipeline else None)

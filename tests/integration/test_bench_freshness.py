"""`recstream bench freshness` end to end, short: every new item is encoded and indexed once.

A smoke run of the real benchmark (a worker with every stage and the real encoder, the item
sender process) on the session broker. It checks the accounting, never the figures:
targets are measured by benchmarks, not by timed tests (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.bench.freshness import run_freshness_bench
from streams.brokers import LocalBroker
from streams.modelstore import ensure_model
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_short_bench_times_exactly_the_new_items(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    model_dir = ensure_model(Settings())  # the real default encoder, exported once and cached
    settings = Settings(data_dir=tmp_path / "data", state={"store": "memory"}, index={"kind": "edge"},
                        model={"dir": str(model_dir)})
    plot = tmp_path / "freshness.png"

    report = run_freshness_bench(settings, rate=5, seconds=3, items=300, plot_path=plot,
                                 bootstrap_servers=kafka_broker.bootstrap_servers, progress=False,
                                 keep_dir=tmp_path / "bench")

    assert (report["sent"], report["missing"], report["dead_letters"]) == (15, 0, 0)
    assert report["model"].startswith("all-MiniLM-L6-v2@")
    encoded = report["encoded_ms"]
    assert 0 < encoded["p50"] <= encoded["p99"] <= encoded["max"]
    # The worker's histogram counted the timed items only: not the catalogue it caught up
    # on at start, nor the warm-up items.
    recommendable = report["recommendable_ms"]
    assert recommendable["count"] == 15
    assert 0 < recommendable["p50_le"] <= recommendable["p90_le"] <= recommendable["p99_le"]
    assert report["met"] == (recommendable["p99_le"] <= report["target_p99_ms"] == 100.0)
    assert plot.stat().st_size > 0

"""`recstream bench burst` end to end, short: every burst item is encoded, every click answered.

A smoke run of the real benchmark (a worker with every stage and the real encoder, the click
sender process, a burst produced at once) on the session broker. It checks the accounting,
never the figures: targets are measured by benchmarks, not by timed tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.bench.burst import run_burst_bench
from streams.brokers import LocalBroker
from streams.modelstore import ensure_model
from streams.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_short_burst_encodes_every_item_while_clicks_are_answered(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    model_dir = ensure_model(Settings())  # the real default encoder, exported once and cached
    settings = Settings(data_dir=tmp_path / "data", state={"store": "memory"}, index={"kind": "edge"},
                        model={"dir": str(model_dir), "batch_size": 16, "threads": 1})
    plot = tmp_path / "burst.png"

    report = run_burst_bench(settings, burst=300, rate=20, seconds=4, items=500, plot_path=plot,
                             bootstrap_servers=kafka_broker.bootstrap_servers, progress=False,
                             keep_dir=tmp_path / "bench")

    burst = report["burst"]
    assert (burst["items"], burst["encoded"], burst["missing"], burst["dead_letters"]) == (300, 300, 0, 0)
    assert burst["items_per_s"] > 0 and 0 < burst["encoded_s"]["p50"] <= burst["encoded_s"]["max"]
    assert burst["encoder_batches"] >= 300 / 16, "the worker encoded in micro-batches of at most 16"
    assert burst["mean_batch"] <= 16
    assert report["encoder"] == {"batch_size": 16, "batch_wait_ms": 5.0, "threads": 1, "nice": 10}
    serving = report["serving"]
    assert serving["missing"] == 0, "every click of both phases was answered"
    assert serving["steady_clicks"] == 80
    assert 0 < serving["clicks_during_burst"] <= 80
    assert 0 < serving["coverage"] <= 1.0
    assert plot.stat().st_size > 0

"""``recstream bench burst``: a burst of new items on a worker that is serving clicks.

A catalogue rarely grows one item at a time: a feed import or a shop's new season lands
thousands of items at once, on the same worker that answers clicks. What is measured. One
worker runs every stage (``encode,index,recommend``, as :mod:`streams.bench.freshness` does)
over N synthetic item vectors, while a sender keeps clicks flowing at a fixed rate:

1. ``steady``: the clicks alone, the encoder idle: this run's baseline for serving latency;
2. ``burst``: the same clicks, and one second in, ``burst`` new item records produced as
   fast as the producer goes. Measured: items/s from the first record produced to the last
   vector out on ``item-vectors`` (tokenizer + onnxruntime in the worker's micro-batches),
   each item's time from the burst's start, the encoder's batches (from the worker's
   metrics), and the latency of the clicks sent while the burst was being encoded, beside
   the steady ones (``ratio_p99``: how much the burst slows serving).

The clicks phase runs for ``seconds``; ``coverage`` says what share of the burst it spanned
(below 1, the burst outlasted the clicks: give more ``seconds``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from streams.bench.freshness import start_encoding_worker
from streams.bench.latency import (
    READY_TIMEOUT_S,
    BenchError,
    BenchRun,
    BrokerChoice,
    Display,
    Phase,
    bench_run,
    plot_latencies,
)
from streams.bench.load import SendPlan, new_item_key, records_of
from streams.bench.stats import percentiles_ms
from streams.metrics import sample, scrape
from streams.settings import Settings

log = logging.getLogger(__name__)

#: Seed of the burst's item records (ids distinct from the warm-up's).
BURST_SEED = 3
#: Users the clicks come from.
USERS = 10_000


def run_burst_bench(
    settings: Settings,
    *,
    burst: int = 10_000,
    rate: float = 100.0,
    seconds: float = 45.0,
    items: int = 100_000,
    broker: BrokerChoice = "auto",
    bootstrap_servers: str | None = None,
    plot_path: Path | None = None,
    progress: bool = True,
    ready_timeout_s: float = READY_TIMEOUT_S,
    keep_dir: Path | None = None,
) -> dict[str, Any]:
    """Encode a burst of ``burst`` new items while clicks arrive at ``rate``.

    Args:
        settings: Kafka client settings, index kind, model (exported first if missing; its
            ``batch_size``, ``batch_wait_ms``, ``threads`` and ``nice`` go to the worker) and limits.
        burst: New item records produced at once.
        rate: Clicks per second, in both phases.
        seconds: Length of each clicks phase.
        items: Synthetic catalogue already in the index.
        broker, bootstrap_servers, ready_timeout_s, keep_dir: as for
            :func:`streams.bench.latency.run_latency_bench`.
        plot_path: Write a PNG of the clicks' latency CDFs (steady, during the burst).
        progress: Show progress on stderr with rich.

    Returns:
        ``burst`` (``items, items_per_s, seconds, encoded_s`` quantiles from the burst's
        start, ``missing, dead_letters, encoder_batches, mean_batch``), ``serving``
        (``steady`` and ``during_burst`` latency quantiles and their click counts,
        ``ratio_p50``, ``ratio_p99``, ``coverage``), ``encoder`` (the settings the worker ran with), ``cpu_util``.

    Raises:
        BenchError: the worker died, never served, or the burst never came out encoded.
    """
    from encoders.manifest import load_manifest
    from streams.modelstore import ensure_model

    if burst <= 0 or rate <= 0 or seconds <= 0 or items <= 0:
        raise BenchError("burst, rate, seconds and items must be positive")
    display = Display(progress)
    with display.stage("the encoder (exported once if missing)"):
        model = load_manifest(ensure_model(settings), verify_hashes=False).version
    with bench_run(settings, broker=broker, bootstrap_servers=bootstrap_servers, keep_dir=keep_dir,
                   display=display, partitions=None, users=USERS, items=items) as bench:
        report = asyncio.run(_run(bench, burst=burst, rate=rate, seconds=seconds,
                                  ready_timeout_s=ready_timeout_s, plot_path=plot_path))
    encoder = settings.model
    return {"burst_items": burst, "rate": rate, "seconds": seconds, "items": items, "broker": bench.broker,
            "model": model, "encoder": {"batch_size": encoder.batch_size, "batch_wait_ms": encoder.batch_wait_ms,
                                        "threads": encoder.threads, "nice": encoder.nice}, **report}


async def _run(bench: BenchRun, *, burst: int, rate: float, seconds: float, ready_timeout_s: float,
               plot_path: Path | None) -> dict[str, Any]:
    display = bench.display
    try:
        await start_encoding_worker(bench, ready_timeout_s=ready_timeout_s, clicks=True)

        with display.stage(f"steady: {rate:g} clicks/s for {seconds:g} s"):
            steady = await bench.measure("steady", bench.topics.clicks, rate=rate, seconds=seconds)
        display.done(f"steady: clicks {steady.summary()}")

        with display.stage(f"burst: {burst:,} new items while {rate:g} clicks/s arrive"):
            before = await asyncio.to_thread(scrape, bench.metrics_port)
            clicks = asyncio.create_task(bench.measure("burst", bench.topics.clicks, rate=rate, seconds=seconds))
            await asyncio.sleep(1.0)  # the clicks flow before the burst lands
            start = len(bench.received)
            began_s = time.time()
            keys, make_value = records_of(SendPlan(topic=bench.topics.items, rate=float(burst), seconds=1.0,
                                                   items=0, users=0, seed=BURST_SEED, kind="items"))
            await bench.produce_bulk(bench.topics.items, ((key, make_value(i, began_s)) for i, key in enumerate(keys)),
                                     total=burst, what="burst items")
            arrival, dead = await _burst_arrivals(bench, start, burst, cap_s=max(600.0, burst / 5.0))
            during = await clicks
            after = await asyncio.to_thread(scrape, bench.metrics_port)
    finally:
        await bench.close()

    ok = ~np.isnan(arrival)
    if not ok.any():
        raise BenchError(f"none of the {burst:,} burst items came out encoded")
    ended_s = float(np.nanmax(arrival))
    span_s = ended_s - began_s
    def grew(name: str) -> float:
        return sample(after, name) - sample(before, name)

    batches = grew("recstream_encoder_batch_seconds_count")
    encoded = grew("recstream_items_encoded_total")
    in_burst = _sent_between(during, began_s, ended_s)
    serving = {
        "steady": steady.summary(),
        "steady_clicks": int(steady.latencies_ms.size),
        "during_burst": percentiles_ms(in_burst),
        "clicks_during_burst": int(in_burst.size),
        "missing": steady.missing + during.missing,
        "coverage": round(min(1.0, max(0.0, (during.first_sent_s + during.seconds - began_s) / span_s)), 3),
    }
    if in_burst.size and steady.latencies_ms.size:
        serving["ratio_p50"] = round(float(np.percentile(in_burst, 50) / np.percentile(steady.latencies_ms, 50)), 2)
        serving["ratio_p99"] = round(float(np.percentile(in_burst, 99) / np.percentile(steady.latencies_ms, 99)), 2)
    report: dict[str, Any] = {
        "burst": {
            "items": burst, "encoded": int(ok.sum()), "missing": int((~ok).sum()) - dead, "dead_letters": dead,
            "seconds": round(span_s, 2), "items_per_s": round(float(ok.sum()) / span_s, 1),
            "encoded_s": {k: round(v / 1000.0, 2) for k, v in percentiles_ms((arrival[ok] - began_s) * 1000.0).items()},
            "encoder_batches": int(batches), "mean_batch": round(encoded / batches, 1) if batches else None,
        },
        "serving": serving,
        "cpu_util": during.cpu_util,
    }
    display.done(f"burst: {report['burst']['items_per_s']:,} items/s; clicks p99 "
                 f"{serving['during_burst'].get('p99')} ms during it, {serving['steady'].get('p99')} ms steady")
    if plot_path is not None:
        plot_latencies(plot_path, {"steady (encoder idle)": steady,
                                   f"during the burst ({report['burst']['items_per_s']:,.0f} items/s)":
                                       _phase_of(during, in_burst)},
                       title=f"{rate:g} clicks/s; a burst of {burst:,} new items over {bench.items:,}")
        report["plot"] = str(plot_path)
    return report


async def _burst_arrivals(bench: BenchRun, start: int, burst: int, *, cap_s: float) -> tuple[np.ndarray, int]:
    """Per burst item, when its vector reached the subscriber (NaN: never); dead letters of items."""
    index = {new_item_key(BURST_SEED, k).encode(): k for k in range(burst)}
    arrival = np.full(burst, np.nan)
    dead = 0
    cursor = start
    deadline = time.monotonic() + cap_s
    waiting = burst
    while waiting > dead and time.monotonic() < deadline:
        new = bench.received[cursor:]
        cursor += len(new)
        for arrived_s, message in new:
            if message.topic == bench.topics.item_vectors:
                k = index.get(message.key or b"")
                if k is not None and np.isnan(arrival[k]):
                    arrival[k] = arrived_s
                    waiting -= 1
            elif message.topic == bench.topics.dead_letters and _source_topic(message.value) == bench.topics.items:
                dead += 1
        bench.check_worker()
        bench.display.update(f"burst: {burst - waiting:,}/{burst:,} items encoded")
        await asyncio.sleep(0.1)
    return arrival, dead


def _source_topic(dead_letter: bytes) -> str | None:
    try:
        return json.loads(dead_letter)["source"]["topic"]
    except (ValueError, KeyError, TypeError):
        return None


def _sent_between(phase: Phase, began_s: float, ended_s: float) -> np.ndarray:
    """The latencies of the phase's clicks sent between two wall-clock times."""
    if phase.sent_at_s is None:
        return phase.latencies_ms
    return phase.latencies_ms[(phase.sent_at_s >= began_s) & (phase.sent_at_s <= ended_s)]


def _phase_of(phase: Phase, latencies_ms: np.ndarray) -> Phase:
    return Phase(name=phase.name, rate=phase.rate, seconds=phase.seconds, sent=int(latencies_ms.size),
                 latencies_ms=latencies_ms, missing=0, dead_letters=0, late_sends=0, send_failures=0,
                 throughput_clicks_s=0.0)

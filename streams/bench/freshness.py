"""``recstream bench freshness``: new item -> recommendable, through the real encoder.

The target (docs/architecture.md): a new item is recommendable (its vector applied to the serving index)
within 100 ms at p99. What is measured. A sender process produces new item records to
``items`` at a fixed rate, stamping each with ``time.time()`` just before the send. One
worker runs every stage (``encode,index,recommend``: the encoder shares the CPU with
serving, as in production) over a catalogue of N synthetic vectors.

* ``encoded_ms`` (exact, per item): send -> the item's vector arrives at a subscriber of
  ``item-vectors`` (tokenizer + onnxruntime in the worker's micro-batches, two broker hops).
* ``recommendable_ms``: send -> the vector applied to the worker's index, read from the
  worker's ``recstream_item_freshness_seconds`` histogram (the encode stage gives each vector
  message its item record's timestamp; the index replica observes ``now - timestamp`` per
  applied vector). Only the timed items are in it: the catalogue is read at catch-up, which
  is not counted, and the warm-up items are subtracted. Each ``pXX_le`` is the upper bound of
  the 5 ms bucket holding that quantile (the value is at most that).

Order of a run: broker -> topics -> N item vectors -> the worker (catch-up, HNSW when large)
-> warm-up items until one is indexed -> the timed items -> drain -> report and a PNG.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from streams.bench.latency import (
    READY_TIMEOUT_S,
    BenchError,
    BenchRun,
    BrokerChoice,
    Display,
    bench_run,
    cpu_times,
    cpu_util,
    save_cdf_plot,
)
from streams.bench.load import SendPlan, SendResult, new_item_key
from streams.bench.stats import bucket_quantiles_ms, percentiles_ms
from streams.metrics import histogram_buckets, sample, scrape
from streams.settings import Settings

log = logging.getLogger(__name__)

#: docs/architecture.md "Targets": new item -> recommendable, p99.
TARGET_P99_MS = 100.0
FRESHNESS_HISTOGRAM = "recstream_item_freshness_seconds"
INDEXED = "recstream_items_indexed_total"
#: Seeds of the warm-up and timed item batches (their ids must not collide).
WARM_SEED, TIMED_SEED = 1, 2


async def _indexed(bench: BenchRun) -> float:
    return sample(await asyncio.to_thread(scrape, bench.metrics_port), INDEXED)


async def _wait_indexed(bench: BenchRun, count: float, timeout_s: float, what: str) -> None:
    """Until the worker has applied ``count`` vectors in all (its counter), or fail."""
    started = time.monotonic()
    while (done := await _indexed(bench)) < count:
        bench.check_worker()
        if time.monotonic() - started > timeout_s:
            raise BenchError(f"{what}: {done:,.0f}/{count:,.0f} vectors indexed after {timeout_s:.0f} s; "
                             f"see {bench.worker_log}")
        bench.display.update(f"{what}: {done:,.0f}/{count:,.0f} vectors indexed "
                             f"({time.monotonic() - started:.0f} s)")
        await asyncio.sleep(0.2)


def _arrivals(bench: BenchRun, start: int, result: SendResult, seed: int) -> tuple[np.ndarray, int]:
    """Per sent item, when its vector reached the subscriber (NaN: not yet); dead letters."""
    index = {new_item_key(seed, k): k for k in range(len(result.sent_s))}
    arrival = np.full(len(result.sent_s), np.nan)
    dead = 0
    for arrived_s, message in bench.received[start:]:
        if message.topic == bench.topics.dead_letters:
            dead += 1
            continue
        k = index.get((message.key or b"").decode())
        if k is not None and np.isnan(arrival[k]):
            arrival[k] = arrived_s
    return arrival, dead


async def _send_items(bench: BenchRun, *, rate: float, seconds: float, seed: int,
                      drain_cap_s: float) -> tuple[SendResult, np.ndarray, int]:
    """Send new items at ``rate``; wait until every vector is out (or the drain cap)."""
    start = len(bench.received)
    plan = SendPlan(topic=bench.topics.items, rate=rate, seconds=seconds, items=0, users=0, seed=seed,
                    kind="items")
    result = await bench.send(plan)
    deadline = time.monotonic() + drain_cap_s
    while True:
        arrival, dead = _arrivals(bench, start, result, seed)
        waiting = int(np.isnan(arrival).sum()) - dead
        if waiting <= 0 or time.monotonic() > deadline:
            return result, arrival, dead
        bench.check_worker()
        bench.display.update(f"draining: {waiting} item vectors to come")
        await asyncio.sleep(0.05)


def plot_freshness(path: Path, encoded_ms: np.ndarray, buckets: dict[float, float],
                   before: dict[float, float], *, title: str) -> None:
    """CDFs: exact send -> encoded, and the worker's bucketed send -> recommendable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    if encoded_ms.size:
        values = np.sort(encoded_ms)
        ax.plot(values, np.arange(1, values.size + 1) / values.size,
                label=f"encoded (vector on item-vectors): p99 {np.percentile(values, 99):.1f} ms")
    bounds = np.array([b for b in sorted(buckets) if np.isfinite(b)]) * 1000.0
    counts = np.array([buckets[b / 1000.0] - before.get(b / 1000.0, 0.0) for b in bounds])
    total = buckets.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    right = 2 * TARGET_P99_MS
    if total > 0:
        cdf = counts / total
        ax.step(bounds, cdf, where="post", label="recommendable (applied to the worker's index; 5 ms buckets)")
        full = np.flatnonzero(cdf >= 1.0)
        right = max(right, 1.5 * (bounds[full[0]] if full.size else bounds[-1]))
    if encoded_ms.size:
        right = max(right, 1.5 * float(encoded_ms.max()))
    ax.set_xlim(1.0, right)
    ax.axvline(TARGET_P99_MS, color="grey", linestyle=":", label=f"target p99 {TARGET_P99_MS:g} ms")
    ax.axhline(0.99, color="grey", linestyle="--", linewidth=0.8)
    save_cdf_plot(fig, ax, path, xlabel="item record produced -> (ms, log scale)", ylabel="fraction of new items",
                  title=title)


def run_freshness_bench(
    settings: Settings,
    *,
    rate: float = 20.0,
    seconds: float = 30.0,
    items: int = 100_000,
    broker: BrokerChoice = "auto",
    bootstrap_servers: str | None = None,
    plot_path: Path | None = None,
    progress: bool = True,
    partitions: int | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
    keep_dir: Path | None = None,
) -> dict[str, Any]:
    """Measure new item -> recommendable through a real broker and the real encoder.

    Args:
        settings: Kafka client settings, index kind, model (exported first if missing) and
            limits go to the worker; topics, app id and data dir are fresh.
        rate: New items per second in the timed run.
        seconds: Length of the timed run.
        items: Synthetic catalogue already in the index (clustered unit vectors, 384-d).
        broker, bootstrap_servers, partitions, ready_timeout_s, keep_dir: as for
            :func:`streams.bench.latency.run_latency_bench`.
        plot_path: Write a PNG of both CDFs here.
        progress: Show progress on stderr with rich.

    Returns:
        ``rate, seconds, items, broker, model, sent, missing, dead_letters, late_sends,
        encoded_ms`` (p50/p90/p99/p999/max), ``recommendable_ms`` (``p50_le, p90_le, p99_le,
        count``), ``target_p99_ms``, ``met`` (``p99_le`` within the target), ``cpu_util``.

    Raises:
        BenchError: the worker died, never indexed, or the items never came out encoded.
    """
    from encoders.manifest import load_manifest
    from streams.modelstore import ensure_model

    if rate <= 0 or seconds <= 0 or items <= 0:
        raise BenchError("rate, seconds and items must be positive")
    display = Display(progress)
    with display.stage("the encoder (exported once if missing)"):
        model = load_manifest(ensure_model(settings), verify_hashes=False).version
    with bench_run(settings, broker=broker, bootstrap_servers=bootstrap_servers, keep_dir=keep_dir,
                   display=display, partitions=partitions, users=0, items=items) as bench:
        report = asyncio.run(_run(bench, rate=rate, seconds=seconds, ready_timeout_s=ready_timeout_s,
                                  plot_path=plot_path))
        return {"rate": rate, "seconds": seconds, "items": items, "broker": bench.broker, "model": model,
                **report}


async def start_encoding_worker(bench: BenchRun, *, ready_timeout_s: float, clicks: bool = False) -> None:
    """Topics, the synthetic catalogue, the sender, a subscriber (item vectors, dead letters,
    and recommendations with ``clicks``) and one worker with every stage, caught up, serving
    clicks (with ``clicks``) and with its encoder warm."""
    display = bench.display
    with display.stage("creating topics"):
        await bench.create_topics()
    with display.stage(f"loading {bench.items:,} item vectors"):
        await bench.load_items()
    with display.stage("starting the sender and the subscriber"):
        topics = (bench.topics.item_vectors, bench.topics.dead_letters)
        await bench.start_subscriber((*topics, bench.topics.recommendations) if clicks else topics)
        await asyncio.to_thread(bench.start_sender)
    with display.stage("starting the worker (encode, index, recommend)"):
        bench.start_worker("encode,index,recommend")
        await _wait_indexed(bench, bench.items, ready_timeout_s, "catch-up")
        if clicks:
            await bench.wait_serving(ready_timeout_s)
        # Warm-up: the encoder's first batches and the encode agent's assignment.
        indexed = await _indexed(bench)
        warm, _, _ = await _send_items(bench, rate=5.0, seconds=2.0, seed=WARM_SEED, drain_cap_s=ready_timeout_s)
        await _wait_indexed(bench, indexed + len(warm.sent_s), 60.0, "warm-up")
    display.done(f"worker serving {bench.items:,} items; encoder warm")


async def _run(bench: BenchRun, *, rate: float, seconds: float, ready_timeout_s: float,
               plot_path: Path | None) -> dict[str, Any]:
    display = bench.display
    try:
        await start_encoding_worker(bench, ready_timeout_s=ready_timeout_s)
        with display.stage(f"timed: {rate:g} new items/s for {seconds:g} s"):
            await asyncio.sleep(1.0)  # let the warm-up's last observations settle
            text = await asyncio.to_thread(scrape, bench.metrics_port)
            before, indexed = histogram_buckets(text, FRESHNESS_HISTOGRAM), sample(text, INDEXED)
            pids = bench.pids()
            cpu_before = cpu_times(pids)
            started = time.monotonic()
            result, arrival, dead = await _send_items(bench, rate=rate, seconds=seconds, seed=TIMED_SEED,
                                                      drain_cap_s=120.0)
            encoded = int((~np.isnan(arrival)).sum())
            await _wait_indexed(bench, indexed + encoded, 60.0, "indexing the new items")
            wall_s = time.monotonic() - started
            cpu_after = cpu_times(pids)
            after = histogram_buckets(await asyncio.to_thread(scrape, bench.metrics_port), FRESHNESS_HISTOGRAM)
    finally:
        await bench.close()

    ok = ~np.isnan(arrival)
    encoded_ms = (arrival[ok] - result.sent_s[ok]) * 1000.0
    recommendable = bucket_quantiles_ms(before, after, {"p50": 0.5, "p90": 0.9, "p99": 0.99})
    report: dict[str, Any] = {
        "sent": len(result.sent_s),
        "missing": int((~ok).sum()) - dead,
        "dead_letters": dead,
        "late_sends": result.late,
        "encoded_ms": percentiles_ms(encoded_ms),
        "recommendable_ms": recommendable,
        "target_p99_ms": TARGET_P99_MS,
        "met": bool(recommendable and recommendable["p99_le"] <= TARGET_P99_MS),
        "cpu_util": cpu_util(cpu_before, cpu_after, wall_s),
    }
    display.done(f"new item -> encoded {report['encoded_ms']}, -> recommendable {recommendable}")
    if plot_path is not None:
        plot_freshness(plot_path, encoded_ms, after, before,
                       title=f"{rate:g} new items/s for {seconds:g} s over {bench.items:,} items")
        report["plot"] = str(plot_path)
    return report

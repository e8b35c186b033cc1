"""What a running worker says about itself: one "ready" line when it starts serving, a
one-line summary every ``summary_every_s`` (clicks/s, p99, lag, held clicks, dead letters;
an idle worker says so every ``IDLE_SUMMARY_S`` only),
and the gauges that are polled rather than counted (consumer lag per partition, user
states, build info).

The figures come from the worker's own Prometheus metrics, so the log and ``/metrics`` can
never disagree.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Metric

if TYPE_CHECKING:
    from streams.stages.context import WorkerContext

log = logging.getLogger("recstream.worker")

#: An idle worker's summary comes this seldom (seconds): a quiet log stays readable.
IDLE_SUMMARY_S = 600.0


def _samples(metric: Any, suffix: str = "") -> list[Any]:
    """Samples of a prometheus_client metric (its own ``collect``: the public way to read one)."""
    collected: Iterable[Metric] = metric.collect()
    return [s for m in collected for s in m.samples if s.name.endswith(suffix)]


def _total(metric: Any) -> float:
    return sum(s.value for s in _samples(metric, "_total"))


def _buckets(histogram: Any) -> dict[float, float]:
    return {float(s.labels["le"]): s.value for s in _samples(histogram, "_bucket")}


def quantile_bound(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding the ``q`` quantile of what a histogram counted
    between two reads of its cumulative buckets; None when it counted nothing."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    wanted = q * counts[-1]
    for bound, count in zip(bounds, counts, strict=True):
        if count >= wanted:
            return bound
    return math.inf


@dataclass
class Summary:
    """Deltas of the worker's counters between two :meth:`line` calls."""

    ctx: WorkerContext
    _clicks: float = 0.0
    _letters: dict[str, float] = field(default_factory=dict)
    _encoded: float = 0.0
    _indexed: float = 0.0
    _click_buckets: dict[float, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.line(0.0)  # start counting from now

    def _dead_letters(self) -> dict[str, float]:
        counts: dict[str, float] = {}
        for sample in _samples(self.ctx.metrics.dead_letters, "_total"):
            reason = sample.labels.get("reason", "?")
            counts[reason] = counts.get(reason, 0.0) + sample.value
        return counts

    def line(self, elapsed_s: float) -> tuple[str, bool]:
        """The summary since the last call, and whether anything happened in between."""
        m = self.ctx.metrics
        clicks, encoded, indexed = _total(m.clicks), _total(m.items_encoded), _total(m.items_indexed)
        letters, buckets = self._dead_letters(), _buckets(m.click_seconds)
        new_letters = {r: n - self._letters.get(r, 0.0) for r, n in letters.items() if n > self._letters.get(r, 0.0)}
        p99 = quantile_bound(self._click_buckets, buckets, 0.99)
        lag = sum(s.value for s in _samples(m.consumer_lag))
        parts = [f"{clicks - self._clicks:.0f} clicks ({(clicks - self._clicks) / elapsed_s:.1f}/s)"
                 if elapsed_s else f"{clicks:.0f} clicks"]
        if p99 is not None:
            parts.append(f"p99 <= {p99 * 1000:.0f} ms" if math.isfinite(p99) else "p99 > 1 s")
        parts.append(f"lag {lag:.0f}")
        held = sum(s.value for s in _samples(m.clicks_held))
        if held:
            parts.append(f"{held:.0f} clicks held for their items")
        if new_letters:
            detail = ", ".join(f"{reason} {n:.0f}" for reason, n in sorted(new_letters.items()))
            parts.append(f"{sum(new_letters.values()):.0f} dead letters ({detail})")
        else:
            parts.append("0 dead letters")
        if encoded > self._encoded:
            parts.append(f"{encoded - self._encoded:.0f} items encoded")
        if indexed > self._indexed:
            parts.append(f"{indexed - self._indexed:.0f} items indexed")
        active = clicks > self._clicks or bool(new_letters) or encoded > self._encoded or indexed > self._indexed \
            or lag > 0 or held > 0
        self._clicks, self._letters, self._encoded, self._indexed = clicks, letters, encoded, indexed
        self._click_buckets = buckets
        return "; ".join(parts), active


def refresh_gauges(ctx: WorkerContext) -> None:
    """Consumer lag of every assigned input partition (the high watermark the last fetch saw,
    less this worker's committed offset) and the user-state count."""
    app, metrics = ctx.app, ctx.metrics
    consumer = app.consumer
    topics = ctx.settings.topics
    inputs = {topics.clicks, topics.user_control, topics.items}
    assigned = [tp for tp in consumer.assignment() if tp.topic in inputs]
    metrics.consumer_lag.clear()
    # faust keeps the committed offsets it reads on assignment and writes on commit in
    # ``_committed_offset``; it has no public accessor for them.
    committed = getattr(consumer, "_committed_offset", {})
    for tp in assigned:
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not fetched yet
            continue
        done = committed.get(tp)
        if highwater is not None and done is not None:
            metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(max(0, highwater - done))
    stage = ctx.recommend_stage
    if stage is not None:
        partitions = sorted({tp.partition for tp in assigned if tp.topic == topics.clicks})
        try:
            metrics.user_states.set(stage.states.count(partitions))
        except Exception:  # noqa: BLE001 - a gauge is not worth a crash
            log.debug("could not count user states", exc_info=True)
    build_info(ctx)


def build_info(ctx: WorkerContext) -> None:
    """``recstream_build_info``: the version and every model version this worker serves."""
    from streams import version

    info = {"version": version()}
    if ctx.recommender is not None:
        info |= ctx.recommender.model_versions()
    elif ctx.encoder_version:
        info["encoder"] = ctx.encoder_version
    ctx.metrics.build.info(info)


def ready_line(ctx: WorkerContext, stages: Iterable[str], worker_name: str, endpoints: str | None) -> str:
    """What the worker consumes, produces and serves, in one line."""
    topics = ctx.settings.topics
    stages = set(stages)
    consumes, produces = [], []
    if "encode" in stages:
        consumes.append(topics.items)
        produces.append(topics.item_vectors)
    if stages & {"index", "recommend"}:
        consumes.append(f"{topics.item_vectors} (all partitions)")
    if "recommend" in stages:
        consumes += [topics.clicks, topics.user_control, f"{topics.crowd} (all partitions)"]
        produces += [topics.recommendations, topics.crowd]
    produces.append(topics.dead_letters)
    assigned = len(ctx.app.consumer.assignment())
    items = len(ctx.replica.catalog) if ctx.replica is not None else None
    return (f"worker {worker_name} ready: group {ctx.settings.app_id} ({assigned} partitions assigned); "
            f"consumes {', '.join(consumes)}; produces {', '.join(produces)}"
            + (f"; {items} items indexed" if items is not None else "")
            + (f"; serves {endpoints}" if endpoints else ""))

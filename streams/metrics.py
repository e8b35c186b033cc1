"""Prometheus metrics of a worker (served with ``recstream worker --metrics-port``), and
reading them back (the demo, the latency benchmark and the tests watch a worker this way)."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass
from typing import ClassVar

from prometheus_client import Counter, Gauge, Histogram, Info


#: Fine below the 100 ms freshness target (5 ms steps), so that its p99 can be read
#: off the histogram to within a step; coarse above it.
FRESHNESS_BUCKETS_S = (*(round(0.005 * i, 3) for i in range(1, 21)), 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


#: Steps of a click's way through a worker: fine where a lone click's steps lie (tenths of a
#: millisecond to a few), coarse up to the seconds a backlog can reach.
STEP_BUCKETS_S = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0)


@dataclass(frozen=True)
class Metrics:
    clicks: Counter
    dead_letters: Counter
    items_encoded: Counter
    items_indexed: Counter
    forgotten: Counter
    index_items: Gauge
    clicks_held: Gauge
    consumer_lag: Gauge
    user_states: Gauge
    encoder_batch_seconds: Histogram
    build: Info
    click_seconds: Histogram
    click_batch_size: Histogram
    click_wait_seconds: Histogram
    click_step_seconds: Histogram
    item_freshness_seconds: Histogram
    clicks_answered_before: Counter
    transaction_seconds: Histogram

    _instance: ClassVar[Metrics | None] = None

    @classmethod
    def get(cls) -> Metrics:
        """One set per process: prometheus refuses to register a name twice."""
        if cls._instance is None:
            cls._instance = cls(
                clicks=Counter("recstream_clicks", "Clicks turned into recommendations"),
                dead_letters=Counter("recstream_dead_letters", "Records sent to dead-letters",
                                     ["topic", "reason"]),
                items_encoded=Counter("recstream_items_encoded", "Items embedded by the encoder"),
                items_indexed=Counter("recstream_items_indexed", "Item vectors applied to the index"),
                forgotten=Counter("recstream_users_forgotten", "Users whose state was deleted"),
                index_items=Gauge("recstream_index_items", "Items in this worker's catalogue and vector index"),
                clicks_held=Gauge("recstream_clicks_held",
                                  "Clicks on items not indexed yet, held until their item arrives or time runs out"),
                consumer_lag=Gauge("recstream_consumer_lag",
                                   "Records of an assigned input partition not yet committed by this worker",
                                   ["topic", "partition"]),
                user_states=Gauge("recstream_user_states",
                                  "User states held by this worker (RocksDB's estimate over its partitions)"),
                encoder_batch_seconds=Histogram(
                    "recstream_encoder_batch_seconds", "One batch of item texts through the encoder",
                    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
                ),
                build=Info("recstream_build", "recstream version and the model versions this worker serves"),
                click_seconds=Histogram(
                    "recstream_click_seconds", "Click decode -> recommendation produced, in this worker",
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
                ),
                click_batch_size=Histogram(
                    "recstream_click_batch_size", "Clicks served together in one batch by the recommend stage",
                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                ),
                click_wait_seconds=Histogram(
                    "recstream_click_wait_seconds",
                    "Click record's Kafka timestamp -> its batch starts being served: the broker, the fetch and the "
                    "stage's queue (on one clock only where producers and workers share one; clamped at 0)",
                    buckets=STEP_BUCKETS_S,
                ),
                click_step_seconds=Histogram(
                    "recstream_click_step_seconds",
                    "One batch of the recommend stage by step: read (decode, load states, apply the clicks), "
                    "rank (every user of the batch), send (produce, learn the batch's crowd lessons, write the states "
                    "back; the transaction too in exactly_once)",
                    ["step"], buckets=STEP_BUCKETS_S,
                ),
                item_freshness_seconds=Histogram(
                    "recstream_item_freshness_seconds",
                    "Item record produced -> its vector applied to this worker's index (recommendable)",
                    buckets=FRESHNESS_BUCKETS_S,
                ),
                clicks_answered_before=Counter(
                    "recstream_clicks_answered_before",
                    "exactly_once: clicks read again (after a crash) whose recommendation was committed already; "
                    "not answered twice"),
                transaction_seconds=Histogram(
                    "recstream_transaction_seconds", "exactly_once: one batch's Kafka transaction, begin to commit",
                    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
                ),
            )
        return cls._instance


def fetch(port: int | None, path: str, timeout_s: float = 2.0) -> bytes | None:
    """The body of a local worker's endpoint ``path``; None while it does not answer (or no port)."""
    if port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as response:
            return response.read()
    except OSError:
        return None


def scrape(port: int | None, timeout_s: float = 2.0) -> str:
    """A worker's ``/metrics`` exposition text; ``""`` while it is not up (or no port)."""
    body = fetch(port, "/metrics", timeout_s)
    return body.decode() if body is not None else ""


def sample(text: str, name: str) -> float:
    """The value of one unlabelled sample (e.g. ``recstream_clicks_total``); 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def histogram_sum_count(text: str, name: str, labels: str = "") -> tuple[float, float]:
    """A histogram's ``(_sum, _count)``, of the series with exactly ``labels`` (as exposed,
    e.g. ``step="rank"``); ``(0, 0)`` when absent."""
    suffix = f"{{{labels}}}" if labels else ""
    return sample(text, f"{name}_sum{suffix}"), sample(text, f"{name}_count{suffix}")


def histogram_buckets(text: str, name: str) -> dict[float, float]:
    """A histogram's cumulative bucket counts by upper bound (``+Inf`` included); {} when absent."""
    pattern = re.compile(rf'^{re.escape(name)}_bucket{{le="([^"]+)"}} ([0-9.e+]+)$', re.M)
    return {float(le): float(count) for le, count in pattern.findall(text)}

"""Shared reporting helpers: latency summaries and reading a worker's metrics back."""

from __future__ import annotations

import json
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.bench.stats import bucket_quantiles_ms, histogram_means_ms, percentiles_ms
from streams.brokers import free_port
from streams.metrics import FRESHNESS_BUCKETS_S, histogram_buckets, sample, scrape
from streams.stages.index_replica import observe_freshness as _observe_freshness


def test_percentiles_of_nothing_are_json_null():
    summary = percentiles_ms([])
    assert set(summary) == {"p50", "p90", "p99", "p999", "max"}
    assert json.loads(json.dumps(summary)) == dict.fromkeys(summary)  # null, never NaN


def test_percentiles_are_rounded_milliseconds():
    summary = percentiles_ms([1.0, 2.0, 3.0, 4.0, 100.0])
    assert summary["p50"] == 3.0 and summary["max"] == 100.0 and summary["p99"] < 100.0


def test_sample_reads_one_unlabelled_value():
    text = ("# HELP recstream_clicks_total Clicks\nrecstream_clicks_total 42.0\n"
            'recstream_dead_letters_total{topic="clicks",reason="not_json"} 3.0\n'
            "recstream_clicks_created 1.7e+09\n")
    assert sample(text, "recstream_clicks_total") == 42.0
    assert sample(text, "recstream_clicks") == 0.0  # a prefix is not a name
    assert sample("", "recstream_clicks_total") == 0.0


def test_scrape_is_empty_while_no_worker_listens():
    assert scrape(None) == ""
    assert scrape(free_port(), timeout_s=0.5) == ""


def _freshness_histogram() -> tuple[Histogram, CollectorRegistry]:
    registry = CollectorRegistry()
    return Histogram("recstream_item_freshness_seconds", "test", buckets=FRESHNESS_BUCKETS_S,
                     registry=registry), registry


def test_histogram_buckets_read_back_what_prometheus_wrote():
    histogram, registry = _freshness_histogram()
    for seconds in (0.003, 0.012, 0.012, 0.4, 99.0):
        histogram.observe(seconds)
    buckets = histogram_buckets(generate_latest(registry).decode(), "recstream_item_freshness_seconds")
    assert buckets[0.005] == 1 and buckets[0.015] == 3 and buckets[0.5] == 4 and buckets[30.0] == 4
    assert buckets[float("inf")] == 5
    assert histogram_buckets("", "recstream_item_freshness_seconds") == {}


def test_bucket_quantiles_count_only_what_came_between_two_scrapes():
    before = {0.01: 5.0, 0.1: 5.0, float("inf"): 5.0}  # the warm-up: 5 fast ones
    after = {0.01: 6.0, 0.1: 105.0, float("inf"): 106.0}  # then 1 fast, 99 slower, 1 past every bound
    out = bucket_quantiles_ms(before, after, {"p50": 0.5, "p99": 0.99, "max": 1.0})
    assert out == {"p50_le": 100.0, "p99_le": 100.0, "max_le": float("inf"), "count": 101.0}
    assert bucket_quantiles_ms(after, after) is None  # nothing new
    assert bucket_quantiles_ms({}, {}) is None


def test_histogram_means_count_only_what_came_between_two_scrapes():
    registry = CollectorRegistry()
    steps = Histogram("steps_seconds", "by step", ["step"], buckets=(0.001, 0.01), registry=registry)
    plain = Histogram("plain_seconds", "no labels", buckets=(0.001, 0.01), registry=registry)
    steps.labels("rank").observe(10.0)  # before the first scrape: not counted
    before = generate_latest(registry).decode()
    for seconds in (0.002, 0.004):
        steps.labels("rank").observe(seconds)
    plain.observe(0.5)
    after = generate_latest(registry).decode()
    means = histogram_means_ms(before, after, {"rank": ("steps_seconds", 'step="rank"'), "plain": ("plain_seconds", ""),
                                               "read": ("steps_seconds", 'step="read"')})
    assert means == {"rank": 3.0, "plain": 500.0, "read": None}


def test_freshness_observes_applied_upserts_only():
    seen: list[float] = []
    histogram = SimpleNamespace(observe=seen.append)
    message = lambda value, ts_ms: SimpleNamespace(value=value, timestamp=ts_ms)  # noqa: E731
    ok, late, tombstone, bad, no_ts = (message(b"v", 99_950), message(b"v", 99_000), message(None, 99_990),
                                       message(b"x", 99_990), message(b"v", None))
    future = message(b"v", 100_500)  # another clock ahead of ours: never a negative age
    _observe_freshness(histogram, [ok, late, tombstone, bad, no_ts, future], [(bad, ValueError("bad"))],
                       now_s=100.0)
    assert [round(s, 3) for s in seen] == [0.05, 1.0, 0.0]


def test_the_workers_cpu_is_split_by_thread_role():
    import os
    import threading

    from streams.bench.latency import cpu_ms_per_click_by_thread, thread_cpu_seconds

    now = thread_cpu_seconds(os.getpid())
    assert "main" in now and all(v >= 0 for v in now.values())
    # Python gives a thread no native name: it keeps the process's ("python" for a worker
    # started as `python -m streams.cli`; whatever ran these tests here)
    process = open(f"/proc/{os.getpid()}/comm").read().strip().rstrip("0123456789").rstrip("-_")
    idle = threading.Event()
    named = threading.Thread(target=idle.wait, name="x")
    named.start()
    try:
        assert process in thread_cpu_seconds(os.getpid())
    finally:
        idle.set()
        named.join()
    assert thread_cpu_seconds(None) == {}
    before = {"main": 1.0, "edge-search": 0.5}
    after = {"main": 2.0, "edge-search": 0.7, "python": 0.1}
    assert cpu_ms_per_click_by_thread(before, after, 100) == {"main": 10.0, "edge-search": 2.0, "python": 1.0}
    assert cpu_ms_per_click_by_thread(before, before, 100) == {}
    assert cpu_ms_per_click_by_thread(before, after, 0) == {}

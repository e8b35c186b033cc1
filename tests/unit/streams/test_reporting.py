"""Shared reporting helpers: latency summaries and reading a worker's metrics back."""

from __future__ import annotations

import json

from streams.bench.stats import percentiles_ms
from streams.brokers import free_port
from streams.metrics import sample, scrape


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

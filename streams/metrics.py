"""Prometheus metrics of a worker (served with ``recstream worker --metrics-port``), and
reading them back (the demo, the latency benchmark and the tests watch a worker this way)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from typing import ClassVar

from prometheus_client import Counter, Histogram


@dataclass(frozen=True)
class Metrics:
    clicks: Counter
    dead_letters: Counter
    items_encoded: Counter
    items_indexed: Counter
    forgotten: Counter
    click_seconds: Histogram

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
                click_seconds=Histogram(
                    "recstream_click_seconds", "Click decode -> recommendation produced, in this worker",
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
                ),
            )
        return cls._instance


def scrape(port: int | None, timeout_s: float = 2.0) -> str:
    """A worker's ``/metrics`` exposition text; ``""`` while it is not up (or no port)."""
    if port is None:
        return ""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as response:
            return response.read().decode()
    except OSError:
        return ""


def sample(text: str, name: str) -> float:
    """The value of one unlabelled sample (e.g. ``recstream_clicks_total``); 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0

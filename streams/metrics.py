"""Prometheus metrics of a worker (served with ``recstream worker --metrics-port``)."""

from __future__ import annotations

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

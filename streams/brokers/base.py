"""What every local broker does: run a child process on loopback, wait, stop cleanly."""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path

from streams.errors import BrokerError

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


async def _metadata_ready(bootstrap: str) -> bool:
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except Exception:  # not up yet: any connection error means "try again"
        return False
    finally:
        await client.close()


def wait_for_metadata(bootstrap: str, *, timeout_s: float, process: subprocess.Popen | None = None,
                      log_path: Path | None = None) -> None:
    """Block until the broker at ``bootstrap`` answers a metadata request."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
            raise BrokerError(f"broker exited with code {process.returncode} while starting:\n{tail}")
        # A plain TCP probe first: aiokafka logs every refused connection as an ERROR.
        if _port_open(bootstrap) and asyncio.run(_metadata_ready(bootstrap)):
            return
        time.sleep(0.2)
    raise BrokerError(f"broker at {bootstrap} did not serve metadata within {timeout_s:.0f} s"
                      + (f"; see {log_path}" if log_path else ""))


class LocalBroker(ABC):
    """A single-node broker child process on 127.0.0.1. Use as a context manager."""

    kind: str = "?"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def description(self) -> str:
        """Human-readable name for reports, e.g. ``apache-kafka 4.1.0``."""
        return self.kind

    @abstractmethod
    def _command(self) -> tuple[list[str], dict[str, str]]:
        """The child's argv and extra environment; prepare files here."""

    @property
    def start_timeout_s(self) -> float:
        return 60.0

    def start(self) -> None:
        argv, env = self._command()
        log_file = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        log.info("starting %s on %s", self.description, self.bootstrap_servers)
        self._process = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **env},
            start_new_session=True,  # Ctrl-C in the terminal goes to us; we stop the broker
        )
        atexit.register(self.stop)
        try:
            wait_for_metadata(self.bootstrap_servers, timeout_s=self.start_timeout_s,
                              process=self._process, log_path=self.log_path)
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", self.description, timeout_s)
            process.kill()
            process.wait()

    def __enter__(self) -> LocalBroker:
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

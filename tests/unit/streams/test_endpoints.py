"""The worker's probe endpoints, as WSGI answers (the integration tier asks a real worker)."""

from __future__ import annotations

import json
import time
from typing import Any
from wsgiref.util import setup_testing_defaults

from streams.stages.endpoints import Health, wsgi_app


def _get(health: Health, path: str) -> tuple[str, bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(wsgi_app(health)(environ, lambda s, headers: status.append(s)))
    return status[0], body


def test_ready_only_when_index_caught_up_and_group_joined() -> None:
    health = Health(needs_index=True)
    status, body = _get(health, "/readyz")
    assert status.startswith("503") and json.loads(body)["index"] == "catching_up"
    health.joined = True
    assert _get(health, "/readyz")[0].startswith("503"), "joined, but the index is not caught up"
    health.index_caught_up = True
    status, body = _get(health, "/readyz")
    assert status.startswith("200") and json.loads(body) == {
        "ready": True, "index": "caught_up", "group": "joined", "rebalancing": False, "assigned_partitions": 0}


def test_an_encode_worker_needs_no_index_to_be_ready() -> None:
    health = Health(needs_index=False, joined=True)
    assert _get(health, "/readyz")[0].startswith("200")


def test_alive_until_the_loop_stalls() -> None:
    health = Health(stall_s=5.0)
    assert _get(health, "/healthz")[0].startswith("200"), "before the app runs: catching up is progress"
    health.beat()
    assert _get(health, "/healthz")[0].startswith("200")
    health.last_beat = time.monotonic() - 6.0
    status, body = _get(health, "/healthz")
    assert status.startswith("503") and json.loads(body)["loop_stalled_s"] >= 6.0


def test_metrics_are_served_and_other_paths_are_not_found() -> None:
    health = Health()
    status, body = _get(health, "/metrics")
    assert status.startswith("200") and b"# HELP" in body
    status, body = _get(health, "/")
    assert status.startswith("404") and "/readyz" in json.loads(body)["endpoints"]

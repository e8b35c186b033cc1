"""A worker's HTTP endpoints, on its metrics port: ``/metrics``, ``/healthz``, ``/readyz``, the pull API.

What orchestrators probe (Kubernetes, compose health checks) and Prometheus scrapes:

- ``/metrics``: the Prometheus exposition (prometheus_client's own WSGI app).
- ``/healthz`` (liveness): 200 while the worker's event loop turns. A faust timer beats once a
  second; a loop blocked for ``stall_s`` (a hung call, a deadlock) answers 503, so the
  orchestrator restarts the process. Before the app runs (the index catch-up) it answers 200:
  a long catch-up is progress, not a stall.
- ``/readyz`` (readiness): 200 once the index replica has caught up (a worker with an index)
  and the worker has joined its consumer group (faust's first ``on_rebalance_complete``, sent
  after table recovery), else 503. Later rebalances do not make it unready: the member is
  still in the group, and readiness flapping on every scale-out would stall rolling updates
  and disruption budgets for nothing. The body says why, as JSON.
- ``/users/{user_id}/recommendations`` and ``/items/{item_id}/similar``: the pull API
  (:mod:`streams.stages.pull`), on workers with the recommend stage.
- anything else: 404.

Served by the standard library's WSGI server in a daemon thread (as prometheus_client's own
``start_http_server`` does), so a busy event loop cannot delay a scrape or a probe.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

if TYPE_CHECKING:
    from streams.stages.pull import PullApi

log = logging.getLogger(__name__)

#: Seconds without a heartbeat before ``/healthz`` says the worker is stuck.
STALL_S = 30.0


@dataclass
class Health:
    """What the probes read; written by the worker's event loop, read by the server thread
    (plain attribute writes, atomic in CPython)."""

    needs_index: bool = True
    index_caught_up: bool = False
    joined: bool = False
    rebalancing: bool = False
    assigned: int = 0
    last_beat: float | None = None  # time.monotonic() of the last heartbeat; None before the app runs
    stall_s: float = STALL_S

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def alive(self) -> tuple[bool, dict[str, Any]]:
        age = None if self.last_beat is None else time.monotonic() - self.last_beat
        ok = age is None or age < self.stall_s
        return ok, {"alive": ok, "loop_stalled_s": None if age is None else round(age, 1)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        index_ok = self.index_caught_up or not self.needs_index
        ok = index_ok and self.joined
        return ok, {
            "ready": ok,
            "index": "caught_up" if self.index_caught_up else ("none" if not self.needs_index else "catching_up"),
            "group": "joined" if self.joined else "joining",
            "rebalancing": self.rebalancing,
            "assigned_partitions": self.assigned,
        }


ENDPOINTS = ["/metrics", "/healthz", "/readyz", "/users/{user_id}/recommendations", "/items/{item_id}/similar",
             "/models"]


def wsgi_app(health: Health, pull: PullApi | None = None) -> Callable[[dict[str, Any], Callable[..., Any]],
                                                                     Iterable[bytes]]:
    metrics = make_wsgi_app()
    probes = {"/healthz": health.alive, "/readyz": health.ready}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # PEP 3333: PATH_INFO is the request's bytes as latin-1; ids are UTF-8 (Chinese too).
        path = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace")
        if path == "/metrics":
            return metrics(environ, start_response)
        probe = probes.get(path)
        if probe is None:
            answer = pull.answer(path, environ.get("QUERY_STRING", "")) if pull is not None else None
            if answer is not None:
                start_response(f"{answer.status} {HTTPStatus(answer.status).phrase}",
                               [("Content-Type", "application/json"), *answer.headers])
                return [json.dumps(answer.body, ensure_ascii=False).encode()]
            body = json.dumps({"error": f"no such endpoint: {path}", "endpoints": ENDPOINTS}).encode()
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [body]
        ok, detail = probe()
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [json.dumps(detail).encode()]

    return app


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Probes arrive every few seconds: not worth a log line each."""


def serve(health: Health, port: int, host: str = "0.0.0.0", pull: PullApi | None = None) -> WSGIServer:
    """Start the endpoints on ``host:port`` in a daemon thread; return the server."""
    server = make_server(host, port, wsgi_app(health, pull), _ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="recstream-endpoints", daemon=True).start()
    log.info("endpoints on http://%s:%d: %s", host, port, " ".join(ENDPOINTS if pull else ENDPOINTS[:3]))
    return server

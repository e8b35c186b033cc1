"""The worker process: a faust app wired with the chosen stages, and ``run_worker``.

Stages (:mod:`streams.stages`) can run in one process or apart: ``encode`` on a GPU box,
``index,recommend`` on CPU boxes that share the click partitions. Bad input never stops a
worker: it is sent to ``dead-letters`` with its reason and its offset is acknowledged like
any other, so input = output + dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faust

from streams import snapshot
from streams.metrics import Metrics
from streams.settings import Settings
from streams.stages import encode, endpoints, index_replica, recommend, status
from streams.stages.changelog_recovery import MarkerAwareTableManager
from streams.stages.context import RecstreamApp, WorkerContext, limits_of
from streams.stages.endpoints import Health
from streams.stages.pull import PullApi
from streams.transport import SCHEME

log = logging.getLogger(__name__)

STAGES = ("encode", "index", "recommend")

#: Seconds between refreshes of the polled gauges (consumer lag, user states).
GAUGES_EVERY_S = 5.0


def _credentials(settings: Settings) -> Any:
    kafka = settings.kafka
    if not kafka.sasl_mechanism:
        return None
    ssl_context = kafka.client_kwargs().get("ssl_context")
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
        mechanism=kafka.sasl_mechanism,
        ssl_context=ssl_context,
    )


def worker_dir(settings: Settings, worker_name: str) -> Path:
    """The worker's own directory: its faust tables (RocksDB) and its crowd snapshot."""
    return settings.data_dir / "workers" / worker_name


def lock_worker_dir(datadir: Path) -> Any:
    """Hold an exclusive lock on the worker's directory for the life of the process: two
    workers on one directory would share RocksDB stores, which RocksDB refuses with an error
    about its WAL that names neither the worker nor the fix."""
    import fcntl

    from streams.errors import ConfigError

    datadir.mkdir(parents=True, exist_ok=True)
    handle = (datadir / ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"another worker ({holder}) already runs in {datadir}: give each worker its own --name "
                          "(or its own --data-dir)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def build_app(settings: Settings, *, stages: Iterable[str] = STAGES, worker_name: str = "w0",
              canonical_url: str | None = None) -> RecstreamApp:
    """The faust app for the chosen stages; the one place agents are wired."""
    stages = set(stages)
    unknown = stages - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}: choose from {', '.join(STAGES)} (--stages)")
    datadir = worker_dir(settings, worker_name)
    app_lock = lock_worker_dir(datadir)
    servers = [f"{SCHEME}://{s.strip()}" for s in settings.kafka.bootstrap_servers.split(",")]
    app = RecstreamApp(
        settings.app_id,
        broker=servers,
        store="rocksdb://" if settings.state.store == "rocksdb" else "memory://",
        datadir=str(datadir),
        broker_credentials=_credentials(settings),
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.0,
        web_enabled=False,
        table_standby_replicas=0,
        # On a rebalance, faust waits until every click handed to the recommend stage is
        # acknowledged (its batch served and produced) before it commits and gives the
        # partition up: no click is answered by two workers.
        stream_wait_empty=True,
        # A crashed worker's partitions wait for the coordinator to time the dead member out.
        # Static membership (KIP-345) would hand them back on rejoin at once, but a static
        # member restarted cleanly never rejoined here (aiokafka 0.14, faust's assignor).
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=settings.kafka.session_timeout_s / 3.0,
        # A changelog written in transactions ends in markers, which faust's recovery would
        # wait for (streams.stages.changelog_recovery).
        TableManager=MarkerAwareTableManager,
        # This worker's pull API, as the consumer group shares it: faust's partition assignor
        # tells any worker which member owns a user's partition (streams.stages.pull).
        **({"canonical_url": canonical_url} if canonical_url else {}),
    )
    app.recstream_settings = settings
    app.recstream_lock = app_lock  # held while the app lives
    ctx = WorkerContext(settings=settings, app=app, metrics=Metrics.get(), limits=limits_of(settings),
                        health=Health(needs_index=bool(stages & {"index", "recommend"})),
                        stages=tuple(s for s in STAGES if s in stages), worker_name=worker_name)
    app.recstream_context = ctx
    _watch_health(app, ctx)
    _report(app, ctx)
    topics = settings.topics
    ctx.dead_letters = app.topic(topics.dead_letters, key_type=bytes, value_type=bytes)
    if "encode" in stages:
        encode.register(ctx)
    if "index" in stages or "recommend" in stages:
        index_replica.register(ctx)
    if "recommend" in stages:
        recommend.register(ctx, crowd_path=snapshot.crowd_path(datadir), worker_name=worker_name)
        ctx.pull = PullApi(ctx)

        @app.task
        async def pull_api() -> None:
            ctx.pull.attach(asyncio.get_running_loop())
    return app


def _report(app: RecstreamApp, ctx: WorkerContext) -> None:
    """Polled gauges (lag, user states, build info) every few seconds; the summary line."""

    @app.task
    async def report() -> None:
        summary = status.Summary(ctx)
        every_s = ctx.settings.summary_every_s
        last = last_said = time.monotonic()
        while True:
            await asyncio.sleep(GAUGES_EVERY_S)
            try:
                status.refresh_gauges(ctx)
            except Exception:  # noqa: BLE001 - reporting must never stop serving
                log.debug("could not refresh the polled gauges", exc_info=True)
            now = time.monotonic()
            if every_s and now - last >= every_s:
                line, active = summary.line(now - last)
                if active or now - last_said >= status.IDLE_SUMMARY_S:
                    status.log.info("last %.0f s: %s", now - last, line)
                    last_said = now
                last = now


def _watch_health(app: RecstreamApp, ctx: WorkerContext) -> None:
    """Keep ``ctx.health`` (what /healthz and /readyz answer) in step with the app; say "ready"
    once, when the worker first serves."""
    health = ctx.health

    @app.task
    async def heartbeat() -> None:
        while True:  # from the app's first moment (a faust timer's first tick is a second late)
            health.beat()
            await asyncio.sleep(1.0)

    async def rebalance_complete(sender: Any, **_: Any) -> None:
        first = not health.joined
        health.joined, health.rebalancing = True, False
        if first:
            status.build_info(ctx)
            status.log.info("%s", status.ready_line(ctx, ctx.stages, ctx.worker_name, ctx.endpoints))
        health.assigned = len(app.consumer.assignment())

    async def partitions_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        health.rebalancing = True

    app.on_rebalance_complete.connect(rebalance_complete, weak=False)
    app.on_partitions_revoked.connect(partitions_revoked, weak=False)


def run_worker(settings: Settings, *, stages: Iterable[str] = STAGES, worker_name: str = "w0",
               metrics_port: int | None = None, metrics_host: str = "0.0.0.0",
               advertised_host: str | None = None) -> None:
    """Create the topics if missing, then run the faust worker until it is stopped."""
    from faust.worker import Worker

    from streams.topics import ensure_topics

    asyncio.run(ensure_topics(settings.kafka, settings.topics))
    # Per-click matrix products are tiny: a multi-threaded BLAS only adds hand-offs (measured
    # ~20x slower per click in eval on 2 cores), so pin it to one thread.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    canonical_url = None
    if metrics_port:
        import socket

        canonical_url = f"http://{advertised_host or socket.gethostname()}:{metrics_port}"
    app = build_app(settings, stages=stages, worker_name=worker_name, canonical_url=canonical_url)
    ctx = app.recstream_context
    if metrics_port:
        endpoints.serve(ctx.health, metrics_port, host=metrics_host, pull=ctx.pull)
        ctx.endpoints = f"http://{metrics_host}:{metrics_port}/metrics /healthz /readyz"
    if ctx.replica is not None:
        asyncio.run(ctx.replica.catch_up())  # before joining the group: serve only a complete index
    if ctx.crowd is not None:
        asyncio.run(ctx.crowd.catch_up())  # ... ranked with the whole crowd
    try:
        Worker(app, loglevel=logging.getLevelName(logging.getLogger().level), quiet=True,
               override_logging=False).execute_from_commandline()
    finally:
        _save_snapshots(ctx)


def _save_snapshots(ctx: WorkerContext) -> None:
    """At shutdown: the replica's and the crowd's snapshots, so that the next start reads only
    what came after and ranks as before. A failure is logged; it must not hide why the worker
    stopped."""
    try:
        if ctx.replica is not None:
            ctx.replica.save()
        if ctx.crowd is not None and ctx.recommender is not None:
            began = time.monotonic()
            ctx.crowd.save(ctx.recommender)
            log.info("crowd snapshot written to %s in %.1f s", ctx.crowd.path, time.monotonic() - began)
    except Exception:  # noqa: BLE001 - the next start rebuilds from the topics instead
        log.exception("could not write the shutdown snapshots; the next start reads more from Kafka")

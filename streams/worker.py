"""The faust worker: three stages that can run in one process or apart.

- **encode**: ``items`` -> micro-batches (size or ``batch_wait_ms``, whichever first) ->
  :class:`encoders.item_encoder.ItemEncoder` -> ``item-vectors`` (deletes become tombstones).
- **index**: ``item-vectors`` -> the worker's item catalog + vector index. Every serving
  worker reads *all* partitions from the beginning (a replica of the compacted topic), so
  it is not a consumer-group agent but a task with its own consumer.
- **recommend**: ``clicks`` (keyed by user_id) -> user state in a faust Table with a
  changelog -> :class:`streams.recommend.Recommender` -> ``recommendations``; and
  ``user-control`` forget -> the key is deleted (a changelog tombstone).

Bad input never stops a worker: it is sent to ``dead-letters`` with its reason and its
offset is acknowledged like any other, so input = output + dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import snapshot
from streams.interest import decode_state, encode_state
from streams.metrics import Metrics
from streams.recommend import ItemCatalog, ItemInfo, Recommender, RecommenderParams
from streams.records import (
    DecodeReason,
    ItemEvent,
    ItemVector,
    Recommendation,
    RecommendedItem,
    RecordDecodeError,
    RecordLimits,
    Trigger,
    check_key,
    dead_letter,
    decode_click,
    decode_control,
    decode_item,
    decode_item_vector,
    encode_item_vector,
    encode_json,
)
from streams.settings import Settings
from streams.transport import SCHEME

log = logging.getLogger(__name__)

STAGES = ("encode", "index", "recommend")


class RecstreamApp(faust.App):
    """A faust app that carries recstream's settings (read by :mod:`streams.transport`)."""

    recstream_settings: Settings
    recstream_context: WorkerContext


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


def limits_of(settings: Settings) -> RecordLimits:
    lim = settings.limits
    return RecordLimits(max_text_chars=lim.max_text_chars, max_id_chars=lim.max_id_chars,
                        max_tags=lim.max_tags, max_future_s=lim.max_future_s,
                        max_record_bytes=lim.max_record_bytes)


@dataclass
class WorkerContext:
    """What the agents share inside one worker process."""

    settings: Settings
    app: RecstreamApp
    metrics: Metrics
    limits: RecordLimits
    recommender: Recommender | None = None
    replica: IndexReplica | None = None
    index_ready: asyncio.Event = field(default_factory=asyncio.Event)
    dead_letters: Any = None
    crowd_path: Path | None = None  # where the recommend stage keeps its crowd snapshot

    async def send_dead_letter(self, message: Any, error: Exception) -> None:
        letter = dead_letter(topic=message.topic, partition=message.partition,
                             offset=message.offset, raw=message.value, error=error)
        reason = letter.reason or "error"
        self.metrics.dead_letters.labels(topic=message.topic, reason=reason).inc()
        log.debug("dead letter from %s[%d]@%d: %s", message.topic, message.partition, message.offset, error)
        await self.dead_letters.send(key=message.key, value=encode_json(letter))


def worker_dir(settings: Settings, worker_name: str) -> Path:
    """The worker's own directory: its faust tables (RocksDB) and its crowd snapshot."""
    return settings.data_dir / "workers" / worker_name


def build_app(settings: Settings, *, stages: Iterable[str] = STAGES, worker_name: str = "w0") -> RecstreamApp:
    """The faust app for the chosen stages; the one place agents are wired."""
    stages = set(stages)
    unknown = stages - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}: choose from {', '.join(STAGES)} (--stages)")
    datadir = worker_dir(settings, worker_name)
    datadir.mkdir(parents=True, exist_ok=True)
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
        stream_wait_empty=False,
    )
    app.recstream_settings = settings
    ctx = WorkerContext(settings=settings, app=app, metrics=Metrics.get(), limits=limits_of(settings))
    app.recstream_context = ctx
    topics = settings.topics
    ctx.dead_letters = app.topic(topics.dead_letters, key_type=bytes, value_type=bytes)
    if "encode" in stages:
        _register_encode(ctx)
    if "index" in stages or "recommend" in stages:
        _register_index(ctx)
    if "recommend" in stages:
        ctx.crowd_path = snapshot.crowd_path(datadir)
        _register_recommend(ctx)
    return app


# --------------------------------------------------------------------------- encode


def _register_encode(ctx: WorkerContext) -> None:
    from encoders.item_encoder import ItemEncoder

    settings = ctx.settings
    encoder = ItemEncoder.load(settings.model_dir, device=settings.model.device, threads=settings.model.threads)
    log.info("encoder %s on %s (%s)", encoder.version, encoder.provider, encoder.variant)
    items = ctx.app.topic(settings.topics.items, key_type=bytes, value_type=bytes)
    vectors = ctx.app.topic(settings.topics.item_vectors, key_type=bytes, value_type=bytes)
    loop_executor = None  # default thread pool: onnxruntime releases the GIL while it runs

    @ctx.app.agent(items, name="encode")
    async def encode(stream: Any) -> None:
        async for events in stream.take_events(settings.model.batch_size,
                                               within=settings.model.batch_wait_ms / 1000.0):
            # A vector message carries its item record's timestamp (when the item was described),
            # so an index replica can time new item -> recommendable (item_freshness_seconds).
            upserts: list[tuple[ItemEvent, float | None]] = []
            for event in events:
                message = event.message
                try:
                    item = decode_item(message.value, now_s=time.time(), limits=ctx.limits)
                    check_key(message.key, item.item_id, "item_id")
                except RecordDecodeError as exc:
                    await ctx.send_dead_letter(message, exc)
                    continue
                if item.op == "delete":
                    await vectors.send(key=item.item_id.encode(), value=None, timestamp=message.timestamp)
                else:
                    upserts.append((item, message.timestamp))
            if not upserts:
                continue
            texts = [item.encoder_text() for item, _ in upserts]
            batch = await asyncio.get_running_loop().run_in_executor(loop_executor, encoder.encode, texts)
            ctx.metrics.items_encoded.inc(len(upserts))
            for (item, described_s), vector in zip(upserts, batch, strict=True):
                record = ItemVector.from_array(item_id=item.item_id, model=encoder.version, vector=vector,
                                               title=item.title, tags=item.tags, created_at_s=item.created_at_s)
                await vectors.send(key=item.item_id.encode(), value=encode_item_vector(record),
                                   timestamp=described_s)


# --------------------------------------------------------------------------- index


class IndexReplica:
    """This worker's replica of the compacted ``item-vectors`` topic: catalog + vector index.

    Every serving worker reads *all* partitions (not a consumer-group agent). Before the
    worker joins its group, :meth:`catch_up` applies everything up to the end offsets and,
    for a large catalogue, builds the ANN index (Qdrant Edge's ``optimize()`` holds the GIL
    for a minute at 100k items, so it must not run while the worker is serving). Then
    :meth:`follow` runs as a faust task from where catch-up stopped, so a new item is
    recommendable as soon as its vector arrives.
    """

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.positions: dict[int, int] = {}  # next offset to read, per partition
        # A restart resumes from a snapshot in the Edge shard (numpy starts empty; a Qdrant
        # server's collection is shared and written once, DESIGN.md).
        self.snapshot_path = (snapshot.snapshot_path(ctx.settings.index_path)
                              if ctx.settings.index.kind == "edge" else None)
        self._saved: dict[int, int] | None = None  # positions of the last snapshot written/read
        self.fingerprints: dict[int, snapshot.Fingerprint] = {}  # per partition: the last record read

    def recommender_for(self, dim: int) -> Recommender:
        ctx = self.ctx
        if ctx.recommender is None:
            from streams.index import open_index

            index = open_index(ctx.settings.index, dim=dim, path=ctx.settings.index_path)
            ctx.recommender = Recommender(index=index, catalog=ItemCatalog(),
                                          params=RecommenderParams.from_settings(ctx.settings))
            if ctx.crowd_path is not None:  # before any vector: a delete must reach these counts too
                _restore_crowd(ctx.recommender, ctx.crowd_path)
        return ctx.recommender

    async def _consumer(self) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
        settings = self.ctx.settings
        topic = settings.topics.item_vectors
        partitions = await _wait_for_partitions(settings, topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer = AIOKafkaConsumer(**settings.kafka.consumer_kwargs(), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        consumer.assign(tps)
        for tp in tps:
            if tp.partition in self.positions:
                consumer.seek(tp, self.positions[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)
        return consumer, tps

    async def _read(self, consumer: AIOKafkaConsumer, send_dead_letter: Any) -> int:
        batches = await consumer.getmany(timeout_ms=100, max_records=4096)
        applied = 0
        serving = self.ctx.index_ready.is_set()  # catch-up reads old vectors: not fresh ones
        for tp, messages in batches.items():
            bad = _apply_vectors(self.ctx, self.recommender_for, messages)
            for message, error in bad:
                await send_dead_letter(message, error)
            if serving:
                _observe_freshness(self.ctx.metrics.item_freshness_seconds, messages, bad, time.time())
            last = messages[-1]
            self.positions[tp.partition] = last.offset + 1
            self.fingerprints[tp.partition] = snapshot.Fingerprint(last.offset, last.key or b"", last.timestamp)
            applied += len(messages)
        return applied

    async def resume(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
        """Seed the catalogue and read positions from the snapshot, when it is one of this
        topic as it is now (see :mod:`streams.snapshot`), and seek ``consumer`` there. When
        it is not, delete the shard (it holds what the snapshot described) and return
        ``False``: the replica is rebuilt from the start of the topic."""
        from streams.topics import tombstones_kept_s

        if self.snapshot_path is None or (snap := snapshot.read(self.snapshot_path)) is None:
            return False
        settings = self.ctx.settings
        topic = settings.topics.item_vectors
        why = snapshot.usable(snap, topic=topic, now_s=time.time(),
                              begin_offsets={tp.partition: o for tp, o in (await consumer.beginning_offsets(tps)).items()},
                              end_offsets={tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()},
                              tombstones_kept_s=await tombstones_kept_s(settings.kafka, topic))
        if why is None:
            why = await _check_fingerprints(consumer, topic, snap.fingerprints)
        if why is not None:
            log.warning("not resuming from %s: %s; deleting the shard and rebuilding it from the topic",
                        self.snapshot_path, why)
            if self.ctx.recommender is None:  # not opened yet: nothing holds the shard
                shutil.rmtree(settings.index_path, ignore_errors=True)
            await consumer.seek_to_beginning(*tps)
            return False
        recommender = self.recommender_for(snap.dim)
        snapshot.restore(snap, recommender.catalog)
        self.positions, self.fingerprints = dict(snap.positions), dict(snap.fingerprints)
        self._saved = dict(snap.positions)
        for tp in tps:
            if tp.partition in self.positions:
                consumer.seek(tp, self.positions[tp.partition])
        log.info("index replica resumed from %s: %d items, reading on from offsets %s",
                 self.snapshot_path, len(snap.item_ids), self.positions)
        return True

    def save(self) -> None:
        """Flush the index and snapshot the replica (a no-op when nothing was read since)."""
        recommender = self.ctx.recommender
        if self.snapshot_path is None or recommender is None or self.positions == self._saved:
            return
        began = time.monotonic()
        recommender.index.flush()
        snap = snapshot.take(recommender.catalog, topic=self.ctx.settings.topics.item_vectors,
                             positions=self.positions, fingerprints=self.fingerprints, dim=recommender.index.dim,
                             now_s=time.time())
        snapshot.write(self.snapshot_path, snap)
        self._saved = dict(self.positions)
        log.info("index replica snapshot: %d items to %s in %.1f s", len(snap.item_ids), self.snapshot_path,
                 time.monotonic() - began)

    async def catch_up(self) -> int:
        """Apply every vector up to the current end offsets (from the snapshot's, when it can
        be resumed), build the ANN index if large, and snapshot the replica."""
        from aiokafka import AIOKafkaProducer

        settings = self.ctx.settings
        consumer, tps = await self._consumer()
        producer = AIOKafkaProducer(**settings.kafka.producer_kwargs())
        await producer.start()

        async def send_dead_letter(message: Any, error: Exception) -> None:
            letter = dead_letter(topic=message.topic, partition=message.partition, offset=message.offset,
                                 raw=message.value, error=error)
            self.ctx.metrics.dead_letters.labels(topic=message.topic, reason=letter.reason or "error").inc()
            await producer.send_and_wait(settings.topics.dead_letters, encode_json(letter), key=message.key)

        try:
            end = await consumer.end_offsets(tps)
            started = time.monotonic()
            await self.resume(consumer, tps)
            while any(self.positions.get(tp.partition, 0) < offset for tp, offset in end.items()):
                await self._read(consumer, send_dead_letter)
        finally:
            await consumer.stop()
            await producer.stop()
        count = len(self.ctx.recommender.catalog) if self.ctx.recommender else 0
        log.info("index replica caught up: %d items in %.1f s", count, time.monotonic() - started)
        recommender = self.ctx.recommender
        if recommender is not None:  # a restored crowd may name items deleted while it was away
            forgotten = recommender.forget_absent_items()
            if forgotten:
                log.info("crowd counts: forgot %d items no longer in the catalogue", forgotten)
        if recommender is not None and count >= settings.index.optimize_min_items:
            log.info("building the ANN index over %d items (index.optimize_min_items=%d)...",
                     count, settings.index.optimize_min_items)
            began = time.monotonic()
            recommender.index.optimize()
            log.info("ANN index built in %.1f s", time.monotonic() - began)
        try:
            self.save()
        except Exception:  # noqa: BLE001 - serving matters more; the next start reads more from Kafka
            log.exception("could not write the replica snapshot")
        self.ctx.index_ready.set()
        return count

    async def follow(self) -> None:
        """Keep applying new vectors; sets ``index_ready`` if catch-up did not run."""
        consumer, tps = await self._consumer()
        try:
            if not self.ctx.index_ready.is_set():
                end = await consumer.end_offsets(tps)
            while True:
                await self._read(consumer, self.ctx.send_dead_letter)
                if not self.ctx.index_ready.is_set() and all(
                        self.positions.get(tp.partition, 0) >= offset for tp, offset in end.items()):
                    self.ctx.index_ready.set()
        finally:
            await consumer.stop()


async def _check_fingerprints(consumer: AIOKafkaConsumer, topic: str,
                              fingerprints: dict[int, snapshot.Fingerprint]) -> str | None:
    """Why the topic no longer holds the snapshot's last records where they were (``None``:
    it does). Compaction can remove such a record too (its key was written again later):
    then the snapshot is refused, which costs a rebuild, never a wrong replica."""
    for partition, mark in fingerprints.items():
        tp = TopicPartition(topic, partition)
        consumer.seek(tp, mark.offset)
        found = None
        deadline = time.monotonic() + 10.0
        while found is None and time.monotonic() < deadline:
            batch = (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp)
            found = batch[0] if batch else None
        if found is None:
            return f"offset {mark.offset} of partition {partition} could not be read"
        if (found.offset, found.key or b"", found.timestamp) != (mark.offset, mark.key, mark.timestamp_ms):
            return f"partition {partition} holds another record at offset {mark.offset} than when it was taken"
    return None


def _observe_freshness(histogram: Any, messages: list[Any], bad: list[tuple[Any, Exception]],
                       now_s: float) -> None:
    """Time each applied upsert from its message timestamp (the item record's, when the encode
    stage wrote it) to ``now_s``. Tombstones and dead letters are not items made recommendable."""
    rejected = {id(message) for message, _ in bad}
    for message in messages:
        if message.value is not None and message.timestamp is not None and id(message) not in rejected:
            histogram.observe(max(0.0, now_s - message.timestamp / 1000.0))


def _register_index(ctx: WorkerContext) -> None:
    ctx.replica = IndexReplica(ctx)

    @ctx.app.task
    async def index_replica() -> None:
        try:
            await ctx.replica.follow()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Without its index the worker cannot serve: fail loudly so it is restarted.
            log.exception("index replica failed; stopping the worker")
            await ctx.app.crash(RuntimeError("index replica failed"))


async def _wait_for_partitions(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[int]:
    """The topic's partition ids, once it exists (the consumer's own metadata only covers
    topics it subscribed to, so ask the admin API)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**settings.kafka.client_kwargs())
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            [described] = await admin.describe_topics([topic])
            if described.get("error_code", 0) == 0 and described.get("partitions"):
                return sorted(p["partition"] for p in described["partitions"])
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    raise RuntimeError(f"topic {topic!r} does not exist after {timeout_s:.0f} s; `recstream worker` creates it")


def _apply_vectors(ctx: WorkerContext, recommender_for: Any,
                   messages: list[Any]) -> list[tuple[Any, RecordDecodeError]]:
    """Upsert/delete a batch of item-vector messages; return the bad ones (for dead letters)."""
    bad: list[tuple[Any, RecordDecodeError]] = []
    upserts: dict[str, tuple[np.ndarray, ItemInfo]] = {}
    deletes: list[str] = []
    dim = ctx.recommender.index.dim if ctx.recommender else None
    version = ""
    for message in messages:
        key = (message.key or b"").decode("utf-8", "replace")
        if message.value is None:  # tombstone: the item was deleted
            upserts.pop(key, None)
            deletes.append(key)
            continue
        try:
            record = decode_item_vector(message.value, dim=dim)
        except RecordDecodeError as exc:
            bad.append((message, exc))
            continue
        if record.vector is None:
            upserts.pop(record.item_id, None)
            deletes.append(record.item_id)
            continue
        vector = record.array()
        dim = dim or vector.shape[0]
        upserts[record.item_id] = (vector, ItemInfo(vector=vector, title=record.title, tags=tuple(record.tags),
                                                    created_at_s=record.created_at_s))
        if deletes and record.item_id in deletes:
            deletes.remove(record.item_id)
        if record.model:
            version = record.model
    if upserts:
        recommender = recommender_for(dim)
        recommender.catalog.model_version = version or recommender.catalog.model_version
        ids = list(upserts)
        recommender.upsert_items(ids, np.stack([upserts[i][0] for i in ids]), [upserts[i][1] for i in ids])
        ctx.metrics.items_indexed.inc(len(ids))
    if deletes and ctx.recommender is not None:
        ctx.recommender.delete_items(deletes)
    return bad


# --------------------------------------------------------------------------- recommend


def _register_recommend(ctx: WorkerContext) -> None:
    settings = ctx.settings
    app = ctx.app
    topics = settings.topics
    clicks = app.topic(topics.clicks, key_type=bytes, value_type=bytes)
    control = app.topic(topics.user_control, key_type=bytes, value_type=bytes)
    recommendations = app.topic(topics.recommendations, key_type=bytes, value_type=bytes)
    states = app.Table("user-state", default=None, key_type=bytes, value_type=bytes,
                       partitions=topics.partitions)

    @app.agent(clicks, name="recommend")
    async def recommend(stream: Any) -> None:
        await ctx.index_ready.wait()
        async for event in stream.events():
            message = event.message
            try:
                await _on_click(ctx, states, recommendations, message)
            except Exception as exc:  # noqa: BLE001 - a bad record must never stop the worker
                if not isinstance(exc, RecordDecodeError):
                    log.exception("click at %s[%d]@%d failed", message.topic, message.partition, message.offset)
                await ctx.send_dead_letter(message, exc)

    @app.agent(control, name="user-control")
    async def user_control(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                command = decode_control(message.value, limits=ctx.limits)
                check_key(message.key, command.user_id, "user_id", required=True)
            except RecordDecodeError as exc:
                await ctx.send_dead_letter(message, exc)
                continue
            if command.op == "forget":
                states.pop(message.key, None)  # deleting a key writes a changelog tombstone
                ctx.metrics.forgotten.inc()
                log.info("forgot user %r", command.user_id)


async def _on_click(ctx: WorkerContext, states: Any, recommendations: Any, message: Any) -> None:
    received_s = time.time()
    click = decode_click(message.value, now_s=received_s, limits=ctx.limits)
    check_key(message.key, click.user_id, "user_id", required=True)
    recommender = ctx.recommender
    if recommender is None or click.item_id not in recommender.catalog:
        raise RecordDecodeError(DecodeReason.UNKNOWN_ITEM, f"item {click.item_id!r} is not in the catalogue",
                                field="item_id")
    raw_state = states.get(message.key)
    state = decode_state(raw_state) if raw_state is not None else None
    new_state = recommender.observe(state, click)
    if new_state is not state:
        states[message.key] = encode_state(new_state)
    ranked = recommender.recommend(new_state, now_s=new_state.last_ts_s)
    rec = Recommendation(
        user_id=click.user_id,
        items=[RecommendedItem(item_id=r.item_id, score=round(float(r.score), 6), because=list(r.because),
                               source=r.source) for r in ranked],
        trigger=Trigger(topic=message.topic, partition=message.partition, offset=message.offset, ts_s=click.ts_s),
        model=recommender.catalog.model_version,
        generated_at_s=time.time(),
    )
    await recommendations.send(key=message.key, value=encode_json(rec))
    ctx.metrics.clicks.inc()
    ctx.metrics.click_seconds.observe(time.time() - received_s)


def run_worker(settings: Settings, *, stages: Iterable[str] = STAGES, worker_name: str = "w0",
               metrics_port: int | None = None) -> None:
    """Create the topics if missing, then run the faust worker until it is stopped."""
    from faust.worker import Worker

    from streams.topics import ensure_topics

    asyncio.run(ensure_topics(settings.kafka, settings.topics))
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)
    # Per-click matrix products are tiny: a multi-threaded BLAS only adds hand-offs (measured
    # ~20x slower per click in eval on 2 cores), so pin it to one thread.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
    app = build_app(settings, stages=stages, worker_name=worker_name)
    ctx = app.recstream_context
    if ctx.replica is not None:
        asyncio.run(ctx.replica.catch_up())  # before joining the group: serve only a complete index
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
        if ctx.crowd_path is not None and ctx.recommender is not None:
            began = time.monotonic()
            snapshot.write(ctx.crowd_path, ctx.recommender.crowd())
            log.info("crowd snapshot written to %s in %.1f s", ctx.crowd_path, time.monotonic() - began)
    except Exception:  # noqa: BLE001 - the next start rebuilds from the topics instead
        log.exception("could not write the shutdown snapshots; the next start reads more from Kafka")


def _restore_crowd(recommender: Recommender, path: Path) -> None:
    """Take up the crowd counts this worker's last run left (see :mod:`streams.snapshot`)."""
    state = snapshot.read_crowd(path)
    if state is None:
        return
    try:
        recommender.restore_crowd(state)
    except ValueError as exc:
        log.warning("crowd snapshot %s not used (%s): starting from nothing", path, exc)
        return
    log.info("crowd restored from %s: co-visitation rows for %d items, %d trending",
             path, len(recommender.covisit), len(recommender.trending))

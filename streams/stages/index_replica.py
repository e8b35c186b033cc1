"""Index stage: this worker's replica of the compacted ``item-vectors`` topic, its item
catalogue and vector index.

Every serving worker reads *all* partitions from the beginning (a replica of the compacted
topic), so it is not a consumer-group agent but a task with its own consumer. The replica
owns the :class:`~streams.recommend.ItemCatalog` and the :class:`~streams.index.base.VectorIndex`;
the recommend stage reads them and hears of deleted items through :attr:`IndexReplica.on_delete`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import snapshot
from streams.index.base import VectorIndex
from streams.catalog import ItemCatalog, ItemInfo
from streams.records import RecordDecodeError, decode_item_vector
from streams.stages.context import WorkerContext
from streams.topics import whole_topic_reader

log = logging.getLogger(__name__)


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
        self.catalog = ItemCatalog()
        self.index: VectorIndex | None = None  # opened at the first vector (its length is the dim)
        #: Called with the ids of deleted items, after they left the catalogue and the index
        #: (the recommend stage drops them from its crowd counts).
        self.on_delete: list[Callable[[Sequence[str]], None]] = []
        #: Called with the ids of items added or replaced, once they are recommendable (the
        #: recommend stage serves the clicks it held for them).
        self.on_upsert: list[Callable[[Sequence[str]], None]] = []
        self.positions: dict[int, int] = {}  # next offset to read, per partition
        # A restart resumes from a snapshot in the Edge shard (numpy starts empty; a Qdrant
        # server's collection is shared and written once).
        self.snapshot_path = (snapshot.snapshot_path(ctx.settings.index_path)
                              if ctx.settings.index.kind == "edge" else None)
        self._saved: dict[int, int] | None = None  # positions of the last snapshot written/read
        self.fingerprints: dict[int, snapshot.Fingerprint] = {}  # per partition: the last record read

    def open_index(self, dim: int) -> VectorIndex:
        if self.index is None:
            from streams.index import open_index

            self.index = open_index(self.ctx.settings.index, dim=dim, path=self.ctx.settings.index_path)
        return self.index

    async def _consumer(self) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
        settings = self.ctx.settings
        consumer, tps = await whole_topic_reader(settings.kafka, settings.topics.item_vectors)
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
            bad = self.apply(messages)
            for message, error in bad:
                await send_dead_letter(message, error)
            if serving:
                observe_freshness(self.ctx.metrics.item_freshness_seconds, messages, bad, time.time())
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
            why = await check_fingerprints(consumer, topic, snap.fingerprints)
        if why is not None:
            log.warning("not resuming from %s: %s; deleting the shard and rebuilding it from the topic",
                        self.snapshot_path, why)
            if self.index is None:  # not opened yet: nothing holds the shard
                shutil.rmtree(settings.index_path, ignore_errors=True)
            await consumer.seek_to_beginning(*tps)
            return False
        self.open_index(snap.dim)
        snapshot.restore(snap, self.catalog)
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
        index = self.index
        if self.snapshot_path is None or index is None or self.positions == self._saved:
            return
        began = time.monotonic()
        index.flush()
        snap = snapshot.take(self.catalog, topic=self.ctx.settings.topics.item_vectors,
                             positions=self.positions, fingerprints=self.fingerprints, dim=index.dim,
                             now_s=time.time())
        snapshot.write(self.snapshot_path, snap)
        self._saved = dict(self.positions)
        log.info("index replica snapshot: %d items to %s in %.1f s", len(snap.item_ids), self.snapshot_path,
                 time.monotonic() - began)

    async def catch_up(self) -> int:
        """Apply every vector up to the current end offsets (from the snapshot's, when it can
        be resumed), build the ANN index if large, and snapshot the replica."""
        consumer, tps = await self._consumer()
        try:
            async with self.ctx.direct_dead_letters() as send_dead_letter:
                end = await consumer.end_offsets(tps)
                started = time.monotonic()
                await self.resume(consumer, tps)
                while any(self.positions.get(tp.partition, 0) < offset for tp, offset in end.items()):
                    await self._read(consumer, send_dead_letter)
        finally:
            await consumer.stop()
        count = len(self.catalog)
        log.info("index replica caught up: %d items in %.1f s", count, time.monotonic() - started)
        settings = self.ctx.settings
        if self.index is not None and count >= settings.index.optimize_min_items:
            log.info("building the ANN index over %d items (index.optimize_min_items=%d)...",
                     count, settings.index.optimize_min_items)
            began = time.monotonic()
            self.index.optimize()
            log.info("ANN index built in %.1f s", time.monotonic() - began)
        try:
            self.save()
        except Exception:  # noqa: BLE001 - serving matters more; the next start reads more from Kafka
            log.exception("could not write the replica snapshot")
        self.ctx.mark_index_ready()
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
                    self.ctx.mark_index_ready()
        finally:
            await consumer.stop()

    def apply(self, messages: list[Any]) -> list[tuple[Any, RecordDecodeError]]:
        """Upsert/delete a batch of item-vector messages; return the bad ones (for dead letters)."""
        dim = self.index.dim if self.index is not None else None
        folded = fold_item_vectors(messages, dim)
        upserts, deletes, bad, version = folded.upserts, folded.deletes, folded.bad, folded.model
        dim = folded.dim
        if upserts:
            index, catalog = self.open_index(dim), self.catalog
            catalog.model_version = version or catalog.model_version
            ids = list(upserts)
            index.upsert(ids, np.stack([upserts[i][0] for i in ids]))
            for item_id in ids:
                catalog.put(item_id, upserts[item_id][1])
            self.ctx.metrics.items_indexed.inc(len(ids))
            for hook in self.on_upsert:
                hook(ids)
        if deletes and self.index is not None:
            self.index.delete(deletes)
            for item_id in deletes:
                self.catalog.remove(item_id)
            for hook in self.on_delete:
                hook(deletes)
        self.ctx.metrics.index_items.set(len(self.catalog))
        return bad


@dataclass(slots=True)
class FoldedVectors:
    """What a run of item-vector records leaves: the last vector of each item written, the
    items deleted (tombstones, null vectors), the records that do not decode."""

    upserts: dict[str, tuple[np.ndarray, ItemInfo]] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    bad: list[tuple[Any, RecordDecodeError]] = field(default_factory=list)
    model: str = ""  # the encoder of the last vector
    dim: int | None = None


def fold_item_vectors(messages: Sequence[Any], dim: int | None) -> FoldedVectors:
    """Fold item-vector records in order (the replica's batch, or the rebuild's one record)."""
    out = FoldedVectors(dim=dim)
    for message in messages:
        key = (message.key or b"").decode("utf-8", "replace")
        if message.value is None:  # tombstone: the item was deleted
            out.upserts.pop(key, None)
            out.deletes.append(key)
            continue
        try:
            record = decode_item_vector(message.value, dim=out.dim)
        except RecordDecodeError as exc:
            out.bad.append((message, exc))
            continue
        if record.vector is None:
            out.upserts.pop(record.item_id, None)
            out.deletes.append(record.item_id)
            continue
        vector = record.array()
        out.dim = out.dim or vector.shape[0]
        out.upserts[record.item_id] = (vector, ItemInfo(vector=vector, title=record.title, tags=tuple(record.tags),
                                                        created_at_s=record.created_at_s))
        if record.item_id in out.deletes:
            out.deletes.remove(record.item_id)
        if record.model:
            out.model = record.model
    return out


async def check_fingerprints(consumer: AIOKafkaConsumer, topic: str,
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


def observe_freshness(histogram: Any, messages: list[Any], bad: list[tuple[Any, Exception]],
                      now_s: float) -> None:
    """Time each applied upsert from its message timestamp (the item record's, when the encode
    stage wrote it) to ``now_s``. Tombstones and dead letters are not items made recommendable."""
    rejected = {id(message) for message, _ in bad}
    for message in messages:
        if message.value is not None and message.timestamp is not None and id(message) not in rejected:
            histogram.observe(max(0.0, now_s - message.timestamp / 1000.0))


def register(ctx: WorkerContext) -> None:
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

"""The crowd, shared by every recommend worker through the ``crowd`` topic.

Each recommend worker serves the users of its own click partitions, but co-visitation,
co-likes and trending are the crowd's knowledge: a worker that learned them only from its own
clicks would rank with 1/N of the evidence when N workers share the stream. So every worker
publishes what its clicks teach (:class:`~streams.recommend.CrowdEvent`: the clicked item,
its time and weight, the user's previous items; no user id) and learns what the others' teach.

- **Publish.** The events of one served batch leave as one record (msgpack, a list of
  events) keyed by this process's origin id. A batch's clicks are acknowledged
  only when that record is acknowledged too, so no lesson is lost (at-least-once).
- **Learn.** Every recommend worker reads all partitions of the topic with its own consumer
  (no group: like the index replica, each one needs all of it) and learns every record whose
  origin is not its own: it learned its own at the click. Records of a previous run of the
  same worker carry another origin (the id is new per process), so they are learned too.
- **Restart.** The crowd snapshot written at shutdown holds the positions read; the next
  start restores the counts and reads on from there, before it joins the group (as the index
  replica catches up). A worker on an empty data dir reads the whole topic
  (``topics.crowd_retention_s`` of the past).

Limits, as designed: another worker's lesson arrives after the topic's round trip (a fetch,
milliseconds), so two workers rank with the same counts within that lag. After a crash the
last snapshot is older than the counts were, and reading on from its positions learns again
the few own records published but not yet read back when it was taken (counted twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import snapshot
from streams.recommend import CrowdEvent, Recommender
from streams.records import DecodeReason, RecordDecodeError
from streams.stages.context import Send, WorkerContext
from streams.topics import whole_topic_reader

log = logging.getLogger(__name__)

#: Events per record: ~1 KB each (50 previous items), well under Kafka's 1 MB record default.
EVENTS_PER_RECORD = 200

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[CrowdEvent])


def encode_events(events: Sequence[CrowdEvent]) -> list[bytes]:
    """``events`` as crowd records, in order, at most ``EVENTS_PER_RECORD`` each."""
    return [_encoder.encode(events[i:i + EVENTS_PER_RECORD]) for i in range(0, len(events), EVENTS_PER_RECORD)]


def decode_events(raw: bytes | None) -> list[CrowdEvent]:
    """A crowd record's events; :class:`RecordDecodeError` when it is not one."""
    if raw is None:
        raise RecordDecodeError(DecodeReason.MISSING_FIELD, "a crowd record without a value")
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise RecordDecodeError(DecodeReason.WRONG_TYPE, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise RecordDecodeError(DecodeReason.NOT_MSGPACK, str(exc)) from None


class CrowdShare:
    """One recommend worker's link to the ``crowd`` topic, and its crowd snapshot."""

    def __init__(self, ctx: WorkerContext, path: Path | None, *, worker_name: str) -> None:
        self.ctx = ctx
        self.path = path
        self.topic = ctx.settings.topics.crowd
        self.enabled = ctx.settings.recommend.share_crowd
        self.origin = f"{worker_name}-{uuid.uuid4().hex[:12]}".encode()
        self.positions: dict[int, int] = {}  # partition -> next offset to read
        self.learned = 0  # others' events learned since start

    # ------------------------------------------------------------------ snapshot

    def restore(self, recommender: Recommender) -> None:
        """Take up the crowd (and the positions read) this worker's last run left."""
        if self.path is None or (snap := snapshot.read_crowd(self.path)) is None:
            return
        try:
            recommender.restore_crowd(snap.crowd)
        except ValueError as exc:
            log.warning("crowd snapshot %s not used: %s", self.path, exc)
            return
        if snap.topic == self.topic:
            self.positions = dict(snap.positions)
        forgotten = recommender.forget_absent_items()  # deleted while the snapshot was on disk
        log.info("crowd restored from %s: co-visitation rows for %d items, %d trending; %d items forgotten",
                 self.path, len(recommender.covisit), len(recommender.trending), forgotten)

    def save(self, recommender: Recommender) -> None:
        if self.path is not None:
            snapshot.write(self.path, snapshot.CrowdSnapshot(crowd=recommender.crowd(), topic=self.topic,
                                                             positions=self.positions))

    # ------------------------------------------------------------------ publish

    async def publish(self, send: Send, events: Sequence[CrowdEvent]) -> list[asyncio.Future[Any]]:
        """Hand the batch's lessons to ``send`` (the batch's producer, or its transaction);
        return the futures of their acks."""
        if not self.enabled or not events:
            return []
        return [await send(self.topic, self.origin, raw, None) for raw in encode_events(events)]

    # ------------------------------------------------------------------ learn

    async def catch_up(self) -> None:
        """Learn every other worker's record up to the current end offsets (before joining the
        group, so the first lists are ranked with the whole crowd)."""
        recommender = self._recommender()
        if not self.enabled or recommender is None:
            return
        consumer, tps = await self._consumer()
        try:
            async with self.ctx.direct_dead_letters() as send_dead_letter:
                end = await consumer.end_offsets(tps)
                began, said, total = time.monotonic(), time.monotonic(), 0
                while [tp for tp, offset in end.items() if await consumer.position(tp) < offset]:
                    total += await self._read(consumer, recommender, send_dead_letter)
                    if time.monotonic() - said > 5.0:
                        said = time.monotonic()
                        log.info("crowd catch-up: %d records read, %d events learned", total, self.learned)
            log.info("crowd caught up: %d records read, %d events of other workers learned in %.1f s",
                     total, self.learned, time.monotonic() - began)
        finally:
            await consumer.stop()

    async def follow(self) -> None:
        """Keep learning other workers' records (a task for the worker's lifetime)."""
        if not self.enabled:
            return
        await self.ctx.index_ready.wait()
        while (recommender := self._recommender()) is None:
            await asyncio.sleep(0.1)
        consumer, _ = await self._consumer()
        try:
            while True:
                await self._read(consumer, recommender, self.ctx.send_dead_letter)
        finally:
            await consumer.stop()

    def _recommender(self) -> Recommender | None:
        stage = self.ctx.recommend_stage
        return stage.ensure_recommender() if stage is not None else None

    async def _consumer(self) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
        consumer, tps = await whole_topic_reader(self.ctx.settings.kafka, self.topic)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        for tp in tps:
            position = self.positions.get(tp.partition)
            if position is None or position > end[tp]:  # never read, or the topic was recreated
                await consumer.seek_to_beginning(tp)
                self.positions[tp.partition] = begin[tp]
                continue
            if position < begin[tp]:
                log.warning("crowd records %s[%d] %d..%d expired before this worker read them",
                            self.topic, tp.partition, position, begin[tp])
                position = self.positions[tp.partition] = begin[tp]
            consumer.seek(tp, position)
        return consumer, tps

    async def _read(self, consumer: AIOKafkaConsumer, recommender: Recommender, send_dead_letter: Any) -> int:
        batches = await consumer.getmany(timeout_ms=200, max_records=1024)
        count = 0
        for tp, messages in batches.items():
            for message in messages:
                if message.key == self.origin:
                    continue  # learned when its clicks were served
                try:
                    events = decode_events(message.value)
                except RecordDecodeError as exc:
                    # Only recstream workers write here: a version mismatch or a stray producer.
                    await send_dead_letter(message, exc)
                    continue
                for event in events:
                    recommender.learn(event)
                self.learned += len(events)
            count += len(messages)
        for tp in batches:
            # the consumer's position, not the last record's offset + 1: with exactly_once a
            # transaction's marker follows its records, and no consumer ever receives it
            self.positions[tp.partition] = await consumer.position(tp)
        return count

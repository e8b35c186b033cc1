"""Exactly-once for the click path (``kafka.processing_guarantee=exactly_once``): one Kafka
transaction per served batch of clicks.

A batch's recommendations, dead letters, crowd lessons and user-state changelog records, and
the input offsets of the clicks it answered, are committed together or not at all; readers
with ``isolation.level=read_committed`` (every recstream consumer in this mode, and the
subscribers that want the guarantee) never see a batch that was aborted. The local state
store is written only after the commit, and the changelog is recovered read_committed, so a
user's state always matches what was committed. That is what makes a click read again after
a crash safe to skip: if its state change is in the state, its recommendation was committed
in the same transaction (:mod:`streams.stages.recommend`).

Why not faust's own ``processing_guarantee="exactly_once"``: it keeps one transactional
producer per *output* partition and commits on its commit timer rather than per batch, and
it is known to duplicate after a kill (faust-streaming/faust#517) and to crash at start
(#440). aiokafka's transactional producer is the maintained piece underneath; this module
only gives it a batch's shape.

Fencing. The transactional id is the app id, the host name and the worker's name (stable
across restarts: the StatefulSet pod name in ``deploy/``; unique among live workers, even
when several hosts keep the default ``--name``), so a restarted worker aborts its
predecessor's open transaction when it starts. When another worker takes the partitions over, that transaction is aborted
by the broker after ``kafka.transaction_timeout_s``. A worker that lost its group membership
while still running (a long pause) is not fenced by the group generation: aiokafka commits
offsets in transactions without it (KIP-447 is not implemented there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from streams.settings import KafkaSettings


class BatchTransactions:
    """A transactional producer that commits one batch's records with its input offsets."""

    def __init__(self, kafka: KafkaSettings, *, transactional_id: str, group_id: str,
                 timeout_s: float | None = None) -> None:
        """``timeout_s``: how long the broker lets a transaction stay open before it aborts
        it (default ``kafka.transaction_timeout_s``: a batch's)."""
        self.kafka = kafka
        self.transactional_id = transactional_id
        self.group_id = group_id
        self.timeout_s = kafka.transaction_timeout_s if timeout_s is None else timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._began = 0.0

    async def start(self) -> None:
        """Start the producer; the broker fences (and aborts the open transaction of) any
        earlier producer with this transactional id.

        Started with the first batch, when every topic it writes exists: aiokafka's producer
        asks for the metadata of all topics until it meets one it does not know, and from
        then on of the topics it met since, so a topic created after its start (faust
        creates the changelog when the app starts) would leave the others without leaders."""
        if self._producer is None:
            producer = AIOKafkaProducer(**{**self.kafka.producer_kwargs(), "acks": "all"},
                                        transactional_id=self.transactional_id,
                                        transaction_timeout_ms=int(self.timeout_s * 1000))
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def begin(self) -> None:
        await self.start()
        assert self._producer is not None
        await self._producer.begin_transaction()
        self._began = time.monotonic()

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None
                   ) -> asyncio.Future[Any]:
        """Add a record to the open transaction; the future gives its metadata once sent."""
        assert self._producer is not None
        return await self._producer.send(topic, value, key=key, partition=partition)

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> float:
        """Commit the open transaction with these input offsets (the next offset to read, per
        (topic, partition)) for the worker's group; return how long the transaction took."""
        assert self._producer is not None
        if offsets:
            await self._producer.send_offsets_to_transaction(
                {TopicPartition(topic, partition): offset for (topic, partition), offset in offsets.items()},
                self.group_id)
        await self._producer.commit_transaction()
        return time.monotonic() - self._began

    async def abort(self) -> None:
        """Abort the open transaction, if the producer can still say so (a fenced or failed one
        cannot: the broker aborts it after the transaction timeout)."""
        if self._producer is not None:
            try:
                await self._producer.abort_transaction()
            except Exception:  # noqa: BLE001 - the worker is crashing already; the broker times it out
                pass

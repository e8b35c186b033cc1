"""A replica snapshot is checked against the topic it claims to describe (real broker)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.settings import KafkaSettings, TopicSettings
from streams.snapshot import Fingerprint
from streams.topics import TOMBSTONES_KEPT_S, ensure_topics, tombstones_kept_s
from streams.stages.index_replica import check_fingerprints as _check_fingerprints

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def _produce(kafka: KafkaSettings, topic: str, keys: list[bytes]) -> list[Fingerprint]:
    producer = AIOKafkaProducer(**kafka.producer_kwargs())
    await producer.start()
    try:
        marks = []
        for key in keys:
            meta = await producer.send_and_wait(topic, b"v", key=key, partition=0)
            marks.append(Fingerprint(meta.offset, key, meta.timestamp))
        return marks
    finally:
        await producer.stop()


async def _check(kafka: KafkaSettings, topic: str, marks: dict[int, Fingerprint]) -> str | None:
    consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        return await _check_fingerprints(consumer, topic, marks)
    finally:
        await consumer.stop()


def test_the_last_record_read_must_still_be_there(kafka_settings: KafkaSettings) -> None:
    topic = f"fingerprints-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[str | None, str | None, str | None]:
        admin = AIOKafkaAdminClient(**kafka_settings.client_kwargs())
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])
        finally:
            await admin.close()
        marks = await _produce(kafka_settings, topic, [b"a", b"b", b"c"])
        same = await _check(kafka_settings, topic, {0: marks[1]})
        # the same offset now holding another record: a topic recreated under the same name
        other = await _check(kafka_settings, topic, {0: Fingerprint(1, b"x", marks[1].timestamp_ms)})
        missing = await _check(kafka_settings, topic, {0: Fingerprint(99, b"a", 0)})
        return same, other, missing

    same, other, missing = asyncio.run(scenario())
    assert same is None
    assert other and "another record" in other
    assert missing and "could not be read" in missing


def test_item_vectors_keep_tombstones_a_week(kafka_settings: KafkaSettings, topic_settings: TopicSettings) -> None:
    asyncio.run(ensure_topics(kafka_settings, topic_settings))
    kept = asyncio.run(tombstones_kept_s(kafka_settings, topic_settings.item_vectors))
    assert kept == TOMBSTONES_KEPT_S
    assert asyncio.run(tombstones_kept_s(kafka_settings, topic_settings.clicks)) == 86_400.0  # Kafka's default

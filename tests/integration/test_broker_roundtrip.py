"""Every record type (docs/architecture.md) round-trips through a real broker with aiokafka."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streams.records import (
    Click,
    DeadLetter,
    ItemEvent,
    ItemVector,
    RecommendedItem,
    Recommendation,
    SourceRef,
    Trigger,
    UserControl,
    decode_click,
    decode_control,
    decode_dead_letter,
    decode_item,
    decode_item_vector,
    decode_recommendation,
    encode_item_vector,
    encode_json,
)
from streams.settings import KafkaSettings, TopicSettings
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration
NOW_S = 1_700_000_100.0


async def _produce_and_consume(kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]]) -> list:
    producer = AIOKafkaProducer(**kafka.producer_kwargs(), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **kafka.consumer_kwargs(), auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    got = []
    try:
        async with asyncio.timeout(30):
            while len(got) < len(records):
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    got.extend(messages)
    finally:
        await consumer.stop()
    return got


def test_topics_are_created_with_partitions_and_compaction(kafka_settings: KafkaSettings,
                                                           topic_settings: TopicSettings) -> None:
    async def run() -> None:
        created = await ensure_topics(kafka_settings, topic_settings)
        assert set(created) == set(topic_settings.all_names())
        assert await ensure_topics(kafka_settings, topic_settings) == []  # idempotent
        admin = AIOKafkaAdminClient(**kafka_settings.client_kwargs())
        await admin.start()
        try:
            described = await admin.describe_topics([topic_settings.clicks])
            assert len(described[0]["partitions"]) == topic_settings.partitions
            from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
            configs = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic_settings.item_vectors)])
            entries = {e[0]: e[1] for e in configs[0].resources[0][4]}
            assert entries["cleanup.policy"] == "compact"
        finally:
            await admin.close()

    asyncio.run(run())


def test_every_record_type_round_trips(kafka_settings: KafkaSettings, topic_settings: TopicSettings) -> None:
    item = ItemEvent(item_id="i1", title="Heat (1995)", tags=["Action"], created_at_s=NOW_S)
    click = Click(user_id="u1", item_id="i1", ts_s=NOW_S, event="like", weight=2.0)
    control = UserControl(user_id="u1", op="forget")
    rec = Recommendation(
        user_id="u1", items=[RecommendedItem(item_id="i2", score=0.5, because=["i1"], source="interest")],
        trigger=Trigger(topic="clicks", partition=0, offset=0, ts_s=NOW_S), model="m@1", generated_at_s=NOW_S,
    )
    letter = DeadLetter(source=SourceRef(topic="clicks", partition=0, offset=1), error="x", raw="{",
                        reason="not_json")
    vector = ItemVector.from_array(item_id="i1", model="m@1", vector=np.ones(8, np.float32) / np.sqrt(8),
                                   title="Heat (1995)", tags=["Action"])
    cases = [
        (topic_settings.items, b"i1", encode_json(item), lambda raw: decode_item(raw, now_s=NOW_S), item),
        (topic_settings.clicks, b"u1", encode_json(click), lambda raw: decode_click(raw, now_s=NOW_S), click),
        (topic_settings.user_control, b"u1", encode_json(control), decode_control, control),
        (topic_settings.recommendations, b"u1", encode_json(rec), decode_recommendation, rec),
        (topic_settings.dead_letters, b"u1", encode_json(letter), decode_dead_letter, letter),
        (topic_settings.item_vectors, b"i1", encode_item_vector(vector),
         lambda raw: decode_item_vector(raw, dim=8), vector),
    ]

    async def run() -> None:
        await ensure_topics(kafka_settings, topic_settings)
        for topic, key, value, decode, expected in cases:
            [message] = await _produce_and_consume(kafka_settings, topic, [(key, value)])
            assert message.key == key
            assert decode(message.value) == expected, topic

    asyncio.run(run())


def test_send_keys_and_checks_records_and_tail_reads_them_back(kafka_settings, topic_settings):
    """``recstream send`` produces what the workers accept, keyed as they expect, and refuses
    (without sending) what they would dead-letter; ``tail`` reads it back, decoded."""
    from streams.console import send, tail
    from streams.settings import Settings

    settings = Settings(kafka=kafka_settings, topics=topic_settings)
    asyncio.run(ensure_topics(kafka_settings, topic_settings))
    report = asyncio.run(send(settings, "clicks", [
        '{"user_id": "u1", "item_id": "i1"}',  # no ts: stamped now
        '{"user_id": "u1", "item_id": "i1", "ts": 1700000000000}',  # milliseconds: refused
        "",
        '{"user_id": "u2", "item_id": "i2", "ts": 1700000000.5}',
    ]))
    assert report["sent"] == 2
    assert [(r["line"], r["reason"]) for r in report["refused"]] == [(2, "future_timestamp")]
    seen: list[dict] = []
    summary = asyncio.run(tail(settings, "clicks", from_beginning=True, limit=2, timeout_s=20, emit=seen.append))
    assert summary == {"topic": topic_settings.clicks, "records": 2}
    assert sorted(r["key"] for r in seen) == ["u1", "u2"]
    assert all(r["key"] == r["value"]["user_id"] for r in seen)
    assert {r["value"]["item_id"] for r in seen} == {"i1", "i2"}
    assert all(isinstance(r["value"]["ts"], float) for r in seen)

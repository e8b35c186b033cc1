"""`recstream replay` moves a group's committed offsets on Apache Kafka (not Tansu: its
ListOffsets-by-timestamp and group OffsetFetch are broken: docs/architecture.md)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from streams.replay import ReplayError, changelog_topic, run_replay
from streams.settings import KafkaSettings, Settings, TopicSettings
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration
BASE_MS = 1_700_000_000_000


async def _setup(kafka: KafkaSettings, topics: TopicSettings, group: str) -> None:
    """10 clicks at known times on partition 0, committed as fully processed by ``group``."""
    await ensure_topics(kafka, topics)
    producer = AIOKafkaProducer(**kafka.producer_kwargs())
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(topics.clicks, b"{}", key=b"u", partition=0, timestamp_ms=BASE_MS + n * 1000)
        for n in range(5):
            await producer.send_and_wait(changelog_topic(group), b"state", key=f"u{n}".encode(), partition=0)
        for n in range(3):
            await producer.send_and_wait(topics.crowd, b"lessons", key=b"w0", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topics.clicks, 0)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(10, "")})
    finally:
        await consumer.stop()


async def _committed(kafka: KafkaSettings, group: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        return (await admin.list_consumer_group_offsets(group, partitions=[tp]))[tp].offset
    finally:
        await admin.close()


def test_replay_to_timestamp_dry_run_then_earliest_with_state_rebuild(
        kafka_settings: KafkaSettings, topic_settings: TopicSettings, tmp_path) -> None:
    group = f"replay-{uuid.uuid4().hex[:6]}"
    settings = Settings(kafka=kafka_settings, topics=topic_settings, data_dir=tmp_path)
    tp = TopicPartition(topic_settings.clicks, 0)
    store = tmp_path / "workers" / "w0" / "v1" / "tables" / "user-state-0.db"  # where faust keeps it
    store.mkdir(parents=True)
    crowd_snapshot = tmp_path / "workers" / "w0" / "recstream-crowd"
    crowd_snapshot.write_bytes(b"counts")

    async def scenario() -> None:
        await ensure_topics(kafka_settings, topic_settings)
        admin = AIOKafkaAdminClient(**kafka_settings.client_kwargs())
        await admin.start()
        from aiokafka.admin import NewTopic
        # as faust creates a table's changelog: compacted, where Kafka refuses DeleteRecords
        await admin.create_topics([NewTopic(changelog_topic(group), 1, 1, topic_configs={"cleanup.policy": "compact"})])
        await admin.close()
        await _setup(kafka_settings, topic_settings, group)

        dry = await run_replay(settings, group, to_timestamp_s=(BASE_MS + 4000) / 1000, rebuild_state=False,
                               dry_run=True)
        assert dry["offsets"][topic_settings.clicks]["0"] == {"from": 10, "to": 4}
        assert await _committed(kafka_settings, group, tp) == 10  # dry run changed nothing

        await run_replay(settings, group, to_timestamp_s=(BASE_MS + 4000) / 1000, rebuild_state=False, dry_run=False)
        assert await _committed(kafka_settings, group, tp) == 4

        report = await run_replay(settings, group, to_timestamp_s=None, rebuild_state=True, dry_run=False)
        assert await _committed(kafka_settings, group, tp) == 0
        assert report["state"]["changelog_records_before"] == 5 and report["state"]["changelog_topic_deleted"]
        assert not store.exists() and not crowd_snapshot.exists()
        assert report["state"]["crowd_records_before"] == 3
        consumer = AIOKafkaConsumer(**kafka_settings.consumer_kwargs(), group_id=None)
        await consumer.start()
        try:
            assert changelog_topic(group) not in await consumer.topics()  # faust makes it anew, empty
            crowd = TopicPartition(topic_settings.crowd, 0)
            assert (await consumer.beginning_offsets([crowd]))[crowd] == 3  # the old lessons are gone
        finally:
            await consumer.stop()

    asyncio.run(scenario())


def test_replay_refuses_while_workers_are_running(kafka_settings: KafkaSettings, topic_settings: TopicSettings,
                                                  tmp_path) -> None:
    group = f"replay-{uuid.uuid4().hex[:6]}"
    settings = Settings(kafka=kafka_settings, topics=topic_settings, data_dir=tmp_path)

    async def scenario() -> None:
        await ensure_topics(kafka_settings, topic_settings)
        member = AIOKafkaConsumer(topic_settings.clicks, **kafka_settings.consumer_kwargs(), group_id=group)
        await member.start()
        try:
            await member.getmany(timeout_ms=2000)  # joins the group
            with pytest.raises(ReplayError, match="active member"):
                await run_replay(settings, group, to_timestamp_s=None, rebuild_state=False, dry_run=False)
        finally:
            await member.stop()

    asyncio.run(scenario())

"""Create recstream's topics with the right shape: partitions, and compaction for vectors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.errors import RecstreamError
from streams.settings import KafkaSettings, Settings, TopicSettings

log = logging.getLogger(__name__)


#: How long the compacted ``item-vectors`` keeps a delete: an index replica down for less
#: than this resumes from its snapshot (streams.snapshot); Kafka's default is one day.
TOMBSTONES_KEPT_S = 7 * 86_400


class TopicUnavailable(RecstreamError, LookupError):
    """A topic the cluster does not have (or cannot describe)."""


async def partitions_of(admin: AIOKafkaAdminClient, topics: list[str]) -> list[TopicPartition]:
    """Every partition of ``topics``, sorted, as the cluster describes them."""
    out = []
    for described in await admin.describe_topics(topics):
        if described.get("error_code", 0):
            raise TopicUnavailable(f"topic {described.get('topic')!r} is not available "
                                   f"(error {described['error_code']})")
        out.extend(TopicPartition(described["topic"], p["partition"]) for p in described["partitions"])
    return sorted(out)


def topic_specs(topics: TopicSettings) -> list[NewTopic]:
    """The topics recstream needs. ``item-vectors`` is compacted: it is the index's source of truth."""
    compacted = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
                 "delete.retention.ms": str(TOMBSTONES_KEPT_S * 1000)}
    specs = []
    for name in topics.all_names():
        specs.append(NewTopic(
            name=name,
            num_partitions=topics.partitions,
            replication_factor=topics.replication_factor,
            topic_configs=(compacted if name == topics.item_vectors else
                           {"retention.ms": str(int(topics.crowd_retention_s * 1000))} if name == topics.crowd
                           else {}),
        ))
    return specs


def state_changelog_configs(settings: Settings) -> dict[str, str]:
    """The user-state changelog's topic configs beyond faust's ``cleanup.policy=compact``: a
    forget replaces a state, and compaction removes the replaced ones within the configured
    lag (Kafka rolls the active segment for it: KIP-354)."""
    lag_ms = str(int(settings.state.changelog_compaction_lag_s * 1000))
    return {"max.compaction.lag.ms": lag_ms, "segment.ms": lag_ms}


#: ensure_topics is a process's first word with Kafka: an address that accepts connections
#: but does not speak Kafka (an HTTP port) would otherwise hold it for aiokafka's 40 s default.
FIRST_CONTACT_TIMEOUT_MS = 10_000


async def ensure_topics(kafka: KafkaSettings, topics: TopicSettings) -> list[str]:
    """Create the missing topics; return the names created. Existing topics are left alone."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(), request_timeout_ms=FIRST_CONTACT_TIMEOUT_MS)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in topic_specs(topics) if spec.name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:  # another worker won the race: fine
                pass
            log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()
    if missing:
        # Creation is asynchronous: a client that used a topic before its partitions had
        # leaders would log NotLeaderForPartition errors (and retry) on a normal start.
        await wait_for_leaders(kafka, [t.name for t in missing], topics.partitions)
    return [t.name for t in missing]


async def wait_for_leaders(kafka: KafkaSettings, names: list[str], partitions: int, timeout_s: float = 30.0) -> None:
    """Block until every partition of ``names`` has a leader."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(**kafka.client_kwargs())
    await client.bootstrap()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            cluster = await client.fetch_all_metadata()
            if all(cluster.leader_for_partition(TopicPartition(t, p)) not in (None, -1)
                   for t in names for p in range(partitions)):
                return
            await asyncio.sleep(0.1)
    finally:
        await client.close()
    raise RuntimeError(f"topics {names} had no leaders {timeout_s:.0f} s after they were created")


async def topic_config(kafka: KafkaSettings, topic: str, name: str) -> str | None:
    """One configuration value of a topic (its own or the broker's default); None when unreadable."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={name: None})])
        for *_, entries in response.resources:
            for entry in entries:
                if entry[0] == name:
                    return str(entry[1])
    except Exception as exc:  # noqa: BLE001 - the callers have a safe default
        log.warning("cannot read %s of %s (%s)", name, topic, exc)
    finally:
        await admin.close()
    return None


async def tombstones_kept_s(kafka: KafkaSettings, topic: str) -> float:
    """The topic's ``delete.retention.ms`` in seconds (Kafka's default, a day, when unreadable)."""
    value = await topic_config(kafka, topic, "delete.retention.ms")
    if value is None:
        log.warning("assuming %s keeps deletes for one day", topic)
        return 86_400.0
    return int(value) / 1000.0


async def wait_for_partitions(kafka: KafkaSettings, topic: str, timeout_s: float = 60.0) -> list[int]:
    """The topic's partition ids, once it exists (a consumer's own metadata only covers the
    topics it subscribed to, so ask the admin API)."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
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


async def whole_topic_reader(kafka: KafkaSettings, topic: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
    """A started consumer assigned every partition of ``topic``, in no group: for what every
    worker reads all of (the index replica's ``item-vectors``, the ``crowd``). The caller
    seeks and stops it."""
    partitions = await wait_for_partitions(kafka, topic)
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign(tps)
    return consumer, tps


async def read_ranges(consumer: AIOKafkaConsumer, ranges: Mapping[TopicPartition, tuple[int, int]], *,
                      idle_timeout_s: float = 120.0) -> list[ConsumerRecord]:
    """Every record of each partition from ``start`` up to (not including) ``end``, read with
    ``consumer`` (started, in no group; assigned these partitions here). Positions, not record
    offsets, say when a range is done: a transaction's marker is never delivered.
    ``TimeoutError`` when nothing is read for ``idle_timeout_s``."""
    todo = {tp: (start, end) for tp, (start, end) in ranges.items() if start < end}
    if not todo:
        return []
    consumer.assign(list(todo))
    for tp, (start, _) in todo.items():
        consumer.seek(tp, start)
    out: list[ConsumerRecord] = []
    deadline = time.monotonic() + idle_timeout_s
    while todo:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing of {sorted(todo)} could be read for {idle_timeout_s:g} s")
        for tp, messages in (await consumer.getmany(*todo, timeout_ms=500)).items():
            if tp in todo and messages:
                out.extend(m for m in messages if m.offset < todo[tp][1])
                deadline = time.monotonic() + idle_timeout_s  # it moves on
        for tp in [tp for tp in todo if await consumer.position(tp) >= todo[tp][1]]:
            del todo[tp]
    return out

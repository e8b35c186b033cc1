"""Create recstream's topics with the right shape: partitions, and compaction for vectors."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)


def topic_specs(topics: TopicSettings) -> list[NewTopic]:
    """The topics recstream needs. ``item-vectors`` is compacted: it is the index's source of truth."""
    compacted = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}
    specs = []
    for name in topics.all_names():
        specs.append(NewTopic(
            name=name,
            num_partitions=topics.partitions,
            replication_factor=topics.replication_factor,
            topic_configs=compacted if name == topics.item_vectors else {},
        ))
    return specs


async def ensure_topics(kafka: KafkaSettings, topics: TopicSettings) -> list[str]:
    """Create the missing topics; return the names created. Existing topics are left alone."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
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
        return [t.name for t in missing]
    finally:
        await admin.close()

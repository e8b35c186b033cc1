"""Reading a topic back in integration tests, with the product's own range reader."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.settings import KafkaSettings
from streams.topics import read_ranges, wait_for_partitions


def read_to_end(kafka: KafkaSettings, topic: str, **options: Any) -> list[Any]:
    """Every record of ``topic`` up to its end offsets as of now, read committed (recstream's
    isolation level) unless ``options`` say otherwise."""

    async def run() -> list[Any]:
        consumer = AIOKafkaConsumer(**{**kafka.consumer_kwargs(), **options}, group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in await wait_for_partitions(kafka, topic)]
            starts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
            return await read_ranges(consumer, {tp: (starts[tp], ends[tp]) for tp in tps})
        finally:
            await consumer.stop()

    return asyncio.run(run())

"""`recstream train --from-topics`: the sequence model learned from what the cluster's
producers sent (Apache Kafka), published where workers look."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka import AIOKafkaProducer

from streams.modelstore import ensure_model
from streams.sequence import SequenceModel, latest_dir
from streams.settings import KafkaSettings, ModelSettings, Settings, TopicSettings
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration
pytest.importorskip("torch")

TITLES = ["Rocket launch", "Moon walk", "Galaxy photographs", "Bread baking", "Onion soup", "Pasta sauce"]


async def _produce(kafka: KafkaSettings, topics: TopicSettings) -> int:
    await ensure_topics(kafka, topics)
    producer = AIOKafkaProducer(**kafka.producer_kwargs())
    await producer.start()
    clicks = 0
    try:
        for n, title in enumerate(TITLES):
            await producer.send_and_wait(topics.items, json.dumps({"item_id": f"i{n}", "title": title}).encode(),
                                         key=f"i{n}".encode())
        for u in range(8):
            for step in range(4):
                click = {"user_id": f"u{u}", "item_id": f"i{(u + step) % len(TITLES)}", "ts": 1_700_000_000 + 60 * step}
                await producer.send_and_wait(topics.clicks, json.dumps(click).encode(), key=f"u{u}".encode())
                clicks += 1
        await producer.send_and_wait(topics.clicks, b"{not json", key=b"u0")  # a worker dead-letters it
    finally:
        await producer.stop()
    return clicks


def test_train_reads_the_topics_and_publishes_a_model(kafka_settings: KafkaSettings, topic_settings: TopicSettings,
                                                      tmp_path) -> None:
    from export.train import train_command

    clicks = asyncio.run(_produce(kafka_settings, topic_settings))
    settings = Settings(kafka=kafka_settings, topics=topic_settings, data_dir=tmp_path,
                        model=ModelSettings(dir=ensure_model(Settings())))
    report = train_command(settings, from_topics=True, epochs=2, progress=False)
    assert report["clicks"] == clicks and report["users"] == 8 and report["items"] == len(TITLES)
    assert report["unreadable_records"] == {topic_settings.items: 0, topic_settings.clicks: 1}
    assert report["parity"]["passed"] and report["epochs_run"] == 2
    published = latest_dir(settings.sequence_dir)
    assert published is not None and SequenceModel.load(published).version == report["version"]

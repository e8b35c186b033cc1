"""Shared fixtures: a real Apache Kafka broker for the integration tier."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.brokers import ApacheKafkaBroker, LocalBroker, TansuBroker
from streams.settings import KafkaSettings, TopicSettings


def _cache_dir() -> Path:
    return Path(os.environ.get("RECSTREAM_DATA_DIR", Path.home() / ".cache" / "recstream"))


#: The session broker also listens with SASL_PLAINTEXT (PLAIN) for these users.
SASL_USERS = {"recstream": "t0p-s3cret-w0rd"}


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalBroker]:
    """Apache Kafka 4.x, single KRaft node on loopback, for the whole session.

    ``RECSTREAM_TEST_BROKER=tansu`` runs the tier on Tansu instead (local use only: CI runs
    Apache Kafka). Without Java the tier is skipped with a reason, never silently passed.
    """
    kind = os.environ.get("RECSTREAM_TEST_BROKER", "kafka")
    if kind == "tansu":
        broker: LocalBroker = TansuBroker()
    else:
        if shutil.which("java") is None:
            if os.environ.get("CI"):
                pytest.fail("CI must run the integration tier on Apache Kafka, but java is missing")
            pytest.skip("Apache Kafka needs java on PATH")
        broker = ApacheKafkaBroker(cache_dir=_cache_dir(), sasl_users=SASL_USERS)
    with broker:
        yield broker


@pytest.fixture
def kafka_settings(kafka_broker: LocalBroker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)


@pytest.fixture
def topic_settings() -> TopicSettings:
    """Fresh topic names per test, so tests never see each other's records."""
    suffix = uuid.uuid4().hex[:8]
    return TopicSettings.named(f"{{name}}-{suffix}", partitions=2)

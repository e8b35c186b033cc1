"""A worker on a SASL_PLAINTEXT listener (PLAIN): serves with the right password, stops with
one clear line on a wrong one, and never writes the password to its log, even at debug level."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.brokers import LocalBroker
from streams.modelstore import ensure_model
from streams.settings import KafkaSettings, Settings, TopicSettings
from streams.topics import ensure_topics
from tests.conftest import SASL_USERS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

USER, PASSWORD = next(iter(SASL_USERS.items()))


def _sasl(broker: LocalBroker, password: str) -> KafkaSettings:
    servers = getattr(broker, "sasl_bootstrap_servers", None)
    if not servers:
        pytest.skip("the session broker has no SASL listener (Tansu)")
    return KafkaSettings(bootstrap_servers=servers, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                         sasl_username=USER, sasl_password=password)


def _env(kafka: KafkaSettings, password: str, topics: TopicSettings, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    env.update({
        "RECSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "RECSTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT", "RECSTREAM_KAFKA__SASL_MECHANISM": "PLAIN",
        "RECSTREAM_KAFKA__SASL_USERNAME": USER, "RECSTREAM_KAFKA__SASL_PASSWORD": password,
        "RECSTREAM_APP_ID": f"recstream-sasl-{uuid.uuid4().hex[:6]}", "RECSTREAM_DATA_DIR": str(work),
        "RECSTREAM_MODEL__DIR": str(ensure_model(Settings())), "PYTHONUNBUFFERED": "1",
        **{f"RECSTREAM_TOPICS__{name.upper()}": str(value) for name, value in topics.model_dump().items()},
    })
    return env


async def _click_and_answer(kafka: KafkaSettings, topics: TopicSettings, timeout_s: float = 120.0) -> dict:
    producer = AIOKafkaProducer(**kafka.producer_kwargs(), acks="all")
    await producer.start()
    consumer = AIOKafkaConsumer(topics.recommendations, **kafka.consumer_kwargs(), group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        await producer.send_and_wait(topics.items, json.dumps({"item_id": "i1", "title": "Jazz piano"}).encode(),
                                     key=b"i1")
        await producer.send_and_wait(topics.items, json.dumps({"item_id": "i2", "title": "Jazz drums"}).encode(),
                                     key=b"i2")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            click = {"user_id": "u1", "item_id": "i1", "ts": time.time()}
            await producer.send_and_wait(topics.clicks, json.dumps(click).encode(), key=b"u1")
            batch = await consumer.getmany(timeout_ms=3000)
            for records in batch.values():
                return json.loads(records[0].value)
        raise AssertionError("no recommendation through the SASL listener")
    finally:
        await consumer.stop()
        await producer.stop()


def test_a_worker_on_sasl_serves_and_keeps_the_password_out_of_its_debug_log(
        kafka_broker: LocalBroker, topic_settings: TopicSettings, tmp_path: Path) -> None:
    kafka = _sasl(kafka_broker, PASSWORD)
    asyncio.run(ensure_topics(kafka, topic_settings))
    log_path = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "-v"],
                              env=_env(kafka, PASSWORD, topic_settings, tmp_path),
                              stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    try:
        rec = asyncio.run(_click_and_answer(kafka, topic_settings))
        assert rec["user_id"] == "u1"
    finally:
        worker.terminate()
        worker.wait(30)
    text = log_path.read_text(errors="replace")
    assert "DEBUG" in text, "the worker ran at debug level"
    assert PASSWORD not in text, "the SASL password reached the log"


def test_a_wrong_password_is_one_clear_line(kafka_broker: LocalBroker, topic_settings: TopicSettings,
                                            tmp_path: Path) -> None:
    kafka = _sasl(kafka_broker, "not-the-password")
    result = subprocess.run([sys.executable, "-m", "streams.cli", "worker"],
                            env=_env(kafka, "not-the-password", topic_settings, tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    [line] = [l for l in result.stderr.splitlines() if "recstream worker: error:" in l]
    assert "uthentication" in line, line
    assert "not-the-password" not in result.stderr + result.stdout


def test_sasl_and_protocol_settings_are_checked_together() -> None:
    with pytest.raises(ValueError, match="security_protocol is PLAINTEXT"):
        KafkaSettings(sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p")
    with pytest.raises(ValueError, match="needs RECSTREAM_KAFKA__SASL_USERNAME"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")

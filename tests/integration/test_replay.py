"""`recstream replay` moves a group's committed offsets on Apache Kafka (not Tansu: its
ListOffsets-by-timestamp and group OffsetFetch are broken: docs/architecture.md)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from streams.metrics import sample, scrape
from streams.replay import ReplayError, changelog_topic, run_replay
from streams.settings import KafkaSettings, Settings, TopicSettings
from streams.topics import ensure_topics
from tests.integration.topic_reads import read_to_end

pytestmark = pytest.mark.integration
#: An hour ago: records far older would be deleted by the topics' retention mid-test.
BASE_MS = int(time.time() * 1000) - 3_600_000


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


async def _committed(kafka: KafkaSettings, group: str, tp: TopicPartition, expected: int | None = None) -> int:
    """The group's committed offset; with ``expected``, once it is that (a transaction's
    offsets show once its markers are written, a moment after its commit returns)."""
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        for _ in range(50):
            offset = (await admin.list_consumer_group_offsets(group, partitions=[tp]))[tp].offset
            if expected is None or offset == expected:
                break
            await asyncio.sleep(0.2)
        return offset
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
        assert report["offsets"][topic_settings.clicks]["0"] == {"from": 4, "to": 0}
        assert topic_settings.items not in report["offsets"]  # a rebuild reads the vectors there are
        # the ten clicks ("{}") were rebuilt from offset 0: all dead letters, and committed past
        assert report["rebuild"]["clicks"] == 10 and report["rebuild"]["dead_letters"] == 10
        assert await _committed(kafka_settings, group, tp, expected=10) == 10
        assert report["state"]["changelog_records_before"] == 5 and report["state"]["changelog_topic_deleted"]
        assert not store.exists() and not crowd_snapshot.exists()
        assert report["state"]["crowd_records_before"] == 3
        consumer = AIOKafkaConsumer(**kafka_settings.consumer_kwargs(), group_id=None)
        await consumer.start()
        try:
            changelog = TopicPartition(changelog_topic(group), 0)
            assert changelog.topic in await consumer.topics()  # made anew by the rebuild: no user had a valid click
            assert (await consumer.beginning_offsets([changelog]))[changelog] == 0
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


# --------------------------------------------------------------------------- deterministic rebuild

def _produce_log(kafka: KafkaSettings, topics: TopicSettings
                 ) -> tuple[int, set[tuple[int, int]], set[tuple[int, int]]]:
    """Item vectors in three clusters, 400 clicks of 25 users (some bad), a forget of user-3
    halfway; return the number of clicks, the positions of the bad ones and those of user-3's
    clicks up to the forget."""
    from streams.records import ItemVector, encode_item_vector

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 16))
    items = [f"i{n}" for n in range(60)]

    async def run() -> tuple[int, set[tuple[int, int]], set[tuple[int, int]]]:
        await ensure_topics(kafka, topics)
        producer = AIOKafkaProducer(**kafka.producer_kwargs(), acks="all")
        await producer.start()
        try:
            for n, item in enumerate(items[:50]):  # ten come later, among the clicks
                vector = centres[n % 3] + 0.3 * rng.normal(size=16)
                record = ItemVector.from_array(item_id=item, model="test@1", vector=vector, title=item)
                await producer.send_and_wait(topics.item_vectors, encode_item_vector(record), key=item.encode(),
                                             timestamp_ms=BASE_MS + n)
            bad: set[tuple[int, int]] = set()
            forgotten: set[tuple[int, int]] = set()
            for n in range(400):
                user = f"user-{int(rng.integers(0, 25))}"
                ts_ms = BASE_MS + 10_000 + n * 50
                if n == 200:
                    await producer.send_and_wait(topics.user_control, json.dumps(
                        {"user_id": "user-3", "op": "forget"}).encode(), key=b"user-3", timestamp_ms=ts_ms)
                if n == 250:
                    for late in items[50:]:
                        vector = centres[int(late[1:]) % 3] + 0.3 * rng.normal(size=16)
                        record = ItemVector.from_array(item_id=late, model="test@1", vector=vector, title=late)
                        await producer.send_and_wait(topics.item_vectors, encode_item_vector(record),
                                                     key=late.encode(), timestamp_ms=ts_ms)
                known = items[:60] if n >= 250 else items[:50]
                item = "no-such" if n % 41 == 7 else known[int(rng.integers(0, len(known)))]
                value = b"not json" if n % 53 == 11 else json.dumps(
                    {"user_id": user, "item_id": item, "ts": ts_ms / 1000}).encode()
                meta = await producer.send_and_wait(topics.clicks, value, key=user.encode(), timestamp_ms=ts_ms)
                if item == "no-such" or value == b"not json":
                    bad.add((meta.partition, meta.offset))
                if user == "user-3" and n <= 200:
                    forgotten.add((meta.partition, meta.offset))
            return 400, bad, forgotten
        finally:
            await producer.stop()

    return asyncio.run(run())


def _replay_cli(kafka: KafkaSettings, topics: TopicSettings, group: str, data_dir: Path) -> dict:
    """``recstream replay --to-earliest --rebuild-state`` in its own process (so its own hash
    seed: a rebuild must not depend on one)."""
    env = {**os.environ, "RECSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "RECSTREAM_DATA_DIR": str(data_dir), "RECSTREAM_RECOMMEND__MAX_BATCH": "32",
           "RECSTREAM_RECOMMEND__RANKER_REFIT_EVERY": "100",
           **{f"RECSTREAM_TOPICS__{name.upper()}": str(value) for name, value in topics.model_dump().items()}}
    env.pop("PYTHONHASHSEED", None)
    done = subprocess.run([sys.executable, "-m", "streams.cli", "replay", "--group", group, "--to-earliest",
                           "--rebuild-state", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_rebuilds_give_the_same_recommendations(kafka_settings: KafkaSettings, topic_settings: TopicSettings,
                                                     tmp_path: Path) -> None:
    """Two ``replay --rebuild-state`` runs over the same log, each in its own process: every
    click answered once per rebuild (a recommendation, or a dead letter for a bad one; nothing
    for the clicks of a user forgotten later), the same lists (ids and order) click for click,
    one state per user in the changelog, and the group's offsets at the end of what was read."""
    group = f"rebuild-{uuid.uuid4().hex[:6]}"
    n_clicks, bad, forgotten = _produce_log(kafka_settings, topic_settings)
    reports = [_replay_cli(kafka_settings, topic_settings, group, tmp_path) for _ in range(2)]
    assert reports[0]["rebuild"]["clicks"] == n_clicks and reports[0]["rebuild"]["forgets"] == 1
    recs = [json.loads(m.value) for m in read_to_end(kafka_settings, topic_settings.recommendations)]
    letters = [json.loads(m.value) for m in read_to_end(kafka_settings, topic_settings.dead_letters)]
    runs: list[dict[tuple[int, int], dict]] = [{}, {}]
    for rec in recs:  # the first rebuild's come first in each partition
        trigger = (rec["trigger"]["partition"], rec["trigger"]["offset"])
        run = runs[0] if trigger not in runs[0] else runs[1]
        assert trigger not in run, f"click {trigger} answered three times"
        del rec["generated_at"]  # when it was written: the one field that may differ
        run[trigger] = rec
    assert set(runs[0]) == set(runs[1])
    assert len(runs[0]) == n_clicks - len(bad | forgotten) == reports[0]["rebuild"]["recommendations"]
    assert {(d["source"]["partition"], d["source"]["offset"]) for d in letters} == bad - forgotten
    assert len(letters) == 2 * len(bad - forgotten)
    assert reports[0]["rebuild"]["forgotten_clicks"] == len(forgotten) > 0  # nothing names them again
    assert not [t for t in runs[0] if t in forgotten]
    differ = [t for t in runs[0] if runs[0][t] != runs[1].get(t)]
    assert not differ, f"{len(differ)} of {len(runs[0])} records differ between the rebuilds, e.g. {differ[:3]}"
    assert all(rec["items"] for rec in runs[0].values()), "every click got a list"
    changelog = read_to_end(kafka_settings, changelog_topic(group))
    assert len({m.key for m in changelog}) == 25
    changelog = changelog[-25:]  # the second rebuild's (the first one's topic was deleted)
    tp = TopicPartition(topic_settings.clicks, 0)
    ends = asyncio.run(_end_offsets(kafka_settings, [TopicPartition(topic_settings.clicks, p)
                                                     for p in range(topic_settings.partitions)]))
    assert asyncio.run(_committed(kafka_settings, group, tp, expected=ends[tp])) == ends[tp]
    _a_worker_serves_on_from_the_rebuilt_states(kafka_settings, topic_settings, group, tmp_path, changelog, len(recs),
                                                set(runs[0]))


def _a_worker_serves_on_from_the_rebuilt_states(kafka: KafkaSettings, topics: TopicSettings, group: str,
                                                data_dir: Path, changelog: list, answered: int,
                                                triggers: set[tuple[int, int]]) -> None:
    """A worker started after the rebuild recovers the states from the changelog (which ends in
    the rebuild's transaction markers), answers no replayed click again, and serves a new
    click from the user's rebuilt state (none of the user's items offered again)."""
    from streams.brokers import free_port
    from streams.interest import decode_state

    user = b"user-5"
    [state] = [decode_state(m.value) for m in changelog if m.key == user]
    clicked = {event.item_id for event in state.recent}
    port = free_port()
    env = {**os.environ, "RECSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "RECSTREAM_APP_ID": group,
           "RECSTREAM_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1",
           **{f"RECSTREAM_TOPICS__{name.upper()}": str(value) for name, value in topics.model_dump().items()}}
    log = (data_dir / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--stages", "index,recommend",
                               "--metrics-port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while sample(scrape(port, timeout_s=1.0), "recstream_index_items") < 60 or not _ready(port):
            assert worker.poll() is None and time.monotonic() < deadline, (data_dir / "worker.log").read_text()[-3000:]
            time.sleep(0.3)

        async def click() -> None:
            producer = AIOKafkaProducer(**kafka.producer_kwargs(), acks="all")
            await producer.start()
            try:
                await producer.send_and_wait(topics.clicks, json.dumps(
                    {"user_id": "user-5", "item_id": "i1", "ts": BASE_MS / 1000 + 3_000}).encode(), key=user)
            finally:
                await producer.stop()

        asyncio.run(click())
        deadline = time.monotonic() + 60
        while len(recs := read_to_end(kafka, topics.recommendations)) <= answered:
            assert time.monotonic() < deadline, "the new click was not answered"
            time.sleep(0.5)
        assert len(recs) == answered + 1, "a replayed click was answered again"
        [new] = [rec for m in recs
                 if ((rec := json.loads(m.value))["trigger"]["partition"], rec["trigger"]["offset"]) not in triggers]
        assert new["user_id"] == "user-5" and new["items"]
        assert not clicked & {item["item_id"] for item in new["items"]}, "an item the user clicked was offered"
    finally:
        worker.terminate()
        worker.wait(30)


def _ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2.0) as response:
            return response.status == 200
    except OSError:
        return False


async def _end_offsets(kafka: KafkaSettings, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(), group_id=None)
    await consumer.start()
    try:
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()

"""The streaming recommender end to end: a real worker process on Apache Kafka.

One worker (encode + index + recommend, Qdrant Edge, RocksDB state, the real default
encoder) serves the whole module on fresh topics. Tests talk to it only through topics,
as producers and subscribers would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import threading
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.bench.latency import worker_steps
from streams.brokers import LocalBroker, free_port
from streams.metrics import sample, scrape
from streams.modelstore import ensure_model
from streams.settings import KafkaSettings, Settings, TopicSettings
from streams.topics import ensure_topics
from tests.integration.topic_reads import read_to_end

pytestmark = pytest.mark.integration

NOW_S = time.time()
SPACE = ["Rocket launch to the International Space Station", "Astronauts walk on the Moon",
         "A telescope photographs distant galaxies", "Mars rover finds ancient riverbeds",
         "Satellites orbit the Earth at night", "Spacecraft docking with an orbital station"]
COOKING = ["Slow-cooked tomato pasta sauce recipe", "How to bake sourdough bread at home",
           "Grilled vegetables with olive oil and herbs", "A classic French onion soup recipe",
           "Chocolate cake with espresso frosting", "Stir-fried noodles with garlic and ginger"]
JAZZ = ["Live jazz trio plays bebop standards", "Saxophone solos of the swing era",
        "Piano improvisation in a smoky jazz club", "Big band jazz orchestra concert",
        "Trumpet ballads from the cool jazz years", "Jazz drummers and their brush technique"]


class Pipeline:
    """Producer + subscriber helpers over one worker's topics."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, metrics_port: int, env: dict[str, str],
                 log_path: Path) -> None:
        self.kafka = kafka
        self.topics = topics
        self.metrics_port = metrics_port
        self.env = env
        self.log_path = log_path
        self.worker: subprocess.Popen[bytes] | None = None
        self.worker_args: list[str] = []

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--metrics-port", str(self.metrics_port),
             "--advertised-host", "127.0.0.1", *self.worker_args],
            env=self.env, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT)

    def stop_worker(self) -> None:
        if self.worker is None:
            return
        self.worker.terminate()
        try:
            self.worker.wait(30)
        except subprocess.TimeoutExpired:
            self.worker.kill()
        if self.worker.returncode not in (0, -15):
            print(self.log_path.read_text()[-5000:])
        self.worker = None

    def produce(self, topic: str, records: list[tuple[bytes | None, bytes | None]],
                **options: Any) -> list[tuple[int, int]]:
        """Send records in order; return their (partition, offset)."""

        async def run() -> list[tuple[int, int]]:
            producer = AIOKafkaProducer(**{**self.kafka.producer_kwargs(), **options}, acks="all")
            await producer.start()
            try:
                out = []
                for key, value in records:
                    meta = await producer.send_and_wait(topic, value, key=key)
                    out.append((meta.partition, meta.offset))
                return out
            finally:
                await producer.stop()

        return asyncio.run(run())

    # Records go as producers send them: UTF-8 JSON, non-ASCII text unescaped.
    def click(self, user_id: str, item_id: str, ts_s: float, **extra: Any) -> tuple[int, int]:
        value = json.dumps({"user_id": user_id, "item_id": item_id, "ts": ts_s, **extra}, ensure_ascii=False).encode()
        return self.produce(self.topics.clicks, [(user_id.encode(), value)])[0]

    def items(self, items: dict[str, str]) -> None:
        before = self.metric("recstream_items_indexed_total")
        self.produce(self.topics.items, [(i.encode(), json.dumps({"item_id": i, "title": t}, ensure_ascii=False).encode())
                                         for i, t in items.items()])
        self.wait_for(lambda: self.metric("recstream_items_indexed_total") >= before + len(items),
                      what=f"{len(items)} items indexed")

    def read(self, topic: str, until: Callable[[list[Any]], bool], timeout_s: float = 30.0) -> list[Any]:
        """Every message of ``topic`` from the start, once ``until(messages)`` holds."""

        async def run() -> list[Any]:
            consumer = AIOKafkaConsumer(topic, **self.kafka.consumer_kwargs(), group_id=None,
                                        auto_offset_reset="earliest", enable_auto_commit=False)
            await consumer.start()
            messages: list[Any] = []
            try:
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline:
                    for batch in (await consumer.getmany(timeout_ms=200)).values():
                        messages.extend(batch)
                    if until(messages):
                        return messages
                raise AssertionError(f"timed out reading {topic}: {len(messages)} messages")
            finally:
                await consumer.stop()

        return asyncio.run(run())

    def read_all(self, topic: str, **options: Any) -> list[Any]:
        """Every message of ``topic`` up to its end offsets as of now."""
        return read_to_end(self.kafka, topic, **options)

    def recommendations(self, triggers: list[tuple[int, int]],
                        timeout_s: float = 30.0) -> dict[tuple[int, int], list[dict]]:
        """The recommendations whose trigger is one of ``triggers`` (each may repeat)."""
        wanted = set(triggers)

        def found(messages: list[Any]) -> bool:
            return wanted <= {_trigger(json.loads(m.value)) for m in messages}

        out: dict[tuple[int, int], list[dict]] = {}
        for message in self.read(self.topics.recommendations, found, timeout_s=timeout_s):
            rec = json.loads(message.value)
            if _trigger(rec) in wanted:
                out.setdefault(_trigger(rec), []).append(rec)
        return out

    def metric(self, name: str) -> float:
        return sample(scrape(self.metrics_port, timeout_s=1.0), name)

    def probe(self, path: str) -> tuple[int, dict]:
        """(HTTP status, JSON body) of a worker endpoint; (0, {}) while nothing listens."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2.0) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())
        except OSError:
            return 0, {}

    def get(self, path: str) -> tuple[int, dict[str, str], dict]:
        """(status, headers, JSON body) of ``GET path`` on the worker, redirects not followed."""
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), json.loads(response.read())
        finally:
            connection.close()

    @staticmethod
    def wait_for(condition: Callable[[], bool], *, what: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")


def _trigger(rec: dict) -> tuple[int, int]:
    return rec["trigger"]["partition"], rec["trigger"]["offset"]


def _new_pipeline(broker: LocalBroker, work: Path, *, partitions: int = 2,
                  guarantee: str = "at_least_once") -> Pipeline:
    """Fresh topics and a worker environment (the worker is not started); with
    ``guarantee="exactly_once"`` the worker serves in transactions and the test reads
    committed records only."""
    model_dir = ensure_model(Settings())  # the real default encoder, exported once and cached
    suffix = uuid.uuid4().hex[:8]
    topics = TopicSettings.named(f"{{name}}-{suffix}", partitions=partitions)
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, processing_guarantee=guarantee)
    asyncio.run(ensure_topics(kafka, topics))
    metrics_port = free_port()
    env = {**os.environ, "RECSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "RECSTREAM_APP_ID": f"recstream-test-{suffix}", "RECSTREAM_DATA_DIR": str(work),
           "RECSTREAM_MODEL__DIR": str(model_dir), "RECSTREAM_LIMITS__MAX_TEXT_CHARS": "500",
           "RECSTREAM_RECOMMEND__K": "8", "RECSTREAM_RECOMMEND__UNKNOWN_ITEM_WAIT_S": "10", "PYTHONUNBUFFERED": "1",
           "RECSTREAM_KAFKA__PROCESSING_GUARANTEE": guarantee,
           **{f"RECSTREAM_TOPICS__{name.upper()}": str(value) for name, value in topics.model_dump().items()}}
    return Pipeline(kafka, topics, metrics_port, env, work / "worker.log")


def _topic_items() -> dict[str, str]:
    items = {f"space-{n}": t for n, t in enumerate(SPACE)}
    items |= {f"cook-{n}": t for n, t in enumerate(COOKING)}
    items |= {f"jazz-{n}": t for n, t in enumerate(JAZZ)}
    return items


@pytest.fixture(scope="module")
def pipeline(kafka_broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    pipe = _new_pipeline(kafka_broker, tmp_path_factory.mktemp("worker"))
    # The encoder as on a GPU (shape buckets, every shape warmed before the worker is ready;
    # off by default on the CPU): the items these tests encode all go through padded runs.
    pipe.env |= {"RECSTREAM_MODEL__SHAPE_BUCKETS": "on", "RECSTREAM_MODEL__TOKEN_BUCKETS": "[16, 64]"}
    pipe.start_worker()
    try:
        pipe.items(_topic_items())
        yield pipe
    finally:
        pipe.stop_worker()


def test_every_click_gets_one_recommendation_without_seen_items(pipeline: Pipeline) -> None:
    clicks = [("alice", "space-0"), ("bob", "cook-0"), ("alice", "space-1"), ("bob", "cook-1"),
              ("alice", "space-2"), ("carol", "jazz-0"), ("bob", "cook-2"), ("carol", "jazz-1")]
    triggers = [pipeline.click(user, item, NOW_S + n) for n, (user, item) in enumerate(clicks)]
    recs = pipeline.recommendations(triggers)
    assert all(len(recs[t]) == 1 for t in triggers), "exactly one recommendation per click"
    history: dict[str, list[str]] = {}
    for user, item in clicks:
        history.setdefault(user, []).append(item)
    for n, ((user, _), trigger) in enumerate(zip(clicks, triggers, strict=True)):
        # A user's clicks that land in one batch are answered from the state after the last
        # of them: each answer excludes at least what the user had seen by its own click.
        seen_by_then = {item for u, item in clicks[:n + 1] if u == user}
        [rec] = recs[trigger]
        assert rec["user_id"] == user and rec["model"].startswith("all-MiniLM-L6-v2@")
        ids = [i["item_id"] for i in rec["items"]]
        assert ids and len(ids) == len(set(ids)) <= 8
        assert not set(ids) & seen_by_then, "a seen item was recommended"
        for entry in rec["items"]:
            assert set(entry["because"]) <= set(history[user]), "reasons must be the user's own items"
            assert entry["source"] in {"interest", "session", "covisit", "trending"}
    # the text encoder understood the topics: alice (space) gets space first
    [last_alice] = recs[triggers[4]]
    assert last_alice["items"][0]["item_id"].startswith("space-")
    assert last_alice["items"][0]["because"]


def test_the_worker_says_where_a_clicks_time_goes(pipeline: Pipeline) -> None:
    before = scrape(pipeline.metrics_port)
    triggers = [pipeline.click("dora", item, NOW_S + n) for n, item in enumerate(("jazz-0", "jazz-1", "jazz-2"))]
    pipeline.recommendations(triggers)
    waited = "recstream_click_wait_seconds_count"
    pipeline.wait_for(lambda: pipeline.metric(waited) >= sample(before, waited) + 3, what="the batches counted",
                      timeout_s=10.0)
    after = scrape(pipeline.metrics_port)
    assert sample(after, waited) - sample(before, waited) == 3, "every click's wait counted once"
    steps = worker_steps(before, after)
    assert steps is not None and 0 < steps["click_wait"] < 30_000  # ms since each click was produced
    assert steps["batch_read"] > 0 and steps["batch_rank"] > 0 and steps["batch_send"] > 0
    assert 1 <= steps["clicks_per_batch"] <= 3
    assert worker_steps(after, after) is None, "nothing served in between"


def test_a_new_item_is_recommendable_at_once(pipeline: Pipeline) -> None:
    for n in range(3):
        pipeline.click("dave", f"space-{n + 3}", NOW_S + 100 + n)
    pipeline.items({"space-new": "Astronaut crew launches on a rocket to the space station"})
    trigger = pipeline.click("dave", "space-0", NOW_S + 110)
    [rec] = pipeline.recommendations([trigger])[trigger]
    assert "space-new" in [i["item_id"] for i in rec["items"]]


def test_the_encoder_warmed_its_shapes_before_serving(pipeline: Pipeline) -> None:
    # token buckets 16, 64 and the model's 256; rows 1, 2, 4, 8 (the CPU's runs take 8 texts)
    assert re.search(r"encoder \S+ on CPUExecutionProvider \(\w+, 12 shapes warmed in", pipeline.log_path.read_text())


def test_deleted_items_are_never_recommended(pipeline: Pipeline) -> None:
    pipeline.items({"jazz-extra": "Late night jazz quartet with upright bass and saxophone"})
    pipeline.produce(pipeline.topics.items, [(b"jazz-extra", b'{"item_id": "jazz-extra", "op": "delete"}')])
    time.sleep(1.0)  # the tombstone travels items -> encoder -> item-vectors -> index
    triggers = [pipeline.click("erin", f"jazz-{n}", NOW_S + 200 + n) for n in range(4)]
    for [rec] in pipeline.recommendations(triggers).values():
        assert "jazz-extra" not in [i["item_id"] for i in rec["items"]]


def test_forget_drops_state_for_good(pipeline: Pipeline) -> None:
    """A forget replaces the user's state, locally and in the changelog (whose superseded
    records Kafka compacts away within the configured lag); a click made before the forget
    but processed after it (clicks and forgets travel on different topics) changes nothing."""
    from streams.interest import decode_state

    for n in range(3):
        pipeline.click("frank", f"cook-{n}", NOW_S + 300 + n)
    forgets = pipeline.metric("recstream_users_forgotten_total")
    pipeline.produce(pipeline.topics.user_control, [(b"frank", b'{"user_id": "frank", "op": "forget"}')])
    pipeline.wait_for(lambda: pipeline.metric("recstream_users_forgotten_total") >= forgets + 1,
                      what="forget applied")
    late = pipeline.click("frank", "cook-3", time.time() - 60)  # made a minute before the forget
    [rec] = pipeline.recommendations([late])[late]
    assert not {b for i in rec["items"] for b in i["because"]}, "nothing of frank's history is left"
    status, _, pulled = pipeline.get("/users/frank/recommendations")
    assert status == 200 and not pulled["personalised"], "the late click did not bring frank back"

    trigger = pipeline.click("frank", "jazz-3", time.time() + 1)  # after the forget: a fresh start
    [rec] = pipeline.recommendations([trigger])[trigger]
    assert {b for i in rec["items"] for b in i["because"]} <= {"jazz-3"}

    suffix = pipeline.topics.clicks.split("-")[-1]
    changelog = f"recstream-test-{suffix}-user-state-changelog"
    messages = pipeline.read(changelog, lambda ms: any(m.key == b"frank" and m.value is not None
                                                       and decode_state(m.value).clicks == 0 for m in ms))
    marker = next(decode_state(m.value) for m in messages if m.key == b"frank" and decode_state(m.value).clicks == 0)
    assert not marker.recent and not marker.interests and marker.forgotten_at_s > NOW_S

    async def changelog_configs() -> dict[str, str]:
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        admin = AIOKafkaAdminClient(**pipeline.kafka.client_kwargs())
        await admin.start()
        try:
            [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, changelog)])
            return {entry[0]: entry[1] for *_, entries in response.resources for entry in entries}
        finally:
            await admin.close()

    configs = asyncio.run(changelog_configs())
    assert configs["max.compaction.lag.ms"] == configs["segment.ms"] == str(86_400_000)
    assert configs["cleanup.policy"] == "compact"


def test_a_click_that_overtakes_its_item_waits_for_it(pipeline: Pipeline) -> None:
    """Items and clicks travel on different topics: a click may arrive before its item is
    indexed. It is held (up to RECSTREAM_RECOMMEND__UNKNOWN_ITEM_WAIT_S) and answered once the
    item arrives, not dead-lettered."""
    trigger = pipeline.click("hana", "late-jazz", NOW_S + 450)
    pipeline.wait_for(lambda: pipeline.metric("recstream_clicks_held") >= 1, what="the click held")
    pipeline.items({"late-jazz": "A late night jazz piano trio recording"})
    [rec] = pipeline.recommendations([trigger])[trigger]
    assert rec["user_id"] == "hana" and rec["items"]
    assert "late-jazz" not in [i["item_id"] for i in rec["items"]], "the clicked item counts as seen"
    letters = pipeline.read_all(pipeline.topics.dead_letters)
    assert not [m for m in letters if (json.loads(m.value)["source"]["partition"],
                                       json.loads(m.value)["source"]["offset"]) == trigger
                and json.loads(m.value)["source"]["topic"] == pipeline.topics.clicks]


def test_a_service_pulls_a_users_list_and_similar_items(pipeline: Pipeline) -> None:
    """On page load, before any click: the user's list now (trending for a stranger), and
    items like an item; bad requests are 4xx with a reason."""
    triggers = [pipeline.click("ivy", f"space-{n}", NOW_S + 500 + n) for n in range(3)]
    pipeline.recommendations(triggers)  # the clicks are applied
    status, _, body = pipeline.get("/users/ivy/recommendations?k=5")
    assert status == 200 and body["user_id"] == "ivy" and body["personalised"]
    ids = [i["item_id"] for i in body["items"]]
    assert 0 < len(ids) <= 5 and not {"space-0", "space-1", "space-2"} & set(ids), "seen items are left out"
    assert ids[0].startswith("space-") and body["items"][0]["because"]
    assert all(0.0 <= i["score"] <= 1.0 for i in body["items"])
    assert body["models"]["encoder"] == body["model"] and body["models"]["ranker"].startswith("fusion@")
    again = pipeline.get("/users/ivy/recommendations?k=5")[2]
    assert [i["item_id"] for i in again["items"]] == ids, "a pull changes nothing"

    status, _, stranger = pipeline.get("/users/%E9%99%8C%E7%94%9F%E4%BA%BA/recommendations")  # 陌生人
    assert status == 200 and stranger["user_id"] == "陌生人" and not stranger["personalised"]
    assert stranger["items"] and {i["source"] for i in stranger["items"]} == {"trending"}

    status, _, similar = pipeline.get("/items/jazz-0/similar?k=3")
    assert status == 200 and len(similar["items"]) == 3
    assert "jazz-0" not in [i["item_id"] for i in similar["items"]]
    assert all("jazz" in i["item_id"] for i in similar["items"]), similar

    assert pipeline.get("/items/no-such-item/similar")[0] == 404
    assert pipeline.get("/users/ivy/recommendations?k=0")[0] == 400
    assert pipeline.get("/users/ivy/recommendations?k=many")[0] == 400
    assert pipeline.get("/users/ivy")[0] == 404


BAD_CLICKS = {
    "not_json": (b"u-bad", b"{not json"),
    "missing_field": (b"u-bad", b'{"item_id": "space-0", "ts": 1700000000}'),
    "unknown_item": (b"u-bad", b'{"user_id": "u-bad", "item_id": "no-such-item", "ts": 1700000000}'),
    "wrong_type": (b"u-bad", b'{"user_id": "u-bad", "item_id": "space-0", "ts": "yesterday"}'),
    "unknown_event": (b"u-bad", b'{"user_id": "u-bad", "item_id": "space-0", "ts": 1700000000, "event": "zap"}'),
    "key_mismatch": (b"someone-else", b'{"user_id": "u-bad", "item_id": "space-0", "ts": 1700000000}'),
}


def test_bad_input_goes_to_dead_letters_and_the_worker_keeps_going(pipeline: Pipeline) -> None:
    bad_positions = pipeline.produce(pipeline.topics.clicks, list(BAD_CLICKS.values()))
    oversize = json.dumps({"item_id": "huge", "title": "x" * 600}).encode()
    [oversize_position] = pipeline.produce(pipeline.topics.items, [(b"huge", oversize)])
    good = pipeline.click("grace", "cook-3", NOW_S + 400)

    expected = {("clicks", p): reason for p, reason in zip(bad_positions, BAD_CLICKS, strict=True)}
    expected[("items", oversize_position)] = "oversize"

    def source(letter: dict) -> tuple[str, tuple[int, int]]:
        kind = "clicks" if letter["source"]["topic"] == pipeline.topics.clicks else "items"
        return kind, (letter["source"]["partition"], letter["source"]["offset"])

    messages = pipeline.read(pipeline.topics.dead_letters,
                             lambda ms: set(expected) <= {source(json.loads(m.value)) for m in ms})
    letters = {source(json.loads(m.value)): json.loads(m.value) for m in messages}
    for where, reason in expected.items():
        assert letters[where]["reason"] == reason, (where, letters[where])
        assert letters[where]["raw"] and letters[where]["error"]
    assert pipeline.recommendations([good])[good], "the worker kept serving after bad input"
    # input = output + dead letters, for the bad clicks: none of them produced a recommendation
    recs = pipeline.read(pipeline.topics.recommendations, lambda ms: True)
    assert not {_trigger(json.loads(m.value)) for m in recs} & set(bad_positions)


POISON = {  # reason -> value: records a careless producer sends
    "null_value": None,
    "too_deep": b"[" * 100_000 + b"]" * 100_000,
    "oversize": b'{"title": "' + b"x" * 5_000_000 + b'"}',  # 5 MB; gzip makes it a small batch the broker takes
    "not_json": b"\x00\x01 binary",
}


def test_poison_records_on_every_topic_are_dead_letters_and_take_nothing_down(pipeline: Pipeline) -> None:
    """Each poison kind on each input topic, between valid records: every valid record is
    served, every poison one is a dead letter with its reason, and nothing else happens."""
    topics = pipeline.topics
    valid = {
        topics.items: lambda n: (f"poison-item-{n}".encode(),
                                 json.dumps({"item_id": f"poison-item-{n}", "title": f"Jazz record {n}"}).encode()),
        topics.clicks: lambda n: (b"poison-user", json.dumps({"user_id": "poison-user", "item_id": f"jazz-{n}",
                                                             "ts": NOW_S + 700 + n}).encode()),
        topics.user_control: lambda n: (f"poison-gone-{n}".encode(),
                                        json.dumps({"user_id": f"poison-gone-{n}", "op": "forget"}).encode()),
    }
    indexed = pipeline.metric("recstream_items_indexed_total")
    forgotten = pipeline.metric("recstream_users_forgotten_total")
    expected: dict[tuple[str, int, int], str] = {}
    good: dict[str, list[tuple[int, int]]] = {}
    for topic, make in valid.items():
        records: list[tuple[bytes | None, bytes | None]] = []
        for n, value in enumerate(POISON.values()):
            records += [make(n), (make(n)[0], value)]
        records.append(make(len(POISON)))
        positions = pipeline.produce(topic, records, compression_type="gzip", max_request_size=8_000_000)
        good[topic] = positions[0::2]
        for (partition, offset), reason in zip(positions[1::2], POISON, strict=True):
            expected[(topic, partition, offset)] = reason

    def source(letter: dict) -> tuple[str, int, int]:
        return letter["source"]["topic"], letter["source"]["partition"], letter["source"]["offset"]

    messages = pipeline.read(topics.dead_letters, lambda ms: set(expected) <= {source(json.loads(m.value)) for m in ms})
    letters = {source(json.loads(m.value)): json.loads(m.value) for m in messages}
    for where, reason in expected.items():
        assert letters[where]["reason"] == reason, (where, letters[where])
        if reason == "oversize":
            assert letters[where]["size"] > 5_000_000 and letters[where]["truncated"]
            assert len(letters[where]["raw"]) <= 4096
    # every valid record was served: clicks answered, items indexed, users forgotten
    recs = pipeline.recommendations(good[topics.clicks])
    assert all(len(recs[t]) == 1 for t in good[topics.clicks])
    pipeline.wait_for(lambda: pipeline.metric("recstream_items_indexed_total") >= indexed + len(good[topics.items]),
                      what="the valid items indexed", timeout_s=60)
    pipeline.wait_for(lambda: pipeline.metric("recstream_users_forgotten_total")
                      >= forgotten + len(good[topics.user_control]), what="the valid forgets applied", timeout_s=60)
    # input = output + dead letters: no poison record produced anything but its letter
    answered = {_trigger(json.loads(m.value)) for m in pipeline.read_all(topics.recommendations)}
    assert not answered & {(p, o) for (t, p, o) in expected if t == topics.clicks}
    vectors = {m.key for m in pipeline.read_all(topics.item_vectors)}
    assert {f"poison-item-{n}".encode() for n in range(len(POISON) + 1)} <= vectors
    assert pipeline.worker is not None and pipeline.worker.poll() is None, "the worker is alive"
    assert pipeline.metric("recstream_items_indexed_total") == indexed + len(good[topics.items])


CODECS = ("gzip", "snappy", "lz4", "zstd")


def _kcat(pipeline: Pipeline, topic: str, codec: str, lines: list[str]) -> None:
    """Produce ``key<TAB>value`` lines with kcat (librdkafka: a client no one here wrote)."""
    subprocess.run(["kcat", "-P", "-b", pipeline.kafka.bootstrap_servers, "-t", topic, "-K", "\t",
                    "-z", codec, "-X", "linger.ms=50"],
                   input="\n".join(lines).encode() + b"\n", check=True, timeout=60)


@pytest.mark.skipif(shutil.which("kcat") is None and not os.environ.get("CI"),
                    reason="kcat (Debian package kcat) is not installed; .ci/run installs it")
def test_every_compression_codec_of_a_foreign_client_is_read(pipeline: Pipeline) -> None:
    """Production producers compress (librdkafka and the Java client alike): items, clicks and
    user-control records in gzip, snappy, lz4 and zstd batches are all served, none lost."""
    indexed = pipeline.metric("recstream_items_indexed_total")
    forgotten = pipeline.metric("recstream_users_forgotten_total")
    for codec in CODECS:
        _kcat(pipeline, pipeline.topics.items, codec,
              [f"{codec}-item\t" + json.dumps({"item_id": f"{codec}-item", "title": f"A {codec} jazz record"})])
    pipeline.wait_for(lambda: pipeline.metric("recstream_items_indexed_total") >= indexed + len(CODECS),
                      what="items from every codec indexed", timeout_s=60)
    for n, codec in enumerate(CODECS):
        user = f"codec-{codec}"
        _kcat(pipeline, pipeline.topics.clicks, codec,
              [f"{user}\t" + json.dumps({"user_id": user, "item_id": item, "ts": NOW_S + 450 + n})
               for item in (f"{codec}-item", "jazz-0", "jazz-1")])
        _kcat(pipeline, pipeline.topics.user_control, codec,
              [f"gone-{codec}\t" + json.dumps({"user_id": f"gone-{codec}", "op": "forget"})])
    users = {f"codec-{codec}" for codec in CODECS}
    triggers = [(m.partition, m.offset) for m in pipeline.read_all(pipeline.topics.clicks)
                if m.key is not None and m.key.decode() in users]
    assert len(triggers) == 3 * len(CODECS)
    recs = pipeline.recommendations(triggers)
    assert all(recs[t] for t in triggers), "every compressed click was answered"
    pipeline.wait_for(lambda: pipeline.metric("recstream_users_forgotten_total") >= forgotten + len(CODECS),
                      what="forgets from every codec applied", timeout_s=60)
    assert pipeline.worker is not None and pipeline.worker.poll() is None, "the worker is alive"


def test_a_restarted_worker_reopens_its_state(pipeline: Pipeline) -> None:
    triggers = [pipeline.click("heidi", f"jazz-{n}", NOW_S + 500 + n) for n in range(3)]
    pipeline.recommendations(triggers)
    pipeline.stop_worker()
    log_from = pipeline.log_path.stat().st_size
    pipeline.start_worker()  # RocksDB store: local state reopens, the changelog tail is replayed
    trigger = pipeline.click("heidi", "jazz-3", NOW_S + 510)
    [rec] = pipeline.recommendations([trigger], timeout_s=120)[trigger]
    # What it learned from everyone's clicks came back too (the crowd snapshot of the stop).
    restored = re.search(r"crowd restored from \S+: co-visitation rows for (\d+) items",
                         pipeline.log_path.read_text()[log_from:])
    assert restored and int(restored.group(1)) > 0
    ids = [i["item_id"] for i in rec["items"]]
    assert not {"jazz-0", "jazz-1", "jazz-2", "jazz-3"} & set(ids), "the seen set survived the restart"
    assert {b for i in rec["items"] for b in i["because"]} & {"jazz-0", "jazz-1", "jazz-2"}


def test_a_killed_worker_resumes_its_index_and_catches_up_on_what_came_after(pipeline: Pipeline) -> None:
    """SIGKILL: no shutdown snapshot. The restart resumes from the last one written (at the
    clean stop above, or at the catch-up after it) and re-reads what came after it: one new
    item, one deleted item."""
    pipeline.items({"space-late": "Astronauts repair a satellite on a spacewalk"})
    pipeline.produce(pipeline.topics.items, [(b"space-new", b'{"item_id": "space-new", "op": "delete"}')])
    pipeline.read(pipeline.topics.item_vectors,
                  lambda ms: any(m.key == b"space-new" and m.value is None for m in ms))
    pipeline.worker.kill()
    pipeline.worker.wait(30)
    log_from = pipeline.log_path.stat().st_size
    pipeline.start_worker()
    triggers = [pipeline.click("ivan", f"space-{n}", NOW_S + 600 + n) for n in range(4)]
    recs = pipeline.recommendations(triggers, timeout_s=120)
    assert "index replica resumed from" in pipeline.log_path.read_text()[log_from:]
    offered = [i["item_id"] for t in triggers for [rec] in [recs[t]] for i in rec["items"]]
    assert "space-late" in offered, "an item indexed after the last snapshot is back after the crash"
    assert "space-new" not in offered, "an item deleted after the last snapshot stays deleted"


def test_the_worker_answers_its_probes(pipeline: Pipeline) -> None:
    status, body = pipeline.probe("/healthz")
    assert status == 200 and body["alive"]
    assert body["loop_stalled_s"] is not None and body["loop_stalled_s"] < 5, "the event loop's heartbeat beats"
    status, body = pipeline.probe("/readyz")
    assert status == 200 and body["index"] == "caught_up" and body["group"] == "joined"
    assert body["assigned_partitions"] > 0
    assert pipeline.probe("/nope")[0] == 404, "only /metrics, /healthz and /readyz are served"


def _two_workers(broker: LocalBroker, tmp: pytest.TempPathFactory, first_dir: str,
                 second_dir: str) -> tuple[Pipeline, Pipeline]:
    """A worker with every stage on fresh topics, and a second one (index + recommend) in its
    own data directory, sharing its topics and group; neither is started."""
    first = _new_pipeline(broker, tmp.mktemp(first_dir))
    work = tmp.mktemp(second_dir)
    second = Pipeline(first.kafka, first.topics, free_port(), {**first.env, "RECSTREAM_DATA_DIR": str(work)},
                      work / "worker.log")
    second.worker_args = ["--stages", "index,recommend", "--name", "w1"]
    return first, second


def test_the_worker_learns_its_ranker_from_the_stream(kafka_broker: LocalBroker,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """Users click what they were offered; after a few answered recommendations the worker
    refits its ranker (off the event loop) and its lists name the learned model."""
    pipe = _new_pipeline(kafka_broker, tmp_path_factory.mktemp("learner"))
    pipe.env["RECSTREAM_RECOMMEND__RANKER_REFIT_EVERY"] = "4"
    pipe.start_worker()
    try:
        pipe.items(_topic_items())
        topics = ("space", "cook", "jazz")
        users = {f"learner-{n}": f"{topics[n % 3]}-{n // 3}" for n in range(9)}
        rankers: list[str] = []
        deadline = time.monotonic() + 90  # the first fit imports scikit-learn, in a thread, as batches go on
        step = 0
        while users and not (rankers and rankers[-1].startswith("linear@")) and time.monotonic() < deadline:
            step += 1
            for user, item in list(users.items()):
                [rec] = _one(pipe, user, item, NOW_S + 10 * step)
                rankers.append(rec["models"]["ranker"])
                if rec["items"]:
                    users[user] = rec["items"][0]["item_id"]  # next: the item offered first
                else:  # seen the whole (small) catalogue
                    del users[user]
        assert rankers[0].startswith("fusion@"), "the hand-tuned blend ranks until the first fit"
        assert rankers[-1].startswith("linear@"), f"the ranker was never refit: {rankers}"
        assert "ranker refit from the stream" in pipe.log_path.read_text()
        _a_published_sequence_model_is_picked_up(pipe)
    finally:
        pipe.stop_worker()


def _a_published_sequence_model_is_picked_up(pipe: Pipeline) -> None:
    """``recstream train``'s publishing step into the worker's sequence root while it runs:
    from its next poll on, lists name the model, without a restart."""
    pytest.importorskip("torch")
    from encoders.item_encoder import ItemEncoder
    from export.sequence_export import train_and_export
    from export.sequence_train import TrainConfig
    from streams.records import Click

    items = _topic_items()
    vectors = ItemEncoder.load(Path(pipe.env["RECSTREAM_MODEL__DIR"])).encode(list(items.values()))
    walks = [Click(user_id=f"walker-{t}", item_id=f"{t}-{n}", ts_s=NOW_S + n) for t in ("space", "cook", "jazz")
             for n in range(6)]
    model, *_ = train_and_export(walks, dict(zip(items, vectors, strict=True)),
                                   Path(pipe.env["RECSTREAM_DATA_DIR"]) / "models" / "sequence",
                                   config=TrainConfig(dim=16, max_len=8, layers=1, epochs=5))
    seen: list[str | None] = []

    def uses_it() -> bool:
        [rec] = _one(pipe, "sequence-fan", f"jazz-{len(seen) % 6}", NOW_S + 1000 + len(seen))
        seen.append(rec["models"].get("sequence"))
        return seen[-1] == model.version

    pipe.wait_for(uses_it, what=f"the worker to rank with {model.version}", timeout_s=60)
    status, _, models = pipe.get("/models")
    assert status == 200 and models["models"]["sequence"] == model.version
    assert models["sequence"]["trained_on"]["clicks"] == len(walks) and models["sequence"]["parity"]["passed"]
    assert "sequence" in models["ranker_weights"], "the learned ranker's weights, by feature"


def _one(pipe: Pipeline, user: str, item: str, ts_s: float) -> list[dict]:
    trigger = pipe.click(user, item, ts_s)
    return pipe.recommendations([trigger])[trigger]


def test_two_workers_share_the_partitions(kafka_broker: LocalBroker,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """A second worker (index + recommend only) rebuilds its replica and takes half the clicks."""
    first, second = _two_workers(kafka_broker, tmp_path_factory, "first", "second")
    first.start_worker()
    try:
        first.items(_topic_items())
        second.start_worker()
        # /readyz: 503 (or nothing listening yet) until its replica holds every item and it
        # has joined the group, then 200.
        seen: list[int] = []
        while (status := second.probe("/readyz")[0]) != 200:
            seen.append(status)
            assert len(seen) < 600, f"the second worker never became ready: {set(seen)}"
            time.sleep(0.2)
        assert set(seen) <= {0, 503}
        assert second.metric("recstream_items_indexed_total") >= len(_topic_items()), "ready before caught up"
        assert second.probe("/healthz")[0] == 200
        users = [f"user-{n}" for n in range(12)]  # keys spread over both partitions
        deadline = time.monotonic() + 120
        while second.metric("recstream_clicks_total") == 0:  # the group has rebalanced onto both
            assert time.monotonic() < deadline, "the second worker never got a partition"
            for user in users:
                first.click(user, "jazz-5", NOW_S)
            time.sleep(1.0)
        time.sleep(2.0)  # let the probes drain before counting
        before = [first.metric("recstream_clicks_total"), second.metric("recstream_clicks_total")]
        triggers = [first.click(user, f"space-{n % 6}", NOW_S + 10 + n) for n, user in enumerate(users)]
        recs = first.recommendations(triggers)
        assert all(len(recs[t]) == 1 for t in triggers), "exactly one recommendation per click"
        assert {p for p, _ in triggers} == {0, 1}
        first.wait_for(lambda: first.metric("recstream_clicks_total") + second.metric("recstream_clicks_total")
                       >= sum(before) + len(users), what="both workers' counters")
        done = [first.metric("recstream_clicks_total") - before[0],
                second.metric("recstream_clicks_total") - before[1]]
        assert sum(done) == len(users) and min(done) > 0, f"clicks per worker: {done}"
        # The pull API: the worker that owns a user's partition answers, the other redirects to it.
        for user in users:
            answers = {pipe.metrics_port: pipe.get(f"/users/{user}/recommendations?k=3") for pipe in (first, second)}
            assert sorted(status for status, _, _ in answers.values()) == [200, 307], answers
            [(owner, (_, _, body))] = [(port, a) for port, a in answers.items() if a[0] == 200]
            [(_, headers, _)] = [a for a in answers.values() if a[0] == 307]
            assert headers["Location"] == f"http://127.0.0.1:{owner}/users/{user}/recommendations?k=3"
            assert body["personalised"] and 0 < len(body["items"]) <= 3
    finally:
        second.stop_worker()
        first.stop_worker()


# --------------------------------------------------------------------------- batched click path


def _stream_clicks(pipe: Pipeline, clicks: list[tuple[str, bytes]], rate: float) -> list[tuple[int, int]]:
    """Produce ``(user, value)`` clicks at ``rate``/s (sends not awaited one by one, as a
    real producer batches); return each one's (partition, offset), in order."""

    async def run() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(**pipe.kafka.producer_kwargs(), acks="all")
        await producer.start()
        try:
            futures = []
            started = time.monotonic()
            for n, (user, value) in enumerate(clicks):
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                futures.append(await producer.send(pipe.topics.clicks, value, key=user.encode()))
            return [((meta := await f).partition, meta.offset) for f in futures]
        finally:
            await producer.stop()

    return asyncio.run(run())


def _answers(pipe: Pipeline, sent: int, timeout_s: float = 180.0) -> tuple[dict[tuple[int, int], list[dict]],
                                                                         dict[tuple[int, int], int]]:
    """Every recommendation by trigger and every dead letter by source, once ``sent`` clicks
    are all answered one way or the other."""
    recs: dict[tuple[int, int], list[dict]] = {}
    letters: dict[tuple[int, int], int] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        recs.clear()
        letters.clear()
        for m in pipe.read_all(pipe.topics.recommendations):
            rec = json.loads(m.value)
            recs.setdefault(_trigger(rec), []).append(rec)
        for m in pipe.read_all(pipe.topics.dead_letters):
            source = json.loads(m.value)["source"]
            if source["topic"] == pipe.topics.clicks:
                key = (source["partition"], source["offset"])
                letters[key] = letters.get(key, 0) + 1
        if len(recs) + len(letters) >= sent or time.monotonic() > deadline:
            return recs, letters
        time.sleep(1.0)


def _clicks_with_bad_ones(items: list[str], n_clicks: int = 3000) -> tuple[list[tuple[str, bytes]], set[int]]:
    """Clicks of 60 users on ``items``, one in 97 on an item no one described (a dead letter
    after its wait, never a lost click); and the indices of those."""
    rng = np.random.default_rng(5)
    clicks: list[tuple[str, bytes]] = []
    bad: set[int] = set()
    for n in range(n_clicks):
        user = f"u{int(rng.integers(0, 60))}"
        item = "no-such" if n % 97 == 13 else items[int(rng.integers(0, len(items)))]
        if item == "no-such":
            bad.add(n)
        clicks.append((user, json.dumps({"user_id": user, "item_id": item, "ts": NOW_S + n}).encode()))
    return clicks, bad


def _killed_under_load(pipe: Pipeline) -> tuple[list[tuple[int, int]], set[int], dict[tuple[int, int], list[dict]],
                                                dict[tuple[int, int], int]]:
    """Items, then 3000 clicks at 400/s (some bad) with a SIGKILL 4 s in and a restart; checks
    that every valid click got a recommendation and input = recommendations + dead letters.
    Returns the clicks' positions, the bad ones' indices, the answers and dead letters."""
    pipe.start_worker()
    pipe.items(_topic_items())
    clicks, bad = _clicks_with_bad_ones(list(_topic_items()))
    killer = threading.Timer(4.0, pipe.worker.kill)
    killer.start()
    positions = _stream_clicks(pipe, clicks, rate=400.0)
    killer.join()
    pipe.worker.wait(30)
    pipe.start_worker()
    recs, letters = _answers(pipe, len(clicks))
    good = [p for n, p in enumerate(positions) if n not in bad]
    assert not [p for p in good if p not in recs], "a valid click got no recommendation"
    assert set(recs) | set(letters) == set(positions), "input = recommendations + dead letters"
    return positions, bad, recs, letters


def test_a_worker_killed_under_load_loses_no_click(kafka_broker: LocalBroker,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGKILL while clicks arrive at a few hundred per second, then a restart: every valid
    click gets at least one recommendation, every bad one a dead letter, and input =
    recommendations + dead letters (duplicates allowed: at-least-once)."""
    pipe = _new_pipeline(kafka_broker, tmp_path_factory.mktemp("killed"))
    try:
        positions, bad, recs, letters = _killed_under_load(pipe)
        assert all(p in letters for n, p in enumerate(positions) if n in bad), "a bad click got no dead letter"
        duplicates = sum(len(r) - 1 for r in recs.values())
        marked = sum(r["redelivered"] for rs in recs.values() for r in rs[1:])
        print(f"{len(positions)} clicks, {duplicates} answered again after the kill, {marked} marked redelivered")
        batches = scrape(pipe.metrics_port)
        served = sample(batches, "recstream_click_batch_size_sum")
        assert served > sample(batches, "recstream_click_batch_size_count"), "the backlog was served in batches"
    finally:
        pipe.stop_worker()


def test_exactly_once_a_killed_worker_answers_every_click_once(kafka_broker: LocalBroker,
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """kafka.processing_guarantee=exactly_once, the same SIGKILL under load: read committed,
    every valid click has exactly one recommendation and every bad one exactly one dead
    letter; what the killed worker had not committed was aborted, not delivered."""
    pipe = _new_pipeline(kafka_broker, tmp_path_factory.mktemp("killed-eos"), guarantee="exactly_once")
    try:
        positions, bad, recs, letters = _killed_under_load(pipe)
        twice = sorted(p for p, r in recs.items() if len(r) > 1)
        assert not twice, f"clicks answered twice (partition, offset): {twice[:10]}"
        assert not [p for p, n in letters.items() if n > 1], "a dead letter sent twice"
        assert {positions[n] for n in bad} == set(letters), "exactly the bad clicks got dead letters"
        assert not any(r["redelivered"] for rs in recs.values() for r in rs)
        uncommitted = len(pipe.read_all(pipe.topics.recommendations, isolation_level="read_uncommitted"))
        skipped = pipe.metric("recstream_clicks_answered_before_total")
        print(f"{len(positions)} clicks: {len(recs)} recommendations committed, {uncommitted} records in the "
              f"topic read uncommitted; {skipped:.0f} clicks read again after the kill were answered before")
        _a_forget_is_committed_last(pipe, b"u7")
    finally:
        pipe.stop_worker()


def _a_forget_is_committed_last(pipe: Pipeline, user: bytes) -> None:
    """exactly_once: a forget's changelog record is written in a transaction too, after the
    user's earlier states (read committed, the user's last changelog record is the fence)."""
    from streams.interest import decode_state

    pipe.produce(pipe.topics.user_control, [(user, json.dumps({"user_id": user.decode(), "op": "forget"}).encode())])
    pipe.wait_for(lambda: pipe.metric("recstream_users_forgotten_total") >= 1, what="forget applied")
    changelog = f"{pipe.env['RECSTREAM_APP_ID']}-user-state-changelog"

    def fenced(messages: list[Any]) -> bool:
        last = [m for m in messages if m.key == user]
        return bool(last) and decode_state(last[-1].value).clicks == 0

    pipe.read(changelog, fenced)


def test_a_second_worker_joins_mid_stream(kafka_broker: LocalBroker,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """A second worker joins while clicks flow: no click is lost, none is answered by both
    workers, and the worker that takes a user over serves from the user's whole state (the
    changelog hand-over): no recommendation offers an item the user clicked before."""
    first, second = _two_workers(kafka_broker, tmp_path_factory, "first-of-two", "second-of-two")
    first.start_worker()
    try:
        items = list(_topic_items())
        first.items(_topic_items())
        rng = np.random.default_rng(9)
        orders = {f"user-{u}": [items[i] for i in rng.permutation(len(items))[:12]] for u in range(40)}
        clicks = [(user, json.dumps({"user_id": user, "item_id": order[n], "ts": NOW_S + 100 * n + u}).encode())
                  for n in range(12) for u, (user, order) in enumerate(orders.items())]
        joiner = threading.Timer(2.0, second.start_worker)
        joiner.start()
        positions = _stream_clicks(first, clicks, rate=20.0)
        joiner.join()
        recs, letters = _answers(first, len(clicks))
        assert not letters and set(recs) == set(positions), "every click answered"
        twice = sorted(t for t, r in recs.items() if len(r) > 1)
        assert not twice, f"clicks answered twice (partition, offset): {twice}"
        served = [first.metric("recstream_clicks_total"), second.metric("recstream_clicks_total")]
        assert min(served) > 0, f"both workers served clicks mid-stream: {served}"
        for n, ((user, _), position) in enumerate(zip(clicks, positions, strict=True)):
            clicked = set(orders[user][:n // len(orders) + 1])
            [rec] = recs[position]
            assert not clicked & {i["item_id"] for i in rec["items"]}, f"{user} was offered an item it clicked"
    finally:
        second.stop_worker()
        first.stop_worker()


# --------------------------------------------------------------------------- the crowd, shared


def _covisit_rows(pipe: Pipeline, worker: str, items: list[str]) -> dict[str, dict[str, float]]:
    """Each item's co-visitation neighbours, from the crowd snapshot a stopped worker left."""
    from streams import snapshot
    from streams.covisit import CovisitCounts
    from streams.recommend import RecommenderParams

    snap = snapshot.read_crowd(snapshot.crowd_path(Path(pipe.env["RECSTREAM_DATA_DIR"]) / "workers" / worker))
    assert snap is not None, f"{worker} left no crowd snapshot"
    counts = CovisitCounts.from_state(snap.crowd.covisit, RecommenderParams().covisit)
    return {item: dict(counts.neighbours(item, NOW_S + 10_000, 50)) for item in items}


def test_two_workers_rank_with_the_crowd_of_all_clicks(kafka_broker: LocalBroker,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same clicks through one worker and through two that each serve half of the users
    give every worker the same co-visitation neighbours: the crowd travels on its topic."""
    items = list(_topic_items())
    rng = np.random.default_rng(11)
    orders = {f"user-{u}": [items[i] for i in rng.permutation(len(items))[:6]] for u in range(16)}
    clicks = [(user, json.dumps({"user_id": user, "item_id": order[n], "ts": NOW_S + 100 * n + u}).encode())
              for n in range(6) for u, (user, order) in enumerate(orders.items())]

    single = _new_pipeline(kafka_broker, tmp_path_factory.mktemp("crowd-single"))
    single.start_worker()
    try:
        single.items(_topic_items())
        _answers(single, len(_stream_clicks(single, clicks, rate=100.0)))
    finally:
        single.stop_worker()
    reference = _covisit_rows(single, "w0", items)
    assert sum(len(row) for row in reference.values()) > 50

    first, second = _two_workers(kafka_broker, tmp_path_factory, "crowd-first", "crowd-second")
    first.start_worker()
    try:
        first.items(_topic_items())
        second.start_worker()
        deadline = time.monotonic() + 120
        probes = 0
        while second.metric("recstream_clicks_total") == 0:  # one click per probe user: no co-visits
            assert time.monotonic() < deadline, "the second worker never got a partition"
            for _ in range(8):
                first.click(f"probe-{probes}", "jazz-5", NOW_S)
                probes += 1
            time.sleep(1.0)
        before = second.metric("recstream_clicks_total")
        _answers(first, probes + len(_stream_clicks(first, clicks, rate=100.0)))
        assert second.metric("recstream_clicks_total") > before, "the second worker served some of the users"
        assert first.metric("recstream_clicks_total") > probes, "the first worker served some of the users"
        time.sleep(1.0)  # the last lessons cross the crowd topic
    finally:
        second.stop_worker()
        first.stop_worker()
    for worker, pipe in (("w0", first), ("w1", second)):
        rows = _covisit_rows(pipe, worker, items)
        for item in items:
            assert rows[item].keys() == reference[item].keys(), f"{worker}: neighbours of {item}"
            assert np.allclose([rows[item][n] for n in reference[item]], list(reference[item].values()))


# A Chinese catalogue: the same three topics, titles and ids in Chinese.
SPACE_ZH = ["火箭发射升空，飞往国际空间站", "宇航员在月球表面行走", "天文望远镜拍摄到遥远的星系",
            "火星车发现古老的河床", "卫星在夜空中环绕地球运行", "飞船与轨道空间站对接"]
COOKING_ZH = ["慢炖番茄意面酱的做法", "在家烤制酸面包", "橄榄油香草烤蔬菜", "经典法式洋葱汤食谱",
              "浓缩咖啡巧克力蛋糕", "蒜香姜丝炒面"]
JAZZ_ZH = ["爵士三重奏现场演奏比波普标准曲", "摇摆乐时代的萨克斯独奏", "烟雾缭绕的爵士俱乐部里的钢琴即兴",
           "大乐队爵士音乐会", "冷爵士年代的小号抒情曲", "爵士鼓手的鼓刷技巧"]


def test_a_chinese_catalogue_is_served_with_the_chinese_encoder(kafka_broker: LocalBroker,
                                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    """A worker given the packaged Chinese encoder (m3e-small) serves a catalogue whose titles,
    ids and users are Chinese, as UTF-8 JSON: each click gets its list, the user's topic comes
    first, the reasons are the user's own items, and a service pulls the list by the user's id."""
    pytest.importorskip("torch")  # the encoder is exported on first use
    from export.exporter import model_source
    from streams.settings import ModelSettings

    try:
        model_source("m3e-small")
    except Exception as exc:  # noqa: BLE001 - make setup installs it; say so rather than pass silently
        pytest.skip(f"m3e-small is not installed here: {exc}")
    pipe = _new_pipeline(kafka_broker, tmp_path_factory.mktemp("chinese"))
    pipe.env["RECSTREAM_MODEL__DIR"] = str(ensure_model(Settings(model=ModelSettings(name="m3e-small"))))
    items = {f"{topic}-{n}": title for topic, titles in (("航天", SPACE_ZH), ("烹饪", COOKING_ZH), ("爵士", JAZZ_ZH))
             for n, title in enumerate(titles)}

    pipe.start_worker()
    try:
        pipe.items(items)
        clicks = [("张三", "航天-0"), ("李四", "烹饪-0"), ("张三", "航天-1"), ("李四", "烹饪-1"), ("张三", "航天-2")]
        triggers = [pipe.click(user, item, NOW_S + n) for n, (user, item) in enumerate(clicks)]
        recs = pipe.recommendations(triggers, timeout_s=60.0)
        assert all(len(recs[t]) == 1 for t in triggers)
        [last] = recs[triggers[-1]]
        assert last["user_id"] == "张三" and last["model"].startswith("m3e-small@")
        top = last["items"][0]
        assert top["item_id"].startswith("航天-") and top["item_id"] not in {"航天-0", "航天-1", "航天-2"}, last
        assert top["because"] and set(top["because"]) <= {"航天-0", "航天-1", "航天-2"}

        status, _, pulled = pipe.get("/users/%E5%BC%A0%E4%B8%89/recommendations?k=3")  # 张三
        assert status == 200 and pulled["user_id"] == "张三" and pulled["personalised"]
        assert pulled["items"][0]["item_id"].startswith("航天-")
    finally:
        pipe.stop_worker()

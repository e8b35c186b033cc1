"""The deterministic rebuild behind ``recstream replay --rebuild-state``: the same input gives
the same recommendations, record for record.

Workers re-reading the log would rebuild the states too, but never the same lists twice:
which clicks share a batch and how the partitions interleave depend on fetch timing, and the
crowd's counts (co-visitation, trending) and the learned ranker see the clicks in that order.
The rebuild reads the log itself and puts it in one order fixed by the data:

- every record of the replayed range of ``clicks`` and ``user-control``, and the whole
  ``item-vectors`` topic, sorted by Kafka timestamp (then vectors before clicks before
  forgets, then topic, partition, offset);
- an item's first vector left counts from the first sign of the item: that vector's time,
  the item's ``created_at``, or the first click on it, whichever is earliest. The topic is
  compacted, so an item encoded again later (a new model) keeps only its newest vector, and
  a click may have overtaken its item (a worker holds such a click for it);
- clicks are served in batches of ``recommend.max_batch`` through the click path's own code
  (:mod:`streams.clickbatch`, what the recommend stage runs); a vector or a forget closes
  the batch before it; the learned ranker is refit as soon as it is due; the sequence model
  is the newest published one, for the whole rebuild;
- items are searched exactly (the in-memory index): an HNSW graph's answers can depend on
  how it was built.

What it writes is one Kafka transaction, all of it or nothing: a recommendation for every
click of the range and a dead letter for every bad record (but nothing for the clicks of a
user the range forgets later: a rebuild does not publish a forgotten user's history again),
the final state of every user to the state changelog, what the clicks taught the crowd to the ``crowd`` topic (workers learn it
when they start), and the group's offsets of ``clicks`` and ``user-control`` at the end it
read to. Workers started afterwards recover the states from the changelog and serve what
came after. The whole range is held in memory (a few hundred bytes a record).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.catalog import ItemCatalog
from streams.clickbatch import Versions, apply_clicks, learn_batch, rank_users, read_click, recommendations
from streams.errors import RecstreamError
from streams.index.memory import MemoryIndex
from streams.interest import UserState, encode_state, forgotten
from streams.progress import progress_bar
from streams.recommend import CrowdEvent, Recommender, RecommenderParams
from streams.records import (
    DecodeReason,
    RecordDecodeError,
    RecordLimits,
    check_key,
    dead_letter,
    decode_click,
    decode_control,
    decode_item_vector,
    encode_json,
)
from streams.sequence import SequenceWatch
from streams.settings import Settings
from streams.stages.context import limits_of
from streams.stages.crowd import encode_events
from streams.stages.index_replica import fold_item_vectors
from streams.stages.transactions import BatchTransactions
from streams.stages.user_states import changelog_topic
from streams.topics import read_ranges, state_changelog_configs, wait_for_partitions

log = logging.getLogger(__name__)

#: At the same timestamp: an item's vector, then clicks, then forgets (a click and a forget
#: at one time: the click is applied, then forgotten).
VECTOR, CLICK, CONTROL = 0, 1, 2
#: The longest a rebuild's single transaction may stay open (Kafka's transaction.max.timeout.ms default).
TRANSACTION_TIMEOUT_S = 900.0


class RebuildError(RecstreamError, RuntimeError):
    """The log could not be read or the rebuild's transaction not committed."""


class _Event(NamedTuple):
    """A record as the click path reads it (``event.message``, like a faust event)."""

    message: Any


@dataclass
class StateRebuild:
    """Serves a timeline of records through the click path, with no Kafka in it."""

    settings: Settings
    records: list[tuple[str, bytes | None, bytes, int | None]] = field(default_factory=list)
    states: dict[bytes, tuple[int, UserState]] = field(default_factory=dict)
    crowd: list[CrowdEvent] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("clicks", "recommendations", "dead_letters", "forgets", "forgotten_clicks", "vectors", "bad_vectors"), 0))
    recommender: Recommender | None = None
    limits: RecordLimits = field(init=False)
    #: Per user key, the time (ms) of the user's last forget in the range.
    forgotten_at: dict[bytes, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.limits = limits_of(self.settings)

    def run(self, vectors: list[Any], controls: list[Any], clicks: list[Any], *, progress: bool = False) -> None:
        """Serve the timeline these records make (see the module's docstring)."""
        timeline = order(vectors, controls, clicks)
        self.forgotten_at = forgets(controls, self.limits)
        max_batch = self.settings.recommend.max_batch
        batch: list[_Event] = []
        with progress_bar(progress, len(timeline), "rebuild") as advance:
            for done, (kind, message) in enumerate(timeline, 1):
                if kind == CLICK:
                    batch.append(_Event(message))
                    if len(batch) >= max_batch:
                        self._serve(batch)
                        batch = []
                else:
                    if batch:
                        self._serve(batch)
                        batch = []
                    (self._vector if kind == VECTOR else self._control)(message)
                if done % 1000 == 0:
                    advance(done, {})
            if batch:
                self._serve(batch)
            advance(len(timeline), {})

    def _vector(self, message: Any) -> None:
        self.counts["vectors"] += 1
        recommender = self.recommender
        folded = fold_item_vectors([message], recommender.index.dim if recommender is not None else None)
        self.counts["bad_vectors"] += len(folded.bad)  # dead-lettered by the index replica already
        if folded.upserts:
            if recommender is None:
                assert folded.dim is not None
                recommender = self.recommender = Recommender(index=MemoryIndex(folded.dim), catalog=ItemCatalog(),
                                                             params=RecommenderParams.from_settings(self.settings))
                recommender.use_sequence(SequenceWatch(self.settings.sequence_dir).poll())
            recommender.catalog.model_version = folded.model or recommender.catalog.model_version
            ids = list(folded.upserts)
            recommender.upsert_items(ids, np.stack([folded.upserts[i][0] for i in ids]),
                                     [folded.upserts[i][1] for i in ids])
        if folded.deletes and recommender is not None:
            recommender.delete_items([i for i in folded.deletes if i in recommender.catalog])

    def _control(self, message: Any) -> None:
        try:
            command = decode_control(message.value, limits=self.limits)
            check_key(message.key, command.user_id, "user_id", required=True)
        except Exception as exc:  # noqa: BLE001 - a bad record is a dead letter
            self._letter(message, exc)
            return
        if command.op == "forget":
            self.counts["forgets"] += 1
            self.states[message.key] = (message.partition, forgotten(command.user_id, message.timestamp / 1000))

    def _forgotten(self, message: Any) -> bool:
        """Whether the record is a click of a user forgotten at or after it: it is applied (the
        state is replaced by the forget anyway, and the crowd's counts have no user in them)
        but nothing naming the user is written again."""
        at = self.forgotten_at.get(message.key)
        return at is not None and message.timestamp <= at

    def _serve(self, batch: list[_Event]) -> None:
        recommender = self.recommender
        letters: list[tuple[Any, Exception]] = []
        clicks = []
        for event in batch:
            message = event.message
            try:
                click = read_click(message, now_s=message.timestamp / 1000, limits=self.limits)
                if recommender is None or click.item_id not in recommender.catalog:
                    raise RecordDecodeError(DecodeReason.UNKNOWN_ITEM, f"item {click.item_id!r} is not in the "
                                            "catalogue", field="item_id")
            except Exception as exc:  # noqa: BLE001 - a bad click is a dead letter
                letters.append((event, exc))
                continue
            clicks.append((event, click))
        self.counts["clicks"] += len(batch)
        if recommender is not None and clicks:
            learned: list[CrowdEvent] = []
            users = apply_clicks(recommender, clicks, self._load, letters, learned)
            versions = Versions.of(recommender)
            for user, items in rank_users(recommender, users, letters):
                if user.changed and user.state is not None:
                    self.states[user.key] = (user.partition, user.state)
                for event, rec in recommendations(versions, user, items):
                    if self._forgotten(event.message):
                        self.counts["forgotten_clicks"] += 1
                        continue
                    self.records.append((self.settings.topics.recommendations, event.message.key, encode_json(rec),
                                         None))
                    self.counts["recommendations"] += 1
            learn_batch(recommender, learned)
            self.crowd.extend(learned)
            if recommender.refit_due:
                recommender.refit_ranker()
        for event, error in letters:
            self._letter(event.message, error)

    def _load(self, keys: Any) -> dict[bytes, UserState | None]:
        found: dict[bytes, UserState | None] = {}
        for key, _ in keys:
            stored = self.states.get(key)
            found[key] = stored[1] if stored is not None else None
        return found

    def _letter(self, message: Any, error: Exception) -> None:
        if self._forgotten(message):
            self.counts["forgotten_clicks"] += 1
            return
        letter = dead_letter(topic=message.topic, partition=message.partition, offset=message.offset,
                             raw=message.value, error=error)
        self.records.append((self.settings.topics.dead_letters, message.key, encode_json(letter), None))
        self.counts["dead_letters"] += 1

    def changelog_records(self, group: str) -> list[tuple[str, bytes | None, bytes, int | None]]:
        """Each user's final state, as the user-state table's changelog holds it."""
        topic = changelog_topic(group)
        return [(topic, key, encode_state(state), partition) for key, (partition, state) in self.states.items()]

    def crowd_records(self) -> list[tuple[str, bytes | None, bytes, int | None]]:
        origin = b"rebuild"  # no worker's: every worker learns these
        return [(self.settings.topics.crowd, origin, raw, None) for raw in encode_events(self.crowd)]


def order(vectors: list[Any], controls: list[Any], clicks: list[Any]) -> list[tuple[int, Any]]:
    """The records in the rebuild's order, as ``(kind, record)`` (see the module's docstring)."""
    first_click: dict[str, int] = {}  # item id -> the time of the first click on it
    for message in clicks:
        try:
            item = decode_click(message.value, now_s=message.timestamp / 1000).item_id
        except Exception:  # noqa: BLE001 - a bad click proves nothing (it gets its dead letter)
            continue
        first_click[item] = min(message.timestamp, first_click.get(item, message.timestamp))
    keyed: list[tuple[tuple[int, int, str, int, int], int, Any]] = []
    described: set[str] = set()
    for message in sorted(vectors, key=_position):
        at = message.timestamp
        if message.value is not None and message.key is not None:
            item = message.key.decode("utf-8", "replace")
            if item not in described:  # its first vector left: there from the first sign of the item
                described.add(item)
                at = min(at, first_click.get(item, at), _created_ms(message, at))
        keyed.append(((at, VECTOR, *_position(message)[1:]), VECTOR, message))
    keyed.extend(((m.timestamp, CLICK, *_position(m)[1:]), CLICK, m) for m in clicks)
    keyed.extend(((m.timestamp, CONTROL, *_position(m)[1:]), CONTROL, m) for m in controls)
    keyed.sort(key=lambda k: k[0])
    return [(kind, message) for _, kind, message in keyed]


def _created_ms(message: Any, default: int) -> int:
    try:
        created_s = decode_item_vector(message.value).created_at_s
    except RecordDecodeError:
        return default
    return int(created_s * 1000) if created_s is not None else default


def forgets(controls: list[Any], limits: RecordLimits) -> dict[bytes, int]:
    """Per user key, the Kafka time of the user's last valid forget among ``controls``."""
    at: dict[bytes, int] = {}
    for message in controls:
        try:
            command = decode_control(message.value, limits=limits)
            check_key(message.key, command.user_id, "user_id", required=True)
        except Exception:  # noqa: BLE001 - a bad control record forgets no one (it gets its dead letter)
            continue
        if command.op == "forget":
            at[message.key] = max(message.timestamp, at.get(message.key, message.timestamp))
    return at


def _position(message: Any) -> tuple[int, str, int, int]:
    return message.timestamp, message.topic, message.partition, message.offset


async def rebuild_states(settings: Settings, group: str, starts: dict[TopicPartition, int], *,
                         progress: bool = False) -> dict[str, Any]:
    """Rebuild from ``starts`` (clicks and user-control partitions) to their current ends, and
    commit the outputs and the group's offsets at those ends in one transaction."""
    began = time.monotonic()
    kafka, topics = settings.kafka, settings.topics
    vector_tps = [TopicPartition(topics.item_vectors, p)
                  for p in await wait_for_partitions(kafka, topics.item_vectors, timeout_s=10.0)]
    probe = AIOKafkaConsumer(**kafka.consumer_kwargs(), group_id=None, enable_auto_commit=False)
    await probe.start()
    try:
        ends = await probe.end_offsets([*starts, *vector_tps])
        firsts = await probe.beginning_offsets(vector_tps)
    finally:
        await probe.stop()
    # earliest: a start that retention removed meanwhile reads from what is left, never from the end
    reader = AIOKafkaConsumer(**kafka.consumer_kwargs(), group_id=None, enable_auto_commit=False,
                              auto_offset_reset="earliest")
    await reader.start()
    try:
        vectors = await read_ranges(reader, {tp: (firsts[tp], ends[tp]) for tp in vector_tps})
        inputs = await read_ranges(reader, {tp: (start, ends[tp]) for tp, start in starts.items()})
    finally:
        await reader.stop()
    rebuild = StateRebuild(settings)
    rebuild.run(vectors, [m for m in inputs if m.topic == topics.user_control],
                [m for m in inputs if m.topic == topics.clicks], progress=progress)
    await ensure_changelog(settings, group)
    records = [*rebuild.records, *rebuild.changelog_records(group), *rebuild.crowd_records()]
    offsets = {tp: ends[tp] for tp in starts}
    await _commit(settings, group, records, offsets)
    return {**rebuild.counts, "users": len(rebuild.states), "crowd_events": len(rebuild.crowd),
            "records_written": len(records), "offsets": {f"{tp.topic}[{tp.partition}]": o for tp, o in offsets.items()},
            "seconds": round(time.monotonic() - began, 2)}


async def ensure_changelog(settings: Settings, group: str) -> None:
    """The user-state changelog as the workers' faust table creates it (a replay may have
    deleted it): compacted, with the configured compaction lag."""
    admin = AIOKafkaAdminClient(**settings.kafka.client_kwargs())
    await admin.start()
    try:
        topic = changelog_topic(group)
        if topic not in set(await admin.list_topics()):
            configs = {"cleanup.policy": "compact", **state_changelog_configs(settings)}
            await admin.create_topics([NewTopic(topic, settings.topics.partitions, settings.topics.replication_factor,
                                                topic_configs=configs)])
    finally:
        await admin.close()
    await wait_for_partitions(settings.kafka, topic)  # has leaders before the producer asks


async def _commit(settings: Settings, group: str, records: list[tuple[str, bytes | None, bytes, int | None]],
                  offsets: dict[TopicPartition, int]) -> None:
    """Every record and the group's offsets in one transaction (the workers' transactional
    producer, with a rebuild's longer timeout)."""
    txn = BatchTransactions(settings.kafka, transactional_id=f"{group}-rebuild", group_id=group,
                            timeout_s=TRANSACTION_TIMEOUT_S)
    try:
        await txn.begin()
        for topic, key, value, partition in records:
            await txn.send(topic, key, value, partition)
        await txn.commit({(tp.topic, tp.partition): offset for tp, offset in offsets.items()})
    except Exception as exc:
        await txn.abort()
        raise RebuildError(f"the rebuild's transaction was not committed ({exc!r}); nothing of it is visible") from exc
    finally:
        await txn.stop()

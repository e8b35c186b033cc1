"""``recstream replay``: move a worker group's input offsets back to re-emit or rebuild.

Replaying is safe by design: a recommendation names its trigger (topic, partition,
offset), so a re-emitted one is recognisably the same click's (and says ``redelivered``); and
a click still in a user's recent window is a no-op for the state (``update_interest`` is
idempotent on replays). Clicks older than that window would be counted twice, which is what
``--rebuild-state`` is for: it empties the user-state changelog and the ``crowd`` topic, and
removes this machine's local table stores and crowd snapshots, then rebuilds every state, and
the crowd counts, from the replayed clicks itself (:mod:`streams.rebuild`: deterministically,
in one transaction that also moves the offsets to where it stopped reading). With
``--to-timestamp`` the rebuilt state holds only what happened since that time.

Emptying a topic is DeleteRecords up to its end, which Kafka allows only on topics whose
cleanup policy includes ``delete``. A changelog faust created as compact-only is deleted
instead (the workers create it again, empty, when they start).

Order and failure. Everything is checked first (the group has no members: stop the workers;
every topic exists), then the offsets move, then the state is emptied. A failure after the
offsets moved changes nothing else and says so: the same command, run again, finishes (each
step is idempotent). The state is never emptied while the offsets are where they were, which
would lose it.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.records_to_delete import RecordsToDelete
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError
from aiokafka.structs import OffsetAndMetadata

from streams.errors import RecstreamError
from streams.rebuild import rebuild_states
from streams.settings import Settings
from streams.snapshot import CROWD_FILE
from streams.stages.user_states import STATE_TABLE, changelog_topic
from streams.topics import TopicUnavailable, partitions_of, topic_config

T = TypeVar("T")


class ReplayError(RecstreamError, RuntimeError):
    """The group's offsets cannot be moved now (workers running, topic missing, ...)."""


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    group: str
    moves: dict[TopicPartition, tuple[int | None, int]]  # tp -> (committed now, new offset)

    def report(self) -> dict[str, dict[str, dict[str, int | None]]]:
        out: dict[str, dict[str, dict[str, int | None]]] = {}
        for tp, (old, new) in sorted(self.moves.items()):
            out.setdefault(tp.topic, {})[str(tp.partition)] = {"from": old, "to": new}
        return out


async def _coordinated(call: Callable[[], Awaitable[T]], timeout_s: float = 30.0) -> T:
    """``call()``, again while the group's coordinator is not there yet (a broker that just
    started is still creating ``__consumer_offsets``): aiokafka's admin client does not retry."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _members(admin: AIOKafkaAdminClient, group: str) -> int:
    [response] = await _coordinated(lambda: admin.describe_consumer_groups([group]))
    for entry in response.groups:
        # (error_code, group_id, state, protocol_type, protocol, members, ...)
        if entry[1] == group:
            return len(entry[5])
    return 0


async def _partitions(admin: AIOKafkaAdminClient, topics: list[str]) -> list[TopicPartition]:
    try:
        return await partitions_of(admin, topics)
    except TopicUnavailable as exc:
        raise ReplayError(str(exc)) from None


async def plan_replay(settings: Settings, group: str, *, to_timestamp_s: float | None,
                      rebuild_state: bool = False) -> ReplayPlan:
    """Where each input partition's committed offset is, and where it would go. A rebuild
    leaves ``items`` where it is: it reads the vectors the encoder wrote already."""
    kafka = settings.kafka
    topics = [settings.topics.clicks, settings.topics.user_control]
    if not rebuild_state:
        topics.insert(0, settings.topics.items)
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await _partitions(admin, topics)
        committed = await _coordinated(lambda: admin.list_consumer_group_offsets(group, partitions=tps))
        if to_timestamp_s is None:
            targets = await consumer.beginning_offsets(tps)
        else:
            found = await consumer.offsets_for_times({tp: int(to_timestamp_s * 1000) for tp in tps})
            ends = await consumer.end_offsets(tps)
            targets = {tp: (found[tp].offset if found[tp] is not None else ends[tp]) for tp in tps}
        moves = {}
        for tp in tps:
            meta = committed.get(tp)
            old = meta.offset if meta is not None and meta.offset >= 0 else None
            moves[tp] = (old, targets[tp])
        return ReplayPlan(group=group, moves=moves)
    finally:
        await consumer.stop()
        await admin.close()


async def run_replay(settings: Settings, group: str, *, to_timestamp_s: float | None,
                     rebuild_state: bool, dry_run: bool, progress: bool = False) -> dict[str, Any]:
    """Plan, and unless ``dry_run`` apply, the replay; return a report."""
    plan = await plan_replay(settings, group, to_timestamp_s=to_timestamp_s, rebuild_state=rebuild_state)
    report: dict[str, Any] = {"group": group, "dry_run": dry_run, "rebuild_state": rebuild_state,
                              "to": "earliest" if to_timestamp_s is None else to_timestamp_s,
                              "offsets": plan.report()}
    kafka = settings.kafka
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        members = await _members(admin, group)
        if members and not dry_run:
            raise ReplayError(f"group {group!r} has {members} active member(s): stop its workers, then replay")
        if dry_run:
            return report
        consumer = AIOKafkaConsumer(**kafka.consumer_kwargs(), group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(list(plan.moves))
            await consumer.commit({tp: OffsetAndMetadata(new, "") for tp, (_, new) in plan.moves.items()})
        finally:
            await consumer.stop()
        if rebuild_state:
            try:
                report["state"] = await _empty_changelog(admin, settings, group)
                report["rebuild"] = await rebuild_states(settings, group, {tp: new for tp, (_, new) in plan.moves.items()},
                                                         progress=progress)
            except Exception as exc:
                raise ReplayError(f"the offsets of group {group!r} were moved, but rebuilding its state failed: {exc}. "
                                  "Nothing else changed; run the same command again to finish") from exc
    finally:
        await admin.close()
    return report


async def _empty_changelog(admin: AIOKafkaAdminClient, settings: Settings, group: str) -> dict[str, Any]:
    """Empty the user-state changelog and the crowd topic (the lessons of the clicks about to
    be replayed: kept, a worker would learn them twice), and the local stores."""
    topic = changelog_topic(group)
    existing = set(await admin.list_topics())
    deleted, dropped = 0, False
    if topic in existing:
        if "delete" in (await topic_config(settings.kafka, topic, "cleanup.policy") or "delete"):
            deleted = await _empty(admin, settings, topic)
        else:
            deleted = sum((await _end_offsets(settings, admin, topic)).values())
            await _delete_topic(admin, topic)
            dropped = True
    crowd = settings.topics.crowd
    crowd_deleted = await _empty(admin, settings, crowd) if crowd in existing else 0
    removed = _remove_local_stores(settings.data_dir)
    return {"changelog": topic, "changelog_records_before": deleted, "changelog_topic_deleted": dropped,
            "crowd_records_before": crowd_deleted, "local_stores_removed": removed}


async def _end_offsets(settings: Settings, admin: AIOKafkaAdminClient, topic: str) -> dict[TopicPartition, int]:
    tps = await _partitions(admin, [topic])
    consumer = AIOKafkaConsumer(**settings.kafka.consumer_kwargs(), group_id=None)
    await consumer.start()
    try:
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def _delete_topic(admin: AIOKafkaAdminClient, topic: str, timeout_s: float = 60.0) -> None:
    """Delete the topic and wait until the cluster no longer lists it (deletion is asynchronous:
    a worker started before it is gone would find the old records)."""
    await admin.delete_topics([topic])
    deadline = time.monotonic() + timeout_s
    while topic in set(await admin.list_topics()):
        if time.monotonic() > deadline:
            raise ReplayError(f"topic {topic!r} is still listed {timeout_s:.0f} s after its deletion")
        await asyncio.sleep(0.2)


async def _empty(admin: AIOKafkaAdminClient, settings: Settings, topic: str) -> int:
    """DeleteRecords up to each partition's end; return how many offsets that covered."""
    ends = await _end_offsets(settings, admin, topic)
    await admin.delete_records({tp: RecordsToDelete(before_offset=end) for tp, end in ends.items()})
    return sum(ends.values())


def _remove_local_stores(data_dir: Path) -> list[str]:
    """faust keeps a worker's table stores (one RocksDB per partition, and their backups) in
    ``<worker dir>/v<table data version>/tables/``; beside them is the worker's crowd snapshot,
    which counts the clicks about to be replayed (kept, the replay would count them twice)."""
    removed = []
    for store in sorted((data_dir / "workers").glob(f"*/v*/tables/{STATE_TABLE}-*")):
        if store.is_dir():
            shutil.rmtree(store)
        else:
            store.unlink()
        removed.append(str(store))
    for crowd in sorted((data_dir / "workers").glob(f"*/{CROWD_FILE}")):
        crowd.unlink()
        removed.append(str(crowd))
    return removed

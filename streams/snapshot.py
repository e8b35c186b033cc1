"""Restart snapshots: what a worker knows that is not in Kafka's changelogs.

* The index replica (:class:`ReplicaSnapshot`): its catalogue and how far it has read
  ``item-vectors``.
* The crowd (:class:`~streams.recommend.CrowdState`): co-visitation, co-likes, popularity
  and exposure learned from clicks. Written at shutdown into the worker's own directory
  (beside its RocksDB state) and read back at start, so a restarted worker recommends as it
  did before instead of relearning from nothing. It holds item ids and counts, no user ids
  (forgetting a user is unaffected). After a crash the last one written is used: the
  clicks since then are missing from it, the way they would be after a fresh start.

The replica snapshot:

Why. A serving worker's replica is the whole ``item-vectors`` topic applied to an index and
an in-memory catalogue. Rebuilding it on every start means re-reading every vector and, on
Qdrant Edge, rebuilding HNSW: 24 s of a 26 s restart at 100k items (``recstream bench
restart``). The Edge shard already survives on disk with its HNSW; only the catalogue
(vectors, titles, tags) and the read positions are lost with the process. This file keeps
them, so a restart reopens the shard, loads the catalogue and reads only what came after.

Safety. The snapshot lives inside the Edge shard's directory, so it goes with the shard: a
deleted or replaced shard takes its snapshot along. It is written (atomically: a temp file
renamed) only after the index is flushed. It is used only when the topic is the one it was
read from (same name, each partition's last record read still at its offset, no position
past the end or before the start) and when it is younger than the topic keeps tombstones
(``delete.retention.ms``; a compacted topic drops a delete after that, and a replica reading
on from old positions would never see it). Otherwise the shard is deleted and the replica
rebuilt from the topic. Reading on from its positions re-applies whatever the index got
after it was written, after a crash too: upserts and deletes are idempotent, so index and
catalogue converge on the topic.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import msgspec
import numpy as np

from streams.catalog import ItemCatalog, ItemInfo
from streams.recommend import CrowdState

log = logging.getLogger(__name__)

FORMAT = 2
_S = TypeVar("_S", bound=msgspec.Struct)
#: A snapshot is refused this long before the topic may drop the tombstones written after
#: it: records a replica had not fetched yet when it was taken are a little older than it.
TOMBSTONE_MARGIN_S = 3_600.0


class Fingerprint(msgspec.Struct, frozen=True, array_like=True):
    """The last record read from a partition: the same offset must hold the same record
    when the snapshot is used, or the topic was recreated under the same name."""

    offset: int
    key: bytes
    timestamp_ms: int


class ReplicaSnapshot(msgspec.Struct, frozen=True):
    """A catalogue (``vectors`` is float32 ``[n, dim]`` row-major) and the read positions."""

    topic: str
    taken_at_s: float
    positions: dict[int, int]  # partition -> next offset to read
    fingerprints: dict[int, Fingerprint]  # partition -> its last record read
    dim: int
    model_version: str
    item_ids: list[str]
    vectors: bytes
    titles: list[str]
    tags: list[list[str]]
    created_at: list[float | None]
    format: int = FORMAT


def snapshot_path(shard_dir: Path) -> Path:
    """Inside the shard's directory (beside the engine's files, as the point-id marker is)."""
    return shard_dir / "recstream-replica"


def take(catalog: ItemCatalog, *, topic: str, positions: Mapping[int, int],
         fingerprints: Mapping[int, Fingerprint], dim: int, now_s: float) -> ReplicaSnapshot:
    """The snapshot of ``catalog`` read up to ``positions`` of ``topic``."""
    ids = catalog.ids()
    infos = [catalog.get(i) for i in ids]
    matrix = (np.stack([info.vector for info in infos]).astype(np.float32, copy=False) if infos
              else np.zeros((0, dim), np.float32))
    return ReplicaSnapshot(
        topic=topic, taken_at_s=now_s, positions=dict(positions), fingerprints=dict(fingerprints), dim=dim,
        model_version=catalog.model_version, item_ids=ids, vectors=matrix.tobytes(),
        titles=[info.title for info in infos], tags=[list(info.tags) for info in infos],
        created_at=[info.created_at_s for info in infos],
    )


def restore(snapshot: ReplicaSnapshot, catalog: ItemCatalog) -> None:
    """Fill ``catalog`` from ``snapshot`` (vectors are read-only views of one buffer)."""
    matrix = np.frombuffer(snapshot.vectors, dtype=np.float32).reshape(len(snapshot.item_ids), snapshot.dim)
    for row, item_id in enumerate(snapshot.item_ids):
        catalog.put(item_id, ItemInfo(vector=matrix[row], title=snapshot.titles[row],
                                      tags=tuple(snapshot.tags[row]), created_at_s=snapshot.created_at[row]))
    catalog.model_version = snapshot.model_version


CROWD_FILE = "recstream-crowd"


def crowd_path(worker_dir: Path) -> Path:
    return worker_dir / CROWD_FILE


def write(path: Path, snapshot: msgspec.Struct) -> None:
    """Write atomically: a reader sees the old snapshot or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(msgspec.msgpack.encode(snapshot))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _decode(path: Path, kind: type[_S]) -> _S | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read the snapshot %s (%s): starting without it", path, exc)
        return None
    try:
        return msgspec.msgpack.decode(raw, type=kind)
    except msgspec.DecodeError as exc:
        log.warning("unreadable snapshot %s (%s): starting without it", path, exc)
        return None


def read(path: Path) -> ReplicaSnapshot | None:
    """The replica snapshot at ``path``; ``None`` when there is none or it cannot be used (logged)."""
    snapshot = _decode(path, ReplicaSnapshot)
    if snapshot is None:
        return None
    n = len(snapshot.item_ids)
    if snapshot.format != FORMAT or len(snapshot.vectors) != n * snapshot.dim * 4 or not (
            len(snapshot.titles) == len(snapshot.tags) == len(snapshot.created_at) == n):
        log.warning("replica snapshot %s is inconsistent (format %d): rebuilding from the topic",
                    path, snapshot.format)
        return None
    return snapshot


class CrowdSnapshot(msgspec.Struct, frozen=True):
    """The crowd and how far this worker had read the ``crowd`` topic (partition -> next
    offset): a restart learns only what other workers taught after it."""

    crowd: CrowdState
    topic: str = ""
    positions: dict[int, int] = {}


def read_crowd(path: Path) -> CrowdSnapshot | None:
    """The crowd snapshot at ``path``; ``None`` when there is none or it is unreadable (logged).
    A snapshot of a worker that did not share its crowd yet (a bare crowd) reads with no positions."""
    try:
        raw = path.read_bytes()
    except OSError:
        return _decode(path, CrowdSnapshot)  # logs what is wrong, when something is
    try:
        return msgspec.msgpack.decode(raw, type=CrowdSnapshot)
    except msgspec.DecodeError:
        bare = _decode(path, CrowdState)
        return None if bare is None else CrowdSnapshot(crowd=bare)


def usable(snapshot: ReplicaSnapshot, *, topic: str, begin_offsets: Mapping[int, int],
           end_offsets: Mapping[int, int], now_s: float, tombstones_kept_s: float) -> str | None:
    """Why ``snapshot`` cannot seed a replica of ``topic`` (partitions from ``begin_offsets``
    to ``end_offsets``, keeping tombstones ``tombstones_kept_s``); ``None``: it can, once the
    :class:`Fingerprint` records are found where they were."""
    if snapshot.topic != topic:
        return f"it was read from topic {snapshot.topic!r}, not {topic!r}"
    age_s = now_s - snapshot.taken_at_s
    if age_s > tombstones_kept_s - TOMBSTONE_MARGIN_S:  # a delete since then may be gone
        return f"it is {age_s:.0f} s old and the topic keeps tombstones {tombstones_kept_s:.0f} s"
    beyond = {p: o for p, o in snapshot.positions.items() if o > end_offsets.get(p, -1)}
    if beyond:  # the topic was deleted and recreated: its offsets mean other records now
        return f"its offsets {beyond} lie beyond the topic's ends {dict(end_offsets)}"
    gone = {p: o for p, o in snapshot.positions.items() if o < begin_offsets.get(p, 0)}
    if gone:
        return f"records after its offsets {gone} were deleted (the topic starts at {dict(begin_offsets)})"
    return None

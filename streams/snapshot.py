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
renamed) only after the index is flushed, and used only when the topic matches and no
position lies beyond the topic's end (a recreated topic). Reading on from its positions
re-applies whatever the index got after it was written, after a crash too: upserts and
deletes are idempotent, so index and catalogue converge on the topic.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from typing import TypeVar

import msgspec
import numpy as np

from streams.recommend import CrowdState, ItemCatalog, ItemInfo

log = logging.getLogger(__name__)

FORMAT = 1
_S = TypeVar("_S", bound=msgspec.Struct)


class ReplicaSnapshot(msgspec.Struct, frozen=True):
    """A catalogue (``vectors`` is float32 ``[n, dim]`` row-major) and the read positions."""

    topic: str
    positions: dict[int, int]  # partition -> next offset to read
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


def take(catalog: ItemCatalog, *, topic: str, positions: Mapping[int, int], dim: int) -> ReplicaSnapshot:
    """The snapshot of ``catalog`` read up to ``positions`` of ``topic``."""
    ids = catalog.ids()
    infos = [catalog.get(i) for i in ids]
    matrix = (np.stack([info.vector for info in infos]).astype(np.float32, copy=False) if infos
              else np.zeros((0, dim), np.float32))
    return ReplicaSnapshot(
        topic=topic, positions=dict(positions), dim=dim,
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


def crowd_path(worker_dir: Path) -> Path:
    return worker_dir / "recstream-crowd"


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


def read_crowd(path: Path) -> CrowdState | None:
    """The crowd snapshot at ``path``; ``None`` when there is none or it is unreadable (logged)."""
    return _decode(path, CrowdState)


def usable(snapshot: ReplicaSnapshot, *, topic: str, end_offsets: Mapping[int, int]) -> str | None:
    """Why ``snapshot`` cannot seed a replica of ``topic``, whose partitions end at
    ``end_offsets``; ``None``: it can."""
    if snapshot.topic != topic:
        return f"it was read from topic {snapshot.topic!r}, not {topic!r}"
    beyond = {p: o for p, o in snapshot.positions.items() if o > end_offsets.get(p, -1)}
    if beyond:  # the topic was deleted and recreated: its offsets mean other records now
        return f"its offsets {beyond} lie beyond the topic's ends {dict(end_offsets)}"
    return None

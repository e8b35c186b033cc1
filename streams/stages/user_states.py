"""The recommend stage's user states: a faust Table (RocksDB on disk, a changelog topic in
Kafka) read and written a batch at a time.

faust owns what must not be home-made: the changelog topic, recovery of a partition's states
from it when the partition is assigned (after a crash, on another worker after a
rebalance), and the persisted changelog offsets that let a restart skip what RocksDB already
holds. What faust's table does *per key* is what the batched click path avoids: its
``table[key] = value`` is bound to the event being iterated (it reads the partition from
faust's current-event context) and writes one RocksDB put per call. This adapter reads and
writes the same store and the same changelog for many users at once:

- :meth:`load` reads each user's state from its partition's database;
- :meth:`write` puts every changed state in one RocksDB write batch per partition, then
  sends one changelog record per user (``Table.send_changelog``, which records the persisted
  offset as faust does). faust flushes its producer before it commits input offsets, so the
  changelog is durable before the clicks that made it are committed.
- With exactly_once the recommend stage sends the changelog records in its transaction
  itself, and only once that commits puts them locally (:meth:`put_local`) and records
  their offsets (:meth:`persisted`): the local store never holds a state Kafka aborted.

Reaching into the store's partition databases is the one use of faust internals here
(``Store._db_for_partition``); the in-memory store (``state.store=memory``, tests) is a plain
mapping.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from faust.types import TP

from streams.interest import UserState, decode_state, encode_state

#: The faust table of user states; its changelog topic is ``<app id>-user-state-changelog``.
STATE_TABLE = "user-state"


def changelog_topic(group: str) -> str:
    """faust names a table's changelog ``<app id>-<table>-changelog``."""
    return f"{group}-{STATE_TABLE}-changelog"


class UserStates:
    """Batch reads and write-backs over the faust table ``table``."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def _db(self, partition: int) -> Any | None:
        """The partition's RocksDB handle, or ``None`` for the in-memory store."""
        db_for = getattr(self.table.data, "_db_for_partition", None)
        return db_for(partition) if db_for is not None else None

    def count(self, partitions: Iterable[int]) -> int:
        """About how many users have a state in ``partitions`` (RocksDB's own estimate of its
        keys: exact counting would read the whole store)."""
        if getattr(self.table.data, "_db_for_partition", None) is None:  # the in-memory store
            return len(self.table.data.data)
        total = 0
        for partition in partitions:
            db = self._db(partition)
            estimate = db.property_int_value("rocksdb.estimate-num-keys") if db is not None else None
            total += int(estimate or 0)
        return total

    def load(self, keys: Iterable[tuple[bytes, int]]) -> dict[bytes, UserState | None]:
        """Each ``(user key, partition)``'s stored state (``None``: a user never seen).

        ``StateDecodeError`` is not caught: a state that does not decode is a bug or a foreign
        writer, and the caller decides what happens to that user's clicks."""
        by_partition: dict[int, list[bytes]] = defaultdict(list)
        for key, partition in keys:
            by_partition[partition].append(key)
        found: dict[bytes, UserState | None] = {}
        for partition, wanted in by_partition.items():
            db = self._db(partition)
            if db is None:
                raws = [self.table.data.data.get(key) for key in wanted]
            else:
                raws = db[wanted] if len(wanted) > 1 else [db.get(wanted[0])]  # rocksdict multi-get
            for key, raw in zip(wanted, raws, strict=True):
                found[key] = decode_state(raw) if raw is not None else None
        return found

    def write(self, changed: Mapping[bytes, tuple[int, UserState]]) -> None:
        """Write back each changed user's state once: locally, then to the changelog."""
        encoded = self.encode(changed)
        self.put_local(encoded)
        for key, (partition, raw) in encoded.items():
            self.table.send_changelog(partition, key, raw)

    @staticmethod
    def encode(changed: Mapping[bytes, tuple[int, UserState]]) -> dict[bytes, tuple[int, bytes]]:
        """Each changed user's ``(partition, stored bytes)``."""
        return {key: (partition, encode_state(state)) for key, (partition, state) in changed.items()}

    @property
    def changelog_topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    def put_local(self, encoded: Mapping[bytes, tuple[int, bytes]]) -> None:
        """Put encoded states in the local store: one RocksDB write batch per partition."""
        by_partition: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        for key, (partition, raw) in encoded.items():
            by_partition[partition].append((key, raw))
        for partition, rows in by_partition.items():
            db = self._db(partition)
            if db is None:
                self.table.data.data.update(rows)
            elif getattr(self.table.data, "use_rocksdict", False):
                from rocksdict import WriteBatch

                batch = WriteBatch(raw_mode=True)
                for key, raw in rows:
                    batch.put(key, raw)
                db.write(batch)
            else:  # faust on python-rocksdb (when that package is installed): puts one by one
                for key, raw in rows:
                    db.put(key, raw)

    def persisted(self, offsets: Mapping[int, int]) -> None:
        """Record, per partition, the changelog offset the local store now holds (what
        ``Table.send_changelog`` records when a changelog record is acknowledged): a restart
        recovers only the changelog records after it."""
        topic = self.changelog_topic
        for partition, offset in offsets.items():
            self.table.data.set_persisted_offset(TP(topic, partition), offset)

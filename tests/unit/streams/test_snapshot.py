"""The index replica's restart snapshot: what it keeps, and when it refuses to be used."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np

from streams import snapshot
from streams.catalog import ItemCatalog, ItemInfo

NOW = 1_700_000_000.0
DAY = 86_400.0
MARKS = {0: snapshot.Fingerprint(2, b"i2", 1_700_000_000_000), 1: snapshot.Fingerprint(6, b"i4", 1_700_000_000_500)}


def _catalog(n: int = 5, dim: int = 8) -> ItemCatalog:
    rng = np.random.default_rng(0)
    catalog = ItemCatalog()
    for k in range(n):
        vector = rng.standard_normal(dim).astype(np.float32)
        catalog.put(f"i{k}", ItemInfo(vector=vector / np.linalg.norm(vector), title=f"title {k}",
                                      tags=("a", "b")[: k % 3], created_at_s=None if k % 2 else 1e9 + k))
    catalog.model_version = "m@1"
    return catalog


def test_a_written_snapshot_restores_the_same_catalogue(tmp_path: Path) -> None:
    catalog = _catalog()
    path = snapshot.snapshot_path(tmp_path)
    snapshot.write(path, snapshot.take(catalog, topic="item-vectors", positions={0: 3, 1: 7}, fingerprints=MARKS,
                                     dim=8, now_s=NOW))

    loaded = snapshot.read(path)
    assert loaded is not None and loaded.positions == {0: 3, 1: 7} and path.parent == tmp_path
    assert loaded.fingerprints == MARKS and loaded.taken_at_s == NOW
    restored = ItemCatalog()
    snapshot.restore(loaded, restored)
    assert restored.ids() == catalog.ids() and restored.model_version == "m@1"
    for item_id in catalog.ids():
        a, b = catalog.get(item_id), restored.get(item_id)
        assert (a.title, a.tags, a.created_at_s) == (b.title, b.tags, b.created_at_s)
        np.testing.assert_array_equal(a.vector, b.vector)
    assert not list(tmp_path.glob("*.tmp"))  # the temp file was renamed into place


def test_an_empty_catalogue_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "index.replica"
    snapshot.write(path, snapshot.take(ItemCatalog(), topic="t", positions={}, fingerprints={}, dim=4, now_s=NOW))
    loaded = snapshot.read(path)
    assert loaded is not None and loaded.item_ids == [] and loaded.dim == 4


def test_missing_corrupt_or_inconsistent_snapshots_are_not_used(tmp_path: Path) -> None:
    path = tmp_path / "index.replica"
    assert snapshot.read(path) is None
    path.write_bytes(b"\x00not msgpack")
    assert snapshot.read(path) is None
    good = snapshot.take(_catalog(), topic="t", positions={0: 1}, fingerprints={}, dim=8, now_s=NOW)
    path.write_bytes(msgspec.msgpack.encode(msgspec.structs.replace(good, vectors=good.vectors[:-4])))
    assert snapshot.read(path) is None  # a truncated vector buffer


def test_a_snapshot_seeds_only_the_topic_it_was_read_from_while_its_deletes_are_kept() -> None:
    snap = snapshot.take(_catalog(), topic="item-vectors", positions={0: 10, 1: 4}, fingerprints=MARKS,
                         dim=8, now_s=NOW)
    ok = {"topic": "item-vectors", "begin_offsets": {0: 0, 1: 0}, "end_offsets": {0: 12, 1: 4},
          "now_s": NOW + 60, "tombstones_kept_s": DAY}
    assert snapshot.usable(snap, **ok) is None
    assert "topic" in snapshot.usable(snap, **{**ok, "topic": "other"})
    assert "beyond" in snapshot.usable(snap, **{**ok, "end_offsets": {0: 9, 1: 4}})  # recreated, emptier
    assert "deleted" in snapshot.usable(snap, **{**ok, "begin_offsets": {0: 11, 1: 0}})  # records removed
    # a delete written after the snapshot may be compacted away once the topic's retention passed
    assert "old" in snapshot.usable(snap, **{**ok, "now_s": NOW + DAY - snapshot.TOMBSTONE_MARGIN_S + 1})

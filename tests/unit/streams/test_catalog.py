"""The item catalogue: one matrix of vectors, rows appended, views that never change."""

from __future__ import annotations

import numpy as np
import pytest

from streams.catalog import ItemCatalog, ItemInfo


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_put_get_remove_and_gather_by_rows():
    catalog = ItemCatalog()
    catalog.put("a", ItemInfo(vector=unit(1, 0), title="A", tags=("x",), created_at_s=5.0))
    catalog.put("b", ItemInfo(vector=unit(0, 1)))
    assert len(catalog) == 2 and "a" in catalog and catalog.dim == 2
    info = catalog.get("a")
    assert info is not None and (info.title, info.tags, info.created_at_s) == ("A", ("x",), 5.0)
    rows = catalog.rows(["b", "missing", "a"])
    assert rows.tolist()[1] == -1
    np.testing.assert_array_equal(catalog.vectors(rows[rows >= 0]), np.stack([unit(0, 1), unit(1, 0)]))
    catalog.remove("a")
    assert "a" not in catalog and catalog.get("a") is None and catalog.vector("a") is None
    assert catalog.rows(["a"]).tolist() == [-1] and catalog.ids() == ["b"]


def test_a_vector_handed_out_never_changes_and_cannot_be_written():
    catalog = ItemCatalog()
    catalog.put("a", ItemInfo(vector=unit(1, 0)))
    before = catalog.vector("a")
    with pytest.raises(ValueError):
        before[0] = 2.0  # read-only
    catalog.put("a", ItemInfo(vector=unit(0, 1)))  # re-encoded: a new row
    for n in range(20_000):  # growth and compaction (deleted rows outnumber live ones)
        catalog.put(f"n{n}", ItemInfo(vector=unit(1, 1 + n)))
        if n % 10:
            catalog.remove(f"n{n}")
    np.testing.assert_array_equal(before, unit(1, 0))
    np.testing.assert_array_equal(catalog.vector("a"), unit(0, 1))
    np.testing.assert_array_equal(catalog.vector("n19990"), unit(1, 19_991))
    assert len(catalog) == 1 + 2_000
    live = catalog.ids()
    assert (catalog.rows(live) >= 0).all() and catalog.vectors(catalog.rows(live)).shape == (len(live), 2)


def test_a_vector_of_another_dimension_is_refused():
    catalog = ItemCatalog()
    catalog.put("a", ItemInfo(vector=unit(1, 0)))
    with pytest.raises(ValueError, match="3-d vector"):
        catalog.put("b", ItemInfo(vector=unit(1, 0, 0)))

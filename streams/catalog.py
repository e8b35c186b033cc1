"""The items a worker knows: each item's vector and what a reader needs to show it.

Vectors live in one float32 matrix, a row per item, so that the click path gathers the
vectors of a user's hundred candidates with one fancy index (``vectors(rows(ids))``) rather
than stacking a hundred small arrays. Rows are appended and never overwritten: a vector
handed out (a read-only view) stays what it was even when its item is re-encoded or
deleted; deleted rows are reclaimed by compacting into a new matrix once they are the
majority.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class ItemInfo:
    vector: np.ndarray  # float32 [dim], unit norm, read-only
    title: str = ""
    tags: tuple[str, ...] = ()
    created_at_s: float | None = None


class ItemCatalog:
    """Every item this worker knows (the index only mirrors it: what is not here is not offered)."""

    #: Deleted or replaced rows tolerated beyond the live ones before the matrix is compacted.
    SLACK_ROWS = 4_096

    def __init__(self) -> None:
        self._row: dict[str, int] = {}
        self._meta: dict[str, tuple[str, tuple[str, ...], float | None]] = {}
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._used = 0  # rows written, live or not
        self.model_version = ""

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    @property
    def dim(self) -> int:
        """The vectors' dimension (0 before the first item)."""
        return int(self._matrix.shape[1])

    def get(self, item_id: str) -> ItemInfo | None:
        row = self._row.get(item_id)
        if row is None:
            return None
        title, tags, created_at_s = self._meta[item_id]
        return ItemInfo(vector=self._matrix[row], title=title, tags=tags, created_at_s=created_at_s)

    def ids(self) -> list[str]:
        return list(self._row)

    def put(self, item_id: str, info: ItemInfo) -> None:
        """Add or replace an item. ``ValueError`` when its vector has another dimension."""
        vector = np.asarray(info.vector, dtype=np.float32).reshape(-1)
        matrix = self._matrix
        if matrix.shape[1] != vector.size:
            if self._row or matrix.shape[1]:
                raise ValueError(f"item {item_id!r} has a {vector.size}-d vector, the catalogue holds "
                                 f"{matrix.shape[1]}-d ones")
            matrix = self._matrix = np.zeros((0, vector.size), dtype=np.float32)
        if self._used == matrix.shape[0]:
            if self._used - len(self._row) > max(len(self._row), self.SLACK_ROWS):
                self._compact()
            else:
                grown = np.zeros((max(16, 2 * matrix.shape[0]), matrix.shape[1]), dtype=np.float32)
                grown[: self._used] = matrix[: self._used]
                grown.flags.writeable = False
                self._matrix = grown
            matrix = self._matrix
        matrix.flags.writeable = True
        matrix[self._used] = vector
        matrix.flags.writeable = False
        self._row[item_id] = self._used
        self._used += 1
        self._meta[item_id] = (info.title, info.tags, info.created_at_s)

    def remove(self, item_id: str) -> None:
        if self._row.pop(item_id, None) is not None:
            del self._meta[item_id]

    def vector(self, item_id: str) -> np.ndarray | None:
        """The item's vector (a read-only view), None when the item is unknown."""
        row = self._row.get(item_id)
        return None if row is None else self._matrix[row]

    def rows(self, item_ids: Iterable[str], count: int = -1) -> np.ndarray:
        """Each item's row for :meth:`vectors`, -1 where the item is unknown (``count``: how
        many ids there are, when known: the array is then filled in one pass)."""
        row = self._row.get
        return np.fromiter((row(i, -1) for i in item_ids), dtype=np.intp, count=count)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The vectors at ``rows`` (all known: from :meth:`rows`), as a new ``(n, dim)`` array."""
        return self._matrix[rows]

    def _compact(self) -> None:
        """Into a new matrix, the live rows only (views handed out keep the old one)."""
        ids = list(self._row)
        rows = np.fromiter(self._row.values(), dtype=np.intp, count=len(ids))
        matrix = np.zeros((max(16, 2 * len(ids)), self._matrix.shape[1]), dtype=np.float32)
        matrix[: len(ids)] = self._matrix[rows]
        matrix.flags.writeable = False
        self._matrix, self._used = matrix, len(ids)
        self._row = {item_id: j for j, item_id in enumerate(ids)}

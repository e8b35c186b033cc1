"""Brute-force numpy vector index: the reference the Qdrant adapters are tested against.

Layout: one contiguous float32 matrix ``[capacity, dim]`` whose first ``count()`` rows are
live, plus ``item_id -> row`` and ``row -> item_id``. Delete moves the last live row into
the freed slot (swap-delete), so live rows stay dense and a search is one product over
them; capacity doubles when full (amortised O(1) appends).

Scores are true cosine similarities: stored rows and queries are normalised on a copy
(as Qdrant's Cosine distance does on upsert and on query), so a caller's slightly
un-normalised vector scores the same here as in Qdrant. Exact, so ``optimize`` is a no-op.
Keeps no payloads (nothing reads them back) and nothing on disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np

from streams import products
from streams.errors import IndexError_
from streams.index._common import Excludes, check_dim, check_queries, check_upsert, rank_hits, row_excludes
from streams.index.base import Hit

__all__ = ["MemoryIndex"]

_INITIAL_CAPACITY = 1024


def _normalised(matrix: np.ndarray) -> np.ndarray:
    """Row-wise L2-normalised copy of a float32 ``[n, dim]`` matrix; zero rows stay zero
    (Qdrant scores a zero vector 0 against everything)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)  # [n, 1]
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


class MemoryIndex:
    """Exact cosine search over an in-process numpy matrix. See the module docstring."""

    def __init__(self, dim: int, *, initial_capacity: int = _INITIAL_CAPACITY) -> None:
        """Create an empty index for ``dim``-dimensional vectors."""
        self._dim = check_dim(dim)
        self._matrix = np.zeros((max(1, initial_capacity), self._dim), dtype=np.float32)
        self._row_of: dict[str, int] = {}
        self._id_at: list[str] = []  # row -> item_id for live rows
        self._closed = False

    @property
    def name(self) -> str:
        """``"memory"``."""
        return "memory"

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    def upsert(
        self,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Insert or overwrite rows; ``payloads`` are validated and dropped."""
        self._check_open()
        rows = _normalised(check_upsert(item_ids, vectors, payloads, self._dim))  # [n, dim]
        for item_id, row in zip(item_ids, rows):
            slot = self._row_of.get(item_id)
            if slot is None:
                slot = len(self._id_at)
                self._grow_to(slot + 1)
                self._row_of[item_id] = slot
                self._id_at.append(item_id)
            self._matrix[slot] = row

    def delete(self, item_ids: Sequence[str]) -> None:
        """Swap-delete each present id; absent ids are ignored."""
        self._check_open()
        for item_id in item_ids:
            slot = self._row_of.pop(item_id, None)
            if slot is None:
                continue
            last = len(self._id_at) - 1
            if slot != last:
                moved = self._id_at[last]
                self._matrix[slot] = self._matrix[last]
                self._id_at[slot] = moved
                self._row_of[moved] = slot
            self._id_at.pop()

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        exclude: AbstractSet[str] = frozenset(),
    ) -> list[Hit]:
        """Exact top-``k`` by cosine; see :meth:`VectorIndex.search`."""
        self._check_open()
        query = check_queries(vector, self._dim, k, batch=False)
        return self._search_rows(query[None, :], k, [exclude])[0]

    def search_batch(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        exclude: Excludes = frozenset(),
    ) -> list[list[Hit]]:
        """Exact top-``k`` for each row, each scored as it would be alone (:mod:`streams.products`)."""
        self._check_open()
        queries = check_queries(vectors, self._dim, k, batch=True)
        return self._search_rows(queries, k, row_excludes(exclude, queries.shape[0]))

    def count(self) -> int:
        """Number of live rows."""
        self._check_open()
        return len(self._id_at)

    def optimize(self) -> None:
        """No-op: brute force has no index to build."""
        self._check_open()

    def flush(self) -> None:
        """No-op: nothing is on disk."""
        self._check_open()

    def close(self) -> None:
        """Drop the matrix. Idempotent."""
        self._closed = True
        self._matrix = np.zeros((0, self._dim), dtype=np.float32)
        self._row_of.clear()
        self._id_at.clear()

    # -- internals -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise IndexError_("memory index is closed")

    def _grow_to(self, rows: int) -> None:
        capacity = self._matrix.shape[0]
        if rows <= capacity:
            return
        while capacity < rows:
            capacity *= 2
        grown = np.zeros((capacity, self._dim), dtype=np.float32)
        grown[: len(self._id_at)] = self._matrix[: len(self._id_at)]
        self._matrix = grown

    def _search_rows(
        self, queries: np.ndarray, k: int, excludes: list[AbstractSet[str]]
    ) -> list[list[Hit]]:
        live = len(self._id_at)
        if k == 0 or live == 0:
            return [[] for _ in range(queries.shape[0])]
        # the same scores for a query in any batch: a batch of users gets each user's own list
        scores = products.scores(self._matrix[:live], _normalised(queries))  # [m, live]
        results: list[list[Hit]] = []
        for column, exclude in zip(scores, excludes, strict=True):  # column: [live]
            fetch = min(live, k + len(exclude))
            if fetch < live:
                # The fetch-th largest score; take every row at or above it so a tie that
                # straddles the cut is broken by item id, not by row order.
                kth = column[np.argpartition(column, live - fetch)[live - fetch]]
                rows = np.flatnonzero(column >= kth)
            else:
                rows = np.arange(live)
            results.append(
                rank_hits(((self._id_at[r], float(column[r])) for r in rows), k, exclude)
            )
        return results

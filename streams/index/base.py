"""The vector-index contract every adapter implements.

An index maps an ``item_id`` (any string) to one L2-normalised float32 vector and answers
nearest-neighbour queries by cosine similarity. Three adapters implement it, one module
each: :class:`~streams.index.memory.MemoryIndex` (brute-force numpy, the reference),
:class:`~streams.index.edge.QdrantEdgeIndex` (in-process Qdrant Edge, the default) and
:class:`~streams.index.remote.QdrantRemoteIndex` (a Qdrant server via qdrant-client).
:func:`streams.index.factory.open_index` is the one place that picks among them.

Score direction: a :class:`Hit`'s ``score`` is the cosine similarity in [-1, 1];
HIGHER IS BETTER. Results are ordered by score descending, ties by ``item_id`` ascending.

Excluding items (the user's seen set) is done by over-fetching ``k + len(exclude)``
candidates and dropping excluded ids in Python, never with an engine-side filter:
measured on Qdrant Edge, a ``must_not HasId`` filter loses recall while over-fetching keeps
recall 1.0 at the same speed (docs/architecture.md, "Facts the design rests on").

Qdrant point ids must be unsigned ints or UUIDs, so an ``item_id`` is stored under
:func:`point_id` (a UUIDv5 of the item id) with the item id itself kept in the payload
under :data:`ITEM_ID_KEY`; searches read the item id back from the payload.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = ["Hit", "VectorIndex", "point_id", "ITEM_ID_KEY", "POINT_ID_NAMESPACE"]

#: Namespace of the UUIDv5 point ids. Fixed forever: changing it orphans every stored point.
POINT_ID_NAMESPACE = uuid.UUID("6f1d8a52-3c1e-5b0a-9d43-7e2c4b9a1f00")

#: Payload key holding the caller's item id. Adapters set it last, so it cannot be overridden
#: by a caller's payload.
ITEM_ID_KEY = "item_id"


def point_id(item_id: str) -> uuid.UUID:
    """The Qdrant point id of ``item_id``: ``uuid5(POINT_ID_NAMESPACE, item_id)``.

    Deterministic, so upserting the same item twice overwrites one point, and every
    replica (and every restart) agrees on the id without a lookup table.
    """
    return uuid.uuid5(POINT_ID_NAMESPACE, item_id)


class Hit(NamedTuple):
    """One search result (a named tuple: a click builds ~30 of them, and a frozen dataclass
    costs ~3x a tuple to build).

    Attributes:
        item_id: The id given to :meth:`VectorIndex.upsert`.
        score: Cosine similarity between the query and the item, in [-1, 1].
            HIGHER IS BETTER (1.0 = same direction).
    """

    item_id: str
    score: float


@runtime_checkable
class VectorIndex(Protocol):
    """A cosine-similarity nearest-neighbour index over ``item_id -> vector``.

    Not thread-safe: one owner (a worker's event loop) calls it. Every method raises
    :class:`streams.errors.IndexError_` when the index refuses an operation (wrong
    dimension, non-finite values, closed, engine failure); engine exceptions are chained.
    """

    @property
    def name(self) -> str:
        """Short adapter name for logs and reports: ``"memory"``, ``"qdrant-edge"``, ``"qdrant"``."""
        ...

    @property
    def dim(self) -> int:
        """Vector dimension this index stores; every vector passed in must have it."""
        ...

    def upsert(
        self,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Insert or overwrite items; visible to the next search.

        Args:
            item_ids: ``n`` item ids. A repeated id within one call: the last one wins.
            vectors: float32 ``[n, dim]``, L2-normalised by the caller. Never mutated.
            payloads: ``n`` JSON-able mappings stored beside the vectors where the engine
                keeps payloads (the ``item_id`` key is reserved and always set to the id).

        Raises:
            IndexError_: ``vectors`` is not ``[n, dim]``, holds NaN/inf, or the lengths of
                ``item_ids`` / ``payloads`` differ from ``n``; nothing is written then.
        """
        ...

    def delete(self, item_ids: Sequence[str]) -> None:
        """Remove items. Ids that are not in the index are ignored."""
        ...

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        exclude: AbstractSet[str] = frozenset(),
    ) -> list[Hit]:
        """The ``k`` items most similar to ``vector``, excluded ids left out.

        Over-fetches ``k + len(exclude)`` and drops excluded ids in Python (no engine
        filter; see the module docstring).

        Args:
            vector: float ``[dim]``; need not be normalised (cosine). Never mutated.
            k: Number of hits wanted; ``0`` gives ``[]``.
            exclude: Item ids that must not appear (e.g. the user's seen items).

        Returns:
            At most ``k`` hits, score descending, ties by ``item_id`` ascending.

        Raises:
            IndexError_: wrong shape, non-finite values or ``k < 0``.
        """
        ...

    def search_batch(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        exclude: AbstractSet[str] | Sequence[AbstractSet[str]] = frozenset(),
    ) -> list[list[Hit]]:
        """:meth:`search` for each row of ``vectors`` ``[m, dim]``, in one engine call where
        the engine has a batch API. Returns ``m`` lists, in row order. ``exclude`` is one set
        for every row or a sequence of ``m`` sets, one per row (a batch of queries from many
        users, each with its own seen items); each row over-fetches by its own set's size."""
        ...

    def count(self) -> int:
        """Exact number of items stored."""
        ...

    def optimize(self) -> None:
        """Build the ANN index over everything stored; blocks until done.

        Qdrant Edge indexes nothing until this is called, and the build holds the GIL
        (100k x 384-d: about a minute), so call it off the serving path. A no-op where
        the engine indexes by itself (a Qdrant server) or never (numpy brute force).
        """
        ...

    def flush(self) -> None:
        """Make every acknowledged write durable on disk (no-op for in-memory stores)."""
        ...

    def close(self) -> None:
        """Flush and release files, locks and connections. Idempotent; any later call
        other than ``close`` raises :class:`~streams.errors.IndexError_`."""
        ...

"""Qdrant server (or cluster) index through ``qdrant-client``: the at-scale option.

Where the collection lives is read from one string, ``url``:

* ``http://...`` / ``https://...``: a Qdrant server (``api_key`` optional).
* ``":memory:"``: qdrant-client's in-process local mode, gone on close.
* anything else: a directory for qdrant-client's on-disk local mode (survives reopen;
  one process at a time holds its lock).

Local mode is a pure-Python brute-force engine (17 ms/query at 10k points, 126 ms at 100k,
docs/architecture.md): it exists to test this adapter's code path without a server, not to serve.

The collection (one unnamed Cosine vector of ``dim``) is created when missing; an existing
one with another dimension, distance or named vectors is refused. A server indexes by
itself in the background, so :meth:`QdrantRemoteIndex.optimize` and ``flush`` are no-ops;
writes use ``wait=True`` so they are searchable when the call returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from streams.errors import ConfigError, IndexError_
from streams.index._common import (
    Excludes,
    check_dim,
    check_queries,
    check_upsert,
    engine_errors,
    merged_payload,
    rank_hits,
    row_excludes,
)
from streams.index.base import ITEM_ID_KEY, Hit, point_id

__all__ = ["QdrantRemoteIndex"]

_MEMORY = ":memory:"


def _is_server_url(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _make_client(url: str, api_key: str | None) -> QdrantClient:
    """The one place that maps ``url`` to qdrant-client's remote or local mode."""
    if _is_server_url(url):
        return QdrantClient(url=url, api_key=api_key)
    if api_key is not None:
        raise ConfigError(
            f"an index API key was given but the index URL {url!r} is qdrant-client's local "
            "mode (':memory:' or a path): set RECSTREAM_INDEX__URL to an http(s):// URL "
            "or unset RECSTREAM_INDEX__API_KEY"
        )
    if url == _MEMORY:
        return QdrantClient(location=_MEMORY)
    return QdrantClient(path=url)


class QdrantRemoteIndex:
    """Cosine index in a Qdrant collection via qdrant-client. See the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        dim: int,
        collection: str,
        api_key: str | None = None,
    ) -> None:
        """Connect, then create or verify ``collection``.

        Args:
            url: ``http(s)://host:port`` of a server, ``":memory:"``, or a local-mode path.
            dim: Vector dimension.
            collection: Collection name.
            api_key: Server API key (only with an http(s) URL).

        Raises:
            ConfigError: an API key with a local-mode URL.
            IndexError_: the server is unreachable, or the collection exists with another
                dimension / distance / vector layout.
        """
        self._dim = check_dim(dim)
        self._url = url
        self._collection = collection
        self._where = f"collection {collection!r} at {url}"
        with self._errors("connect"):
            client = _make_client(url, api_key)
        self._client: QdrantClient | None = client
        try:
            self._ensure_collection(client)
        except BaseException:
            client.close()
            raise
        # Local mode ignores search params and warns when given any; a server picks
        # between HNSW and a full scan by itself (its full_scan_threshold).
        self._with_payload = [ITEM_ID_KEY]

    @property
    def name(self) -> str:
        """``"qdrant"``."""
        return "qdrant"

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def collection(self) -> str:
        """The collection name."""
        return self._collection

    def upsert(
        self,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Upsert one batch, ``wait=True``; the item id goes into the payload."""
        client = self._open_client()
        matrix = check_upsert(item_ids, vectors, payloads, self._dim)  # [n, dim]
        if matrix.shape[0] == 0:
            return
        # A repeated id within one batch: keep the last, as the other adapters do.
        last_row = {item_id: i for i, item_id in enumerate(item_ids)}
        rows = sorted(last_row.values())
        batch = models.Batch(
            ids=[str(point_id(item_ids[i])) for i in rows],
            vectors=matrix[rows].tolist(),
            payloads=[
                merged_payload(item_ids[i], payloads[i] if payloads is not None else None)
                for i in rows
            ],
        )
        with self._errors("upsert"):
            client.upsert(self._collection, points=batch, wait=True)

    def delete(self, item_ids: Sequence[str]) -> None:
        """Delete by point id, ``wait=True``; absent ids are ignored."""
        client = self._open_client()
        if not item_ids:
            return
        selector = models.PointIdsList(points=[str(point_id(item_id)) for item_id in item_ids])
        with self._errors("delete"):
            client.delete(self._collection, points_selector=selector, wait=True)

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        exclude: AbstractSet[str] = frozenset(),
    ) -> list[Hit]:
        """Top-``k`` by cosine via ``query_points``, over-fetching ``k + len(exclude)``."""
        client = self._open_client()
        query = check_queries(vector, self._dim, k, batch=False)
        if k == 0:
            return []
        with self._errors("query"):
            response = client.query_points(
                self._collection,
                query=query.tolist(),
                limit=k + len(exclude),
                with_payload=self._with_payload,
            )
        return rank_hits(self._pairs(response.points), k, exclude)

    def search_batch(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        exclude: Excludes = frozenset(),
    ) -> list[list[Hit]]:
        """All rows in one ``query_batch_points`` round trip."""
        client = self._open_client()
        queries = check_queries(vectors, self._dim, k, batch=True)
        excludes = row_excludes(exclude, queries.shape[0])
        if k == 0 or queries.shape[0] == 0:
            return [[] for _ in range(queries.shape[0])]
        requests = [
            models.QueryRequest(
                query=row.tolist(), limit=k + len(ex), with_payload=self._with_payload
            )
            for row, ex in zip(queries, excludes, strict=True)
        ]
        with self._errors("query_batch"):
            responses = client.query_batch_points(self._collection, requests=requests)
        return [rank_hits(self._pairs(response.points), k, ex)
                for response, ex in zip(responses, excludes, strict=True)]

    def count(self) -> int:
        """Exact point count."""
        client = self._open_client()
        with self._errors("count"):
            return int(client.count(self._collection, exact=True).count)

    def optimize(self) -> None:
        """No-op: a server builds its HNSW index in the background; local mode is brute force."""
        self._open_client()

    def flush(self) -> None:
        """No-op: writes are acknowledged with ``wait=True`` (server) or written at once (local)."""
        self._open_client()

    def close(self) -> None:
        """Close the client (releases local mode's folder lock). Idempotent."""
        client, self._client = self._client, None
        if client is None:
            return
        with self._errors("close"):
            client.close()

    # -- internals -----------------------------------------------------------------

    def _errors(self, action: str) -> AbstractContextManager[None]:
        return engine_errors("qdrant-client", action, self._where)

    def _open_client(self) -> QdrantClient:
        if self._client is None:
            raise IndexError_(f"qdrant index ({self._where}) is closed")
        return self._client

    def _ensure_collection(self, client: QdrantClient) -> None:
        with self._errors("collection check"):
            exists = client.collection_exists(self._collection)
        if not exists:
            params = models.VectorParams(size=self._dim, distance=models.Distance.COSINE)
            try:
                client.create_collection(self._collection, vectors_config=params)
            except Exception as exc:
                # Another replica may have created it first; verify below. Anything else
                # means the collection still does not exist, which is reported as such.
                with self._errors("collection check"):
                    if not client.collection_exists(self._collection):
                        raise IndexError_(
                            f"qdrant-client could not create {self._where}: {exc}"
                        ) from exc
        with self._errors("collection info"):
            vectors = client.get_collection(self._collection).config.params.vectors
        if not isinstance(vectors, models.VectorParams):
            raise IndexError_(
                f"{self._where} has named vectors {sorted(vectors or {})}; recstream needs "
                "one unnamed vector: use another collection (RECSTREAM_INDEX__COLLECTION)"
            )
        if vectors.size != self._dim or vectors.distance != models.Distance.COSINE:
            raise IndexError_(
                f"{self._where} stores {vectors.size}-d {vectors.distance.value} vectors, "
                f"but the encoder gives {self._dim}-d Cosine: use another collection "
                "(RECSTREAM_INDEX__COLLECTION) or re-create this one"
            )

    def _pairs(self, points: Sequence[models.ScoredPoint]) -> Iterator[tuple[str, float]]:
        for point in points:
            item_id = (point.payload or {}).get(ITEM_ID_KEY)
            if not isinstance(item_id, str):
                raise IndexError_(
                    f"point {point.id} in {self._where} has no {ITEM_ID_KEY!r} payload: "
                    "the collection was written by something other than recstream"
                )
            yield item_id, float(point.score)

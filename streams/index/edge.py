"""In-process Qdrant Edge index (``qdrant-edge-py``): the default, one replica per worker.

An ``EdgeShard`` is a directory (config, segments, WAL). :class:`QdrantEdgeIndex` creates it
when the directory is missing or empty and loads it otherwise, checking that the stored
vectors have this index's dimension and Cosine distance.

Facts this adapter is built on (qdrant-edge-py 0.9; docs/architecture.md, "Facts the design rests on"):

* Writes are visible to the next query; the WAL makes acknowledged writes survive a crash.
* Nothing is HNSW-indexed until :meth:`optimize` runs, and only segments above the
  optimizer's ``indexing_threshold`` (KB of vectors) are indexed at all. The build and every
  query hold the GIL (100k x 384-d: 50-77 s). Unindexed points are scanned exactly.
* Below ~20k items exact search is as fast as HNSW, so under ``exact_search_below`` points
  every query asks for exact search (recall 1.0, and no dependence on when optimize ran).
* Engine errors are plain ``Exception`` ("Service runtime error: ..."); they are re-raised
  as :class:`~streams.errors.IndexError_` with the original chained.
* Point ids are 64-bit integers (:func:`edge_point_id`, a hash of the item id); each point
  carries its item id in its payload. Reading that payload per hit costs a quarter of a
  query, so queries skip it and map point ids to item ids in memory; ids the map lacks (a
  shard reopened from disk) are learned from their payloads once, on first sight. Integer
  ids, not the UUIDs of :func:`~streams.index.base.point_id`, because the engine hands each
  hit's id to Python as an object: a UUID costs ~1.5 us to build, ~170 of them per click.
  Shards written before carry UUIDs and no :data:`POINT_IDS_FILE`; they are still read and
  written with UUIDs (rebuild one, by deleting its directory, to get integer ids).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from streams.errors import IndexError_
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

__all__ = ["DEFAULT_EXACT_SEARCH_BELOW", "POINT_IDS_FILE", "QdrantEdgeIndex", "edge_point_id"]

log = logging.getLogger(__name__)

#: Point count under which queries ask for exact search. Measured on 2 cores: below ~20k
#: items a full scan is as fast as HNSW (docs/architecture.md, "Facts the design rests on").
DEFAULT_EXACT_SEARCH_BELOW = 20_000


#: Marks a shard whose point ids are :func:`edge_point_id` integers (written at create).
POINT_IDS_FILE = "recstream-point-ids"
_U64_IDS = "u64"


def edge_point_id(item_id: str) -> int:
    """The Edge point id of ``item_id``: the first 8 bytes of its BLAKE2b hash, as an integer.

    Deterministic, like :func:`~streams.index.base.point_id`, so every replica and restart
    agrees. Two items meet by chance at ~1e-8 in a catalogue of a million; upserts refuse a
    collision they can see (an id already held by another item).
    """
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest(), "big")


def _engine_errors(action: str, path: Path) -> AbstractContextManager[None]:
    """qdrant_edge's bare ``Exception``s as IndexError_, naming the action and shard."""
    return engine_errors("qdrant-edge", action, f"shard {path}")


class QdrantEdgeIndex:
    """Cosine index in an on-disk Qdrant Edge shard. See the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        dim: int,
        exact_search_below: int = DEFAULT_EXACT_SEARCH_BELOW,
        indexing_threshold_kb: int | None = None,
        hnsw_ef: int | None = None,
        quantization: bool = True,
    ) -> None:
        """Open the shard at ``path``, creating it when the directory is missing or empty.

        Args:
            path: Shard directory.
            dim: Vector dimension; an existing shard with another dimension is refused.
            exact_search_below: Queries use exact search while the shard holds fewer points.
                ``0`` always lets the engine choose (HNSW where built, scan elsewhere).
            indexing_threshold_kb: Segments with more vector data than this are indexed by
                :meth:`optimize`. ``None`` keeps the shard's value (engine default on create).
            hnsw_ef: HNSW search breadth; ``None`` is the engine default.
            quantization: keep an int8 copy of the vectors in RAM that HNSW searches, and
                rescore an oversampled candidate list with the float vectors. At 100k 384-d
                items: 0.15 ms a query instead of 0.28, recall@10 0.991 against 0.994, and
                HNSW builds in half the time. Exact search always reads the float vectors.

        Raises:
            IndexError_: the shard cannot be created or loaded, or its vectors differ in
                dimension or distance.
        """
        self._dim = check_dim(dim)
        self._path = Path(path)
        if exact_search_below < 0:
            raise IndexError_(f"exact_search_below must be >= 0, got {exact_search_below}")
        self._exact_below = exact_search_below
        if quantization:
            self._exact_params = qe.SearchParams(exact=True, quantization=qe.QuantizationSearchParams(ignore=True))
            self._ann_params: qe.SearchParams | None = qe.SearchParams(
                hnsw_ef=hnsw_ef, quantization=qe.QuantizationSearchParams(rescore=True, oversampling=2.0))
        else:
            self._exact_params = qe.SearchParams(exact=True)
            self._ann_params = qe.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef is not None else None
        self._with_payload = qe.PayloadSelector.Include([ITEM_ID_KEY])
        self._item_ids: dict[Any, str] = {}  # point id -> item id
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(
                size=self._dim, distance=qe.Distance.Cosine,
                quantization_config=(qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, always_ram=True)
                                     if quantization else None)),
            optimizers=(
                qe.EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb)
                if indexing_threshold_kb is not None
                else None
            ),
        )
        exists = self._path.is_dir() and any(self._path.iterdir())
        marker = self._path / POINT_IDS_FILE
        with _engine_errors("load" if exists else "create", self._path):
            if exists:
                # load() checks the given vector params against the stored segments.
                self._shard: qe.EdgeShard | None = qe.EdgeShard.load(str(self._path), config)
            else:
                self._shard = qe.EdgeShard.create(str(self._path), config)
                marker.write_text(_U64_IDS)
        integer_ids = marker.is_file() and marker.read_text().strip() == _U64_IDS
        if not integer_ids:
            log.info("qdrant-edge shard %s has UUID point ids (written before integer ids); delete the "
                     "directory to rebuild it with faster integer ids", self._path)
        self._point_id: Callable[[str], Any] = edge_point_id if integer_ids else point_id

    @property
    def name(self) -> str:
        """``"qdrant-edge"``."""
        return "qdrant-edge"

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def path(self) -> Path:
        """The shard directory."""
        return self._path

    def upsert(
        self,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Upsert points :func:`edge_point_id` ``(item_id)`` with the item id in the payload.

        Raises:
            IndexError_: bad shapes, an engine failure, or an item whose point id another
                item already holds (a hash collision; nothing is written).
        """
        shard = self._open_shard()
        matrix = check_upsert(item_ids, vectors, payloads, self._dim)  # [n, dim]
        if matrix.shape[0] == 0:
            return
        ids = [self._point_id(item_id) for item_id in item_ids]
        known = self._item_ids
        batch: dict[Any, str] = {}
        for pid, item_id in zip(ids, item_ids, strict=True):
            other = known.get(pid) or batch.setdefault(pid, item_id)
            if other != item_id:
                raise IndexError_(f"items {other!r} and {item_id!r} hash to the same point id {pid} in "
                                  f"{self._path}: rename one of them")
        points = [
            qe.Point(
                ids[i],
                row,  # the engine copies the row into its own buffer
                merged_payload(item_id, payloads[i] if payloads is not None else None),
            )
            for i, (item_id, row) in enumerate(zip(item_ids, matrix))
        ]
        with _engine_errors("upsert", self._path):
            shard.update(qe.UpdateOperation.upsert_points(points))
        self._item_ids.update(zip(ids, item_ids))

    def delete(self, item_ids: Sequence[str]) -> None:
        """Delete points by id; absent ids are ignored by the engine."""
        shard = self._open_shard()
        if not item_ids:
            return
        ids = [self._point_id(item_id) for item_id in item_ids]
        with _engine_errors("delete", self._path):
            shard.update(qe.UpdateOperation.delete_points(ids))
        for pid in ids:
            self._item_ids.pop(pid, None)

    def search(
        self,
        vector: np.ndarray,
        k: int,
        *,
        exclude: AbstractSet[str] = frozenset(),
    ) -> list[Hit]:
        """Top-``k`` by cosine, over-fetching ``k + len(exclude)``."""
        shard = self._open_shard()
        query = check_queries(vector, self._dim, k, batch=False)
        if k == 0:
            return []
        with _engine_errors("query", self._path):
            params = self._search_params(shard)
            points = shard.query(self._request(query, k + len(exclude), params))
        return rank_hits(self._pairs(points), k, exclude)

    def search_batch(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        exclude: Excludes = frozenset(),
    ) -> list[list[Hit]]:
        """One ``query_batch`` call: the engine plans the batch as one pass over segments."""
        shard = self._open_shard()
        queries = check_queries(vectors, self._dim, k, batch=True)
        excludes = row_excludes(exclude, queries.shape[0])
        if k == 0 or queries.shape[0] == 0:
            return [[] for _ in range(queries.shape[0])]
        with _engine_errors("query_batch", self._path):
            params = self._search_params(shard)
            # Nearest() takes a list ~2.5x faster than a numpy row (exact: float32 -> float -> f32)
            requests = [self._request(row, k + len(ex), params)
                        for row, ex in zip(queries.tolist(), excludes, strict=True)]
            batches = shard.query_batch(qe.QueryBatchRequest(requests))
        return [rank_hits(self._pairs(points), k, ex) for points, ex in zip(batches, excludes, strict=True)]

    def count(self) -> int:
        """Exact point count."""
        shard = self._open_shard()
        with _engine_errors("count", self._path):
            return int(shard.count(qe.CountRequest(exact=True)))

    def optimize(self) -> None:
        """Run the engine's optimizers (HNSW build, vacuum) to completion. Holds the GIL."""
        shard = self._open_shard()
        started_s = time.perf_counter()
        with _engine_errors("optimize", self._path):
            changed = shard.optimize()
            indexed = shard.info().indexed_vectors_count
        log.info(
            "qdrant-edge optimize of %s: changed=%s, %d vectors indexed, %.2f s",
            self._path,
            changed,
            indexed,
            time.perf_counter() - started_s,
        )

    def flush(self) -> None:
        """Flush segments to disk (the WAL already holds every acknowledged write)."""
        shard = self._open_shard()
        with _engine_errors("flush", self._path):
            shard.flush()

    def close(self) -> None:
        """Flush and close the shard. Idempotent."""
        shard, self._shard = self._shard, None
        if shard is None:
            return
        with _engine_errors("close", self._path):
            shard.flush()
            shard.close()

    # -- internals -----------------------------------------------------------------

    def _open_shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise IndexError_(f"qdrant-edge index at {self._path} is closed")
        return self._shard

    def _search_params(self, shard: qe.EdgeShard) -> qe.SearchParams | None:
        # info() is ~1 us while an exact count() is ~130 us at 2k points, so the cheap
        # (approximate) figure decides between exact and engine-chosen search.
        if shard.info().points_count < self._exact_below:
            return self._exact_params
        return self._ann_params

    def _request(
        self, query: list[float] | np.ndarray, limit: int, params: qe.SearchParams | None
    ) -> qe.QueryRequest:
        return qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(query),
            with_payload=False,
            params=params,
        )

    def _pairs(self, points: Sequence[qe.ScoredPoint]) -> Iterable[tuple[str, float]]:
        names = self._item_ids
        try:
            return [(names[point.id], point.score) for point in points]
        except KeyError:  # a point this process did not write (a reopened shard)
            return list(self._learned_pairs(points))

    def _learned_pairs(self, points: Sequence[qe.ScoredPoint]) -> Iterator[tuple[str, float]]:
        names = self._item_ids
        scored = [(point.id, names.get(point.id), point.score) for point in points]
        if any(item_id is None for _, item_id, _ in scored):
            self._learn_item_ids([pid for pid, item_id, _ in scored if item_id is None])
            scored = [(pid, item_id or names.get(pid), score) for pid, item_id, score in scored]
        for pid, item_id, score in scored:
            if item_id is None:
                raise IndexError_(f"qdrant-edge point {pid} in {self._path} vanished while queried")
            yield item_id, float(score)

    def _learn_item_ids(self, ids: list[Any]) -> None:
        """Read the item ids of points this process did not write (a reopened shard)."""
        with _engine_errors("retrieve", self._path):
            records = self._open_shard().retrieve(ids, self._with_payload, False)
        for record in records:
            item_id = (record.payload or {}).get(ITEM_ID_KEY)
            if not isinstance(item_id, str):
                raise IndexError_(
                    f"qdrant-edge point {record.id} in {self._path} has no {ITEM_ID_KEY!r} "
                    "payload: the shard was written by something other than recstream"
                )
            self._item_ids[record.id] = item_id

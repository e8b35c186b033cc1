"""One contract suite for every VectorIndex adapter, plus congruence with MemoryIndex.

The ``backend`` fixture (in the manner of quix-streams' ``store_type``) yields a factory that
opens -- or re-opens -- one store, so each test body runs against:

* ``memory``: the brute-force numpy reference;
* ``qdrant-edge``: Qdrant Edge with its defaults (exact search below 20k points);
* ``qdrant-edge-hnsw``: Qdrant Edge forced to build and use HNSW even on tiny data;
* ``qdrant-local``: qdrant-client's on-disk local mode (the QdrantRemoteIndex code path);
* ``qdrant-server``: a real Qdrant server when ``QDRANT_URL`` is set, skipped otherwise.

Congruence, in the manner of qdrant-client's ``tests/congruence_tests``: same data and
queries into an adapter and into MemoryIndex; ids must match wherever the reference's
scores are not near-tied, and scores must agree within a relative tolerance.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from streams.errors import IndexError_, RecstreamError
from streams.index import Hit, VectorIndex
from streams.index.base import point_id
from streams.index.edge import QdrantEdgeIndex
from streams.index.memory import MemoryIndex
from streams.index.remote import QdrantRemoteIndex

DIM = 48
N_POINTS = 2_000
N_CLUSTERS = 16
K = 10
#: Reference scores closer than this count as tied: their order may differ between engines.
TIE_GAP = 1e-4
#: Relative score tolerance (float32 sums in a different order; the magnitude is <= 1).
SCORE_REL_TOL = 1e-4
SCORE_ABS_TOL = 1e-5


@dataclass(frozen=True)
class Backend:
    """How to open one adapter's store; calling ``open`` again re-opens the same store."""

    name: str
    open: Callable[[int], VectorIndex]  # dim -> index
    persistent: bool


def _server_backend() -> Iterator[Backend]:
    url = os.environ.get("QDRANT_URL")
    if not url:
        pytest.skip("QDRANT_URL is not set: no Qdrant server to test against")
    api_key = os.environ.get("QDRANT_API_KEY") or None
    collection = f"recstream-contract-{uuid.uuid4().hex[:12]}"
    yield Backend(
        "qdrant-server",
        lambda dim: QdrantRemoteIndex(url, dim=dim, collection=collection, api_key=api_key),
        persistent=True,
    )
    from qdrant_client import QdrantClient

    client = QdrantClient(url=url, api_key=api_key)
    try:
        client.delete_collection(collection)
    finally:
        client.close()


@pytest.fixture(
    params=[
        "memory",
        "qdrant-edge",
        "qdrant-edge-hnsw",
        "qdrant-local",
        pytest.param("qdrant-server", marks=pytest.mark.skipif(
            not os.environ.get("QDRANT_URL"), reason="QDRANT_URL is not set: no Qdrant server"
        )),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """One adapter per parameter; see the module docstring."""
    kind = request.param
    if kind == "memory":
        yield Backend(kind, lambda dim: MemoryIndex(dim), persistent=False)
    elif kind == "qdrant-edge":
        yield Backend(kind, lambda dim: QdrantEdgeIndex(tmp_path / "edge", dim=dim), persistent=True)
    elif kind == "qdrant-edge-hnsw":
        # indexing_threshold_kb=1: every segment gets an HNSW graph on optimize();
        # exact_search_below=0: queries use it. hnsw_ef keeps recall exact at 2k points.
        yield Backend(
            kind,
            lambda dim: QdrantEdgeIndex(
                tmp_path / "edge", dim=dim, exact_search_below=0, indexing_threshold_kb=1,
                hnsw_ef=128,
            ),
            persistent=True,
        )
    elif kind == "qdrant-local":
        yield Backend(
            kind,
            lambda dim: QdrantRemoteIndex(str(tmp_path / "qdrant"), dim=dim, collection="items"),
            persistent=True,
        )
    else:
        yield from _server_backend()


@pytest.fixture
def index(backend: Backend) -> Iterator[VectorIndex]:
    idx = backend.open(DIM)
    yield idx
    idx.close()


# -- data --------------------------------------------------------------------------------


def unit(matrix: np.ndarray) -> np.ndarray:
    return (matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` unit vectors around ``N_CLUSTERS`` random centres, and their ids."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CLUSTERS, dim))
    points = centres[rng.integers(0, N_CLUSTERS, n)] + 0.35 * rng.standard_normal((n, dim))
    return [f"item-{i:05d}" for i in range(n)], unit(points)  # [n, dim]


def queries_near(vectors: np.ndarray, m: int, seed: int) -> np.ndarray:
    """``m`` queries near random points, deliberately NOT normalised (cosine must not care)."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.integers(0, len(vectors), m)]
    scale = rng.uniform(0.5, 3.0, (m, 1))
    return ((picked + 0.2 * rng.standard_normal(picked.shape)) * scale).astype(np.float32)


def basis(dim: int = DIM) -> np.ndarray:
    return np.eye(dim, dtype=np.float32)


def scores_close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=SCORE_REL_TOL, abs_tol=SCORE_ABS_TOL)


# -- contract ----------------------------------------------------------------------------


def test_is_a_vector_index(index: VectorIndex, backend: Backend) -> None:
    assert isinstance(index, VectorIndex)
    assert index.dim == DIM
    assert index.name in {"memory", "qdrant-edge", "qdrant"}
    assert index.count() == 0


def test_empty_index_returns_nothing(index: VectorIndex) -> None:
    assert index.search(basis()[0], K) == []
    assert index.search_batch(basis()[:2], K) == [[], []]


def test_upsert_then_search(index: VectorIndex) -> None:
    e = basis()
    index.upsert(["a", "b", "c"], e[:3])
    assert index.count() == 3
    hits = index.search(e[0], 2)
    assert len(hits) == 2
    assert all(type(hit) is Hit and type(hit.item_id) is str and type(hit.score) is float for hit in hits)
    assert hits[0].item_id == "a" and scores_close(hits[0].score, 1.0)
    assert scores_close(hits[1].score, 0.0)


def test_higher_score_is_better_and_ties_break_by_id(index: VectorIndex) -> None:
    e = basis()
    near = unit(e[0] + 0.5 * e[1])  # cos 0.894 to e0
    far = unit(e[0] + 2.0 * e[1])  # cos 0.447 to e0
    opposite = -e[0]
    index.upsert(
        ["tie-c", "far", "tie-a", "opposite", "near", "tie-b"],
        np.stack([e[0], far, e[0], opposite, near, e[0]]),
    )
    hits = index.search(e[0], 6)
    assert [hit.item_id for hit in hits] == ["tie-a", "tie-b", "tie-c", "near", "far", "opposite"]
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert scores_close(hits[-1].score, -1.0)


def test_upsert_overwrites(index: VectorIndex) -> None:
    e = basis()
    index.upsert(["a", "b"], np.stack([e[0], unit(e[0] + e[1])]))
    index.upsert(["a"], e[2:3])
    assert index.count() == 2
    top = index.search(e[2], 1)[0]
    assert top.item_id == "a" and scores_close(top.score, 1.0)
    assert [hit.item_id for hit in index.search(e[0], 2)] == ["b", "a"]  # a no longer at e0


def test_repeated_id_in_one_upsert_keeps_the_last(index: VectorIndex) -> None:
    e = basis()
    index.upsert(["a", "a", "b"], e[:3])
    assert index.count() == 2
    assert index.search(e[1], 1)[0].item_id == "a"


def test_delete_ignores_missing_ids(index: VectorIndex) -> None:
    ids, vectors = clustered(200, DIM, seed=1)
    index.upsert(ids, vectors)
    index.delete(ids[:50] + ["never-there"])
    index.delete([])
    assert index.count() == 150
    hits = index.search(vectors[0], 150)
    assert len(hits) == 150
    assert not {hit.item_id for hit in hits} & set(ids[:50])
    index.delete(ids)
    assert index.count() == 0
    assert index.search(vectors[0], K) == []


def test_exclude_drops_ids_and_still_fills_k(index: VectorIndex) -> None:
    ids, vectors = clustered(300, DIM, seed=2)
    index.upsert(ids, vectors)
    query = vectors[7]
    full = index.search(query, K + 5)
    seen = {hit.item_id for hit in full[:5]} | {"not-an-item"}
    hits = index.search(query, K, exclude=seen)
    assert len(hits) == K
    assert not {hit.item_id for hit in hits} & seen
    assert [hit.item_id for hit in hits] == [hit.item_id for hit in full[5:]]
    batch = index.search_batch(np.stack([query, query]), K, exclude=seen)
    assert [[hit.item_id for hit in row] for row in batch] == [[hit.item_id for hit in hits]] * 2


def test_search_batch_excludes_per_row(index: VectorIndex) -> None:
    """A batch of many users' queries: each row drops its own user's ids, and only those."""
    ids, vectors = clustered(300, DIM, seed=3)
    index.upsert(ids, vectors)
    queries = vectors[[3, 3, 150]]
    full = [[hit.item_id for hit in index.search(q, K + 6)] for q in queries]
    excludes = [set(full[0][:6]), set(), {full[2][0], "not-an-item"}]
    batch = index.search_batch(queries, K, exclude=excludes)
    assert [[hit.item_id for hit in row] for row in batch] == [
        [i for i in full[n] if i not in excludes[n]][:K] for n in range(3)]
    with pytest.raises(IndexError_):
        index.search_batch(queries, K, exclude=[set()])


def test_k_edges(index: VectorIndex) -> None:
    e = basis()
    index.upsert(["a", "b", "c"], e[:3])
    assert index.search(e[0], 0) == []
    assert index.search_batch(e[:2], 0) == [[], []]
    assert len(index.search(e[0], 100)) == 3
    assert index.search_batch(np.zeros((0, DIM), np.float32), K) == []
    with pytest.raises(IndexError_):
        index.search(e[0], -1)


def test_search_batch_matches_search(index: VectorIndex) -> None:
    ids, vectors = clustered(500, DIM, seed=3)
    index.upsert(ids, vectors)
    queries = queries_near(vectors, 6, seed=4)
    batch = index.search_batch(queries, K)
    assert len(batch) == len(queries)
    for query, row in zip(queries, batch):
        single = index.search(query, K)
        assert [hit.item_id for hit in row] == [hit.item_id for hit in single]
        assert all(scores_close(a.score, b.score) for a, b in zip(row, single))


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(np.zeros((2, DIM - 1), np.float32), id="wrong-dim"),
        pytest.param(np.zeros(DIM, np.float32), id="one-dimensional"),
        pytest.param(np.zeros((3, DIM), np.float32), id="length-mismatch"),
        pytest.param(np.array([[np.nan] * DIM, [0.1] * DIM], np.float32), id="nan"),
        pytest.param(np.array([[0.1] * DIM, [np.inf] * DIM], np.float32), id="inf"),
        pytest.param(np.ones((2, DIM), np.int64), id="integer"),
    ],
)
def test_bad_upsert_raises_and_writes_nothing(index: VectorIndex, bad: np.ndarray) -> None:
    with pytest.raises(IndexError_) as info:
        index.upsert(["a", "b"], bad)
    assert isinstance(info.value, RecstreamError) and isinstance(info.value, RuntimeError)
    assert index.count() == 0


def test_bad_payloads_length_raises(index: VectorIndex) -> None:
    with pytest.raises(IndexError_):
        index.upsert(["a", "b"], basis()[:2], payloads=[{}])


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(np.zeros(DIM + 1, np.float32), id="wrong-dim"),
        pytest.param(np.zeros((1, DIM), np.float32), id="two-dimensional"),
        pytest.param(np.full(DIM, np.nan, np.float32), id="nan"),
    ],
)
def test_bad_query_raises(index: VectorIndex, query: np.ndarray) -> None:
    index.upsert(["a"], basis()[:1])
    with pytest.raises(IndexError_):
        index.search(query, K)


def test_bad_batch_query_raises(index: VectorIndex) -> None:
    with pytest.raises(IndexError_):
        index.search_batch(np.zeros((2, DIM + 1), np.float32), K)
    with pytest.raises(IndexError_):
        index.search_batch(np.zeros(DIM, np.float32), K)


def test_caller_arrays_are_not_mutated_or_aliased(index: VectorIndex) -> None:
    ids, vectors = clustered(100, DIM, seed=5)
    vectors = vectors * np.float32(1.5)  # not unit: an in-place normalisation would show
    queries = queries_near(vectors, 3, seed=6)
    kept_vectors, kept_queries = vectors.copy(), queries.copy()
    index.upsert(ids, vectors)
    before = index.search(queries[0], K)
    index.search_batch(queries, K)
    np.testing.assert_array_equal(vectors, kept_vectors)
    np.testing.assert_array_equal(queries, kept_queries)
    vectors[:] = 0.0  # the index must hold its own copy
    after = index.search(queries[0], K)
    assert [hit.item_id for hit in after] == [hit.item_id for hit in before]


def test_payloads_are_kept_out_of_the_item_id(index: VectorIndex) -> None:
    e = basis()
    index.upsert(["a", "b"], e[:2], payloads=[{"item_id": "spoofed", "title": "A"}, {}])
    assert [hit.item_id for hit in index.search(e[0], 2)] == ["a", "b"]


def test_optimize_and_flush_keep_results(index: VectorIndex) -> None:
    ids, vectors = clustered(300, DIM, seed=8)
    index.upsert(ids, vectors)
    before = index.search(vectors[0], K)
    index.optimize()
    index.flush()
    assert index.count() == 300
    assert [hit.item_id for hit in index.search(vectors[0], K)] == [hit.item_id for hit in before]


def test_closed_index_refuses_and_close_is_idempotent(backend: Backend) -> None:
    idx = backend.open(DIM)
    idx.close()
    idx.close()
    with pytest.raises(IndexError_):
        idx.search(basis()[0], K)
    with pytest.raises(IndexError_):
        idx.upsert(["a"], basis()[:1])
    with pytest.raises(IndexError_):
        idx.count()


def test_close_and_reopen_keeps_everything(backend: Backend) -> None:
    if not backend.persistent:
        pytest.skip(f"{backend.name} keeps nothing on disk")
    ids, vectors = clustered(500, DIM, seed=9)
    queries = queries_near(vectors, 4, seed=10)
    first = backend.open(DIM)
    first.upsert(ids, vectors)
    first.delete(ids[:20])
    first.optimize()
    first.upsert(["late"], vectors[:1])  # written after optimize: must survive too
    expected = first.search_batch(queries, K)
    first.close()

    second = backend.open(DIM)
    try:
        assert second.count() == 481
        got = second.search_batch(queries, K)
        assert [[h.item_id for h in row] for row in got] == [[h.item_id for h in row] for row in expected]
        assert second.search(vectors[0], 1)[0].item_id == "late"  # ids[0] was deleted
    finally:
        second.close()


def test_reopen_with_another_dim_is_refused(backend: Backend) -> None:
    if not backend.persistent:
        pytest.skip(f"{backend.name} keeps nothing on disk")
    first = backend.open(DIM)
    first.upsert(["a"], basis()[:1])
    first.close()
    with pytest.raises(IndexError_, match=str(DIM)):
        backend.open(DIM * 2)


def test_point_id_is_a_stable_uuid() -> None:
    assert point_id("item-1") == point_id("item-1")
    assert point_id("item-1") != point_id("item-2")
    assert point_id("item-1").version == 5
    assert str(point_id("i")) == "252e1c19-72d8-579b-a6d4-6670b59c62c1"  # frozen forever


# -- congruence with the numpy reference -------------------------------------------------


def assert_congruent(got: list[Hit], reference: list[Hit], k: int, truth: dict[str, float]) -> None:
    """``reference`` holds k+1 hits, so the score just past the cut is known.

    * same length, scores equal within tolerance position by position;
    * where the reference's score at a position is clear of both neighbours by TIE_GAP,
      the ids match exactly;
    * every returned id's true cosine (``truth``) equals its returned score (the engine may
      order ties differently, but must never attach a score to the wrong item).
    """
    want = reference[:k]
    assert len(got) == len(want)
    scores = [hit.score for hit in reference]
    for i, (g, w) in enumerate(zip(got, want)):
        assert scores_close(g.score, w.score), (i, g, w)
        above = scores[i - 1] if i > 0 else math.inf
        below = scores[i + 1] if i + 1 < len(scores) else -math.inf
        if above - w.score > TIE_GAP and w.score - below > TIE_GAP:
            assert g.item_id == w.item_id, (i, g, w)
        assert scores_close(g.score, truth[g.item_id]), (i, g, truth[g.item_id])


@pytest.mark.parametrize("optimized", [False, True], ids=["before-optimize", "after-optimize"])
def test_congruent_with_memory_reference(index: VectorIndex, optimized: bool) -> None:
    ids, vectors = clustered(N_POINTS, DIM, seed=11)
    queries = queries_near(vectors, 24, seed=12)
    reference = MemoryIndex(DIM)
    for start in range(0, N_POINTS, 500):  # several upserts, as a stream would
        index.upsert(ids[start : start + 500], vectors[start : start + 500])
        reference.upsert(ids[start : start + 500], vectors[start : start + 500])
    index.delete(ids[::97])
    reference.delete(ids[::97])
    if optimized:
        index.optimize()
    assert index.count() == reference.count()

    unit_queries = unit(queries.astype(np.float64))
    rng = np.random.default_rng(13)
    for q, query in enumerate(queries):
        truth = dict(zip(ids, (vectors @ unit_queries[q]).tolist()))
        assert_congruent(index.search(query, K), reference.search(query, K + 1), K, truth)
        seen = set(rng.choice(ids, 30, replace=False)) | {h.item_id for h in reference.search(query, 5)}
        assert_congruent(
            index.search(query, K, exclude=seen), reference.search(query, K + 1, exclude=seen), K, truth
        )

    got_batch = index.search_batch(queries, K)
    want_batch = reference.search_batch(queries, K + 1)
    for q, (got, want) in enumerate(zip(got_batch, want_batch)):
        assert_congruent(got, want, K, dict(zip(ids, (vectors @ unit_queries[q]).tolist())))


def test_edge_refuses_a_shard_written_without_item_ids(tmp_path: Path) -> None:
    """Hits map to item ids through the payload: a foreign shard is a clear error, not a KeyError."""
    import qdrant_edge as qe

    config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine))
    shard = qe.EdgeShard.create(str(tmp_path / "foreign"), config)
    shard.update(qe.UpdateOperation.upsert_points([qe.Point(uuid.uuid4(), basis()[0], {})]))
    shard.close()
    index = QdrantEdgeIndex(tmp_path / "foreign", dim=DIM)
    try:
        with pytest.raises(IndexError_, match="other than recstream"):
            index.search(basis()[0], 1)
    finally:
        index.close()


def test_edge_new_shards_use_integer_point_ids(tmp_path: Path) -> None:
    """The engine returns each hit's id as a Python object: integers are cheap, UUIDs are not."""
    from streams.index.edge import POINT_IDS_FILE, edge_point_id

    index = QdrantEdgeIndex(tmp_path / "shard", dim=DIM)
    try:
        index.upsert(["a", "b"], basis()[:2])
        assert (tmp_path / "shard" / POINT_IDS_FILE).is_file()
        records = index._open_shard().retrieve([edge_point_id("a"), edge_point_id("b")], None, False)
        assert sorted(r.id for r in records) == sorted([edge_point_id("a"), edge_point_id("b")])
    finally:
        index.close()
    assert edge_point_id("i") == edge_point_id("i") != edge_point_id("j")
    assert 0 <= edge_point_id("i") < 2**64


def test_edge_keeps_serving_a_shard_written_with_uuid_point_ids(tmp_path: Path) -> None:
    """Shards from before integer ids (no marker file) are read and written with UUIDs."""
    import qdrant_edge as qe

    config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine))
    shard = qe.EdgeShard.create(str(tmp_path / "old"), config)
    shard.update(qe.UpdateOperation.upsert_points([qe.Point(point_id("a"), basis()[0], {"item_id": "a"})]))
    shard.close()
    index = QdrantEdgeIndex(tmp_path / "old", dim=DIM)
    try:
        index.upsert(["b"], basis()[1:2])
        assert [h.item_id for h in index.search(basis()[0], 1)] == ["a"]
        assert [h.item_id for h in index.search(basis()[1], 1)] == ["b"]
        index.delete(["a"])
        assert [h.item_id for h in index.search(basis()[0], 2)] == ["b"]
    finally:
        index.close()


def test_edge_refuses_an_upsert_whose_point_id_another_item_holds(tmp_path: Path) -> None:
    index = QdrantEdgeIndex(tmp_path / "shard", dim=DIM)
    try:
        index._point_id = lambda item_id: 7  # every item collides
        index.upsert(["a"], basis()[:1])
        index.upsert(["a"], basis()[1:2])  # the same item again is an overwrite
        with pytest.raises(IndexError_, match="same point id"):
            index.upsert(["b"], basis()[1:2])
        with pytest.raises(IndexError_, match="same point id"):
            index.upsert(["c", "d"], basis()[2:4])
        assert [h.item_id for h in index.search(basis()[1], 5)] == ["a"]
    finally:
        index.close()

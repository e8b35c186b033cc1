"""open_index picks the adapter from IndexSettings; adapter-specific behaviour the shared
contract suite cannot see (Edge's HNSW build, local-mode URL routing, MemoryIndex's
swap-delete bookkeeping under random operation sequences)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from streams.errors import ConfigError, IndexError_
from streams.index import VectorIndex, open_index
from streams.index.edge import QdrantEdgeIndex
from streams.index.memory import MemoryIndex
from streams.index.remote import QdrantRemoteIndex
from streams.settings import IndexSettings

DIM = 16

# qdrant-client checks the server version in a background thread and warns when it cannot;
# for the deliberately unreachable server below that warning lands on a later test.
pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")


@pytest.mark.parametrize(
    ("settings_", "cls", "name"),
    [
        (IndexSettings(kind="memory"), MemoryIndex, "memory"),
        (IndexSettings(kind="edge"), QdrantEdgeIndex, "qdrant-edge"),
        (IndexSettings(kind="qdrant", url=":memory:", collection="c"), QdrantRemoteIndex, "qdrant"),
    ],
    ids=["memory", "edge", "qdrant-local-memory"],
)
def test_open_index_picks_the_adapter(
    settings_: IndexSettings, cls: type, name: str, tmp_path: Path
) -> None:
    index = open_index(settings_, dim=DIM, path=tmp_path / "index")
    try:
        assert isinstance(index, cls) and isinstance(index, VectorIndex)
        assert index.name == name and index.dim == DIM
        index.upsert(["a"], np.eye(DIM, dtype=np.float32)[:1])
        assert index.search(np.eye(DIM, dtype=np.float32)[0], 1)[0].item_id == "a"
    finally:
        index.close()


def test_edge_uses_the_given_path(tmp_path: Path) -> None:
    index = open_index(IndexSettings(kind="edge"), dim=DIM, path=tmp_path / "index")
    index.close()
    assert (tmp_path / "index").is_dir() and any((tmp_path / "index").iterdir())


def test_api_key_with_local_mode_is_a_config_error(tmp_path: Path) -> None:
    settings_ = IndexSettings(kind="qdrant", url=str(tmp_path / "q"), api_key=SecretStr("k"))
    with pytest.raises(ConfigError, match="RECSTREAM_INDEX__"):
        open_index(settings_, dim=DIM, path=tmp_path / "unused")


def test_unreachable_server_is_an_index_error() -> None:
    index = None
    with pytest.raises(IndexError_, match="qdrant-client"):
        # Port 9 (discard) on loopback: refused at once, no network needed.
        index = QdrantRemoteIndex("http://127.0.0.1:9", dim=DIM, collection="c")
    assert index is None


def test_bad_dim_is_refused(tmp_path: Path) -> None:
    for bad in (0, -3):
        with pytest.raises(IndexError_):
            MemoryIndex(bad)
        with pytest.raises(IndexError_):
            QdrantEdgeIndex(tmp_path / f"edge{bad}", dim=bad)


def test_edge_optimize_builds_hnsw_when_told(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((600, DIM)).astype(np.float32)
    index = QdrantEdgeIndex(tmp_path / "edge", dim=DIM, exact_search_below=0, indexing_threshold_kb=1)
    try:
        index.upsert([f"i{i}" for i in range(600)], vectors)
        with caplog.at_level(logging.INFO, logger="streams.index.edge"):
            index.optimize()
        assert "changed=True, 600 vectors indexed" in caplog.text
        assert index.search(vectors[3], 1)[0].item_id == "i3"
    finally:
        index.close()


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.lists(st.integers(0, 30), max_size=8), st.integers(0, 2**31)),
        st.tuples(st.just("delete"), st.lists(st.integers(0, 35), max_size=8), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops=_ops)
def test_memory_index_matches_a_dict_model(ops: list[tuple[str, list[int], int]]) -> None:
    """Swap-delete and growth keep ``item_id -> vector`` exactly as a plain dict would."""
    index = MemoryIndex(4, initial_capacity=2)
    model: dict[str, np.ndarray] = {}
    for op, keys, seed in ops:
        ids = [f"i{key}" for key in keys]
        if op == "upsert":
            vectors = np.random.default_rng(seed).standard_normal((len(ids), 4)).astype(np.float32)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6)
            index.upsert(ids, vectors)
            model.update(zip(ids, vectors))
        else:
            index.delete(ids)
            for item_id in ids:
                model.pop(item_id, None)
        assert index.count() == len(model)
    for item_id, vector in model.items():
        if np.linalg.norm(vector) > 0.5:
            hits = index.search(vector, len(model))
            assert {hit.item_id for hit in hits} == set(model)
            top = [hit for hit in hits if hit.score >= hits[0].score - 1e-6]
            assert item_id in {hit.item_id for hit in top}

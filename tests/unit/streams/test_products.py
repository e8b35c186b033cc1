"""A vector's products come out the same in any batch: exact search and the sequence model
give a user the list they would get alone."""

from __future__ import annotations

import numpy as np
import pytest

from streams import products
from streams.index.memory import MemoryIndex


@pytest.mark.parametrize("rows", [5, 300, products.BLOCK_ROWS + 1])
def test_a_vectors_scores_do_not_depend_on_its_batch(rows: int) -> None:
    rng = np.random.default_rng(rows)
    matrix = rng.normal(size=(rows, 48)).astype(np.float32)
    vectors = rng.normal(size=(30, 48)).astype(np.float32)
    together = products.scores(matrix, vectors)
    np.testing.assert_allclose(together, vectors.astype(np.float64) @ matrix.T.astype(np.float64), rtol=1e-4, atol=1e-4)
    for n in range(30):
        assert np.array_equal(products.scores(matrix, vectors[n:n + 1])[0], together[n])
    assert np.array_equal(products.scores(matrix, vectors[3:14]), together[3:14])
    assert products.scores(matrix, vectors[:0]).shape == (0, rows)


def test_exact_search_gives_a_query_the_same_hits_in_any_batch() -> None:
    rng = np.random.default_rng(3)
    index = MemoryIndex(32)
    index.upsert([f"i{n}" for n in range(5_000)], rng.normal(size=(5_000, 32)).astype(np.float32))
    queries = rng.normal(size=(20, 32)).astype(np.float32)
    together = index.search_batch(queries, 10)
    assert [index.search_batch(queries[n:n + 1], 10)[0] for n in range(20)] == together

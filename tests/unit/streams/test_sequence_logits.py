"""The sequence model's scores of a user do not depend on who else is in the batch, for small
catalogues (one product per user) and large ones (one product per batch) alike."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from streams import products
from streams.sequence import SequenceManifest, SequenceModel, top_n


def _model(items: int, dim: int) -> SequenceModel:
    rng = np.random.default_rng(items)
    manifest = SequenceManifest(version="test@1", dim=dim, max_len=8, text_dim=4, items=items, trained_on={},
                                config={}, parity={}, losses=[])
    table = rng.normal(size=(items, dim)).astype(np.float32)
    return SequenceModel(None, manifest, [f"i{n}" for n in range(items)], table,
                         rng.normal(size=(4, dim)).astype(np.float32))


# Shapes where one product for the batch rounds a user's column differently with the batch's
# size (OpenBLAS 0.3.31: all of them), and one over several blocks of rows.
@pytest.mark.parametrize(("items", "dim"), [(300, 64), (2_047, 16), (2_048, 64), (products.BLOCK_ROWS * 4 + 3, 64)])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_users_scores_are_the_same_in_any_batch(items: int, dim: int, threads: int) -> None:
    model = _model(items, dim)
    users = np.random.default_rng(0).normal(size=(70, dim)).astype(np.float32)
    with threadpool_limits(threads, user_api="blas"):
        together = model.logits(users)
        assert together.shape == (70, items) and together.flags.c_contiguous
        for size in (1, 2, 3, 7, 16, 33, 70):
            assert np.array_equal(model.logits(users[:size]), together[:size]), f"batch of {size}"
        assert np.array_equal(model.logits(users[5:6])[0], together[5])
        for start in (1, 9, 40):  # a user in any position of a product
            assert np.array_equal(model.logits(users[start:start + 5]), together[start:start + 5])



def test_an_unknown_items_embedding_is_the_same_with_any_other_items() -> None:
    """Items the model was not trained on are projected from their text vectors; a user's
    vector must not depend on which other new items the batch holds."""
    rng = np.random.default_rng(5)
    manifest = SequenceManifest(version="test@1", dim=64, max_len=8, text_dim=384, items=10, trained_on={},
                                config={}, parity={}, losses=[])
    model = SequenceModel(None, manifest, [f"i{n}" for n in range(10)], rng.normal(size=(10, 64)).astype(np.float32),
                          rng.normal(size=(384, 64)).astype(np.float32))
    texts = {f"new{n}": v for n, v in enumerate(rng.normal(size=(40, 384)).astype(np.float32))}

    def text_vectors(ids: list[str]) -> np.ndarray:
        return np.stack([texts[i] for i in ids])

    together = model.embed(["i0", *texts], text_vectors)
    np.testing.assert_allclose(together[1:], np.stack(list(texts.values())) @ model.project, rtol=1e-5, atol=1e-5)
    for n, item_id in enumerate(texts, 1):
        assert np.array_equal(model.embed([item_id], text_vectors)[0], together[n])

def test_the_scores_are_the_products_with_the_item_table() -> None:
    model = _model(products.BLOCK_ROWS + 10, 16)
    users = np.random.default_rng(1).normal(size=(3, 16)).astype(np.float32)
    np.testing.assert_allclose(model.logits(users), users.astype(np.float64) @ model.table.T.astype(np.float64),
                               rtol=1e-5, atol=1e-4)
    probabilities = model.probabilities(users)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("size", [5, 300, 5_000, 100_000])
def test_top_n_is_the_n_best_finite_scores_best_first(size: int) -> None:
    rng = np.random.default_rng(size)
    scores = rng.normal(size=size).astype(np.float32)
    scores[rng.choice(size, size // 5, replace=False)] = -np.inf  # seen items
    scores[rng.choice(size, size // 10, replace=False)] = scores.max()  # ties at the top, broken by index
    finite = np.flatnonzero(np.isfinite(scores))
    expected = finite[np.lexsort((finite, -scores[finite]))][:20]
    assert top_n(scores, 20).tolist() == expected.tolist()


def test_top_n_of_a_row_with_fewer_finite_scores_than_asked() -> None:
    scores = np.full(10_000, -np.inf, dtype=np.float32)
    scores[[7, 4_000, 9_999]] = [1.0, 3.0, 2.0]
    assert top_n(scores, 20).tolist() == [4_000, 9_999, 7]

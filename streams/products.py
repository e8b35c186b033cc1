"""Matrix products whose answer for one vector does not depend on the batch it came in.

A worker ranks whatever clicks are waiting as one batch, and eval ranks one user at a time,
so a user's scores must come out bit for bit the same whoever else is in the batch, or a
list would depend on the load (and eval would not measure what serves). BLAS does not
promise that: it picks its kernels, and so the order in which it rounds, by the shape of
the product, and OpenBLAS 0.3.31 rounds a vector's scores differently with 1, 2, 33 or 70
vectors in the product. Within one shape it rounds every column alike, so every product
here has the same number of columns (:data:`COLUMNS`), the vectors padded with zero rows.

The matrix is read a block of rows at a time, each block multiplied with every group of
vectors while it is in cache (``block @ group.T``, a tall, thin product, the shape BLAS
serves fastest). The sequence model's table at 100k x 64, on one core: 1.6 ms for one user
and 11.3 ms for 55, against 1.25 and 11.7 ms for the one product per block for the whole
batch (a lone user padded to two) that this replaces.
"""

from __future__ import annotations

import numpy as np

#: Vectors per product: every product has this many columns.
COLUMNS = 8
#: Rows of the matrix per block (at most).
BLOCK_ROWS = 4_096


def scores(matrix: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``(len(vectors), len(matrix))`` float32: each vector's dot product with every row of
    ``matrix``, the same for a vector in any batch."""
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    out = np.empty((n, len(matrix)), dtype=np.float32)
    if n == 0 or not len(matrix):
        return out
    padded = np.zeros((-(-n // COLUMNS) * COLUMNS, vectors.shape[1]), dtype=np.float32)
    padded[:n] = vectors
    for lo in range(0, len(matrix), BLOCK_ROWS):
        block = matrix[lo:lo + BLOCK_ROWS]
        for c in range(0, n, COLUMNS):
            out[c:c + COLUMNS, lo:lo + len(block)] = (block @ padded[c:c + COLUMNS].T).T[:n - c]
    return out

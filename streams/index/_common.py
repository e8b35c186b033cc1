"""Argument checks and result ranking shared by every adapter.

Kept in one place so that all adapters refuse the same inputs with the same messages and
order results the same way (score descending, ties by item id), which is what the
congruence tests compare.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

import numpy as np

from streams.errors import IndexError_, RecstreamError
from streams.index.base import ITEM_ID_KEY, Hit


def check_dim(dim: int) -> int:
    """``dim`` as an int, or IndexError_ when it is not a positive integer."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise IndexError_(f"index dim must be a positive integer, got {dim!r}")
    return int(dim)


def check_upsert(
    item_ids: Sequence[str],
    vectors: np.ndarray,
    payloads: Sequence[Mapping[str, Any]] | None,
    dim: int,
) -> np.ndarray:
    """Validate an upsert and return the vectors as float32 ``[n, dim]``.

    The result may share memory with ``vectors`` (no copy when already float32 and
    C-contiguous): callers must copy before changing it.
    """
    matrix = np.asarray(vectors)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise IndexError_(f"upsert wants vectors of shape [n, {dim}], got {list(matrix.shape)}")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise IndexError_(f"upsert wants float vectors, got dtype {matrix.dtype}")
    n = matrix.shape[0]
    if len(item_ids) != n:
        raise IndexError_(f"upsert got {len(item_ids)} item ids for {n} vectors")
    if payloads is not None and len(payloads) != n:
        raise IndexError_(f"upsert got {len(payloads)} payloads for {n} vectors")
    for item_id in item_ids:
        if not isinstance(item_id, str):
            raise IndexError_(f"item ids must be str, got {type(item_id).__name__}: {item_id!r}")
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)  # [n, dim]
    if not np.isfinite(matrix).all():
        bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
        raise IndexError_(f"upsert vector for item {item_ids[bad]!r} holds NaN or inf")
    return matrix


def check_queries(vectors: np.ndarray, dim: int, k: int, *, batch: bool) -> np.ndarray:
    """Validate a query (``[dim]``) or query batch (``[m, dim]``); return float32, maybe shared."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise IndexError_(f"k must be a non-negative integer, got {k!r}")
    matrix = np.asarray(vectors)
    want = f"[m, {dim}]" if batch else f"[{dim}]"
    if (batch and (matrix.ndim != 2 or matrix.shape[1] != dim)) or (
        not batch and matrix.shape != (dim,)
    ):
        raise IndexError_(f"search wants a query of shape {want}, got {list(matrix.shape)}")
    if not np.issubdtype(matrix.dtype, np.floating):
        raise IndexError_(f"search wants a float query, got dtype {matrix.dtype}")
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if not np.isfinite(matrix).all():
        raise IndexError_("search query holds NaN or inf")
    return matrix


def merged_payload(item_id: str, payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The payload stored for ``item_id``: the caller's fields, then ``item_id`` (reserved)."""
    merged = dict(payload) if payload else {}
    merged[ITEM_ID_KEY] = item_id
    return merged


#: ``search_batch``'s ``exclude``: one set for every row, or one set per row (a batch of
#: queries from many users, each with its own seen items).
Excludes = AbstractSet[str] | Sequence[AbstractSet[str]]


def row_excludes(exclude: Excludes, rows: int) -> list[AbstractSet[str]]:
    """``exclude`` as one set per query row; ``IndexError_`` when a per-row list has another length."""
    if isinstance(exclude, AbstractSet):
        return [exclude] * rows
    if len(exclude) != rows:
        raise IndexError_(f"search_batch got {len(exclude)} exclude sets for {rows} queries")
    return list(exclude)


def rank_hits(
    candidates: Iterable[tuple[str, float]], k: int, exclude: AbstractSet[str]
) -> list[Hit]:
    """Drop excluded ids, order by (score desc, item_id asc), keep ``k``.

    ``candidates`` should hold ``k + len(exclude)`` entries so that ``k`` survive.
    """
    kept = [(item_id, score) for item_id, score in candidates if item_id not in exclude]
    # (score desc, item_id asc) as two stable sorts on C-level keys: no key tuple per hit
    kept.sort(key=itemgetter(0))
    kept.sort(key=itemgetter(1), reverse=True)  # reverse keeps equal scores in id order
    return [Hit(item_id, float(score)) for item_id, score in kept[:k]]


@contextmanager
def engine_errors(engine: str, action: str, where: object) -> Iterator[None]:
    """Re-raise an engine's exception as IndexError_ naming engine, action and store.

    qdrant_edge raises bare ``Exception`` and qdrant-client several unrelated types
    (``UnexpectedResponse``, ``ResponseHandlingException``, ``ValueError``, gRPC errors),
    so nothing narrower than ``Exception`` catches them all. The original is chained.
    """
    try:
        yield
    except RecstreamError:
        raise  # already ours (IndexError_, ConfigError): keep its type and message
    except Exception as exc:
        raise IndexError_(f"{engine} {action} failed for {where}: {exc}") from exc

"""Vector-index layer: one :class:`VectorIndex` protocol, three adapters, one factory.

See :mod:`streams.index.base` for the contract (cosine similarity, higher is better).
"""

from streams.index.base import Hit, VectorIndex
from streams.index.factory import open_index

__all__ = ["Hit", "VectorIndex", "open_index"]

"""The one place that turns :class:`~streams.settings.IndexSettings` into an adapter.

Adapters are imported lazily so that a worker configured for one engine never imports
another's client library.
"""

from __future__ import annotations

from pathlib import Path

from streams.errors import ConfigError
from streams.index.base import VectorIndex
from streams.settings import IndexSettings

__all__ = ["open_index"]


def open_index(settings: IndexSettings, *, dim: int, path: Path) -> VectorIndex:
    """Open (creating where needed) the vector index ``settings.kind`` names.

    Args:
        settings: The ``index`` section of the settings.
        dim: Vector dimension, i.e. the encoder's output size.
        path: Data directory for an on-disk engine, normally ``Settings.index_path``;
            used by ``kind="edge"`` only.

    Returns:
        A :class:`~streams.index.base.VectorIndex`; the caller closes it.

    Raises:
        ConfigError: ``kind="qdrant"`` without a URL, or an API key with a local-mode URL.
        IndexError_: the engine refused to open (unreachable, or a dimension mismatch).
    """
    if settings.kind == "memory":
        from streams.index.memory import MemoryIndex

        return MemoryIndex(dim)
    if settings.kind == "edge":
        from streams.index.edge import QdrantEdgeIndex

        return QdrantEdgeIndex(path, dim=dim, quantization=settings.quantization)
    if settings.kind == "qdrant":
        from streams.index.remote import QdrantRemoteIndex

        if not settings.url:  # IndexSettings validates this too; kept for model_construct()
            raise ConfigError("index kind 'qdrant' needs a URL: set --index-url or RECSTREAM_INDEX__URL")
        api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        return QdrantRemoteIndex(
            settings.url, dim=dim, collection=settings.collection, api_key=api_key
        )
    raise ConfigError(
        f"unknown index kind {settings.kind!r}: set RECSTREAM_INDEX__KIND to edge, qdrant or memory"
    )

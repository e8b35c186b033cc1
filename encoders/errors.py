"""The root of recstream's exception tree.

It lives in ``encoders`` because that package sits at the bottom of the import graph
(``streams`` and ``export`` import ``encoders``, never the reverse), so every package can
derive from one root without an import cycle.
"""

from __future__ import annotations


class RecstreamError(Exception):
    """Root of every error recstream raises on purpose."""


class ModelDirError(RecstreamError, FileNotFoundError):
    """A model directory is missing, incomplete or corrupt (bad manifest, hash mismatch)."""


class ProviderError(RecstreamError, RuntimeError):
    """The requested onnxruntime execution provider cannot run here."""

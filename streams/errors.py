"""Errors raised by the streaming side. All derive from :class:`RecstreamError`."""

from __future__ import annotations

from encoders.errors import RecstreamError

__all__ = ["RecstreamError", "ConfigError", "BrokerError", "IndexError_"]


class ConfigError(RecstreamError, ValueError):
    """A setting is invalid; the message names the flag or environment variable to change."""


class BrokerError(RecstreamError, RuntimeError):
    """A local broker could not be resolved, started or reached."""


class IndexError_(RecstreamError, RuntimeError):
    """The vector index refused an operation (wrong dimension, closed, unreachable).

    Trailing underscore: ``IndexError`` is a builtin with another meaning.
    """

"""Errors raised by ``export``; all derive from :class:`encoders.errors.RecstreamError`."""

from __future__ import annotations

from typing import Any

from encoders.errors import RecstreamError


class ExportError(RecstreamError, RuntimeError):
    """The model could not be exported (unsupported architecture, pooling, failed step)."""


class ModelSourceError(RecstreamError, FileNotFoundError):
    """The source model directory (or the package that ships it) is missing or incomplete."""


class ParityError(RecstreamError, ValueError):
    """ONNX outputs differ from torch beyond a variant's tolerance.

    Attributes:
        report: the structured parity report (``ParityReport.to_dict()``), every failure of
            every variant and batch size collected before raising.
        failures: one line per failed check, e.g.
            ``"fp32 batch=32: min_cosine 0.9912 < 0.999 (text #7 '?')"``.
    """

    def __init__(self, message: str, *, report: dict[str, Any], failures: list[str]) -> None:
        super().__init__(message)
        self.report = report
        self.failures = failures

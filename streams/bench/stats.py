"""Latency summaries shared by every command that reports milliseconds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def percentiles_ms(values_ms: np.ndarray | Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/p999/max in ms, rounded to 0.01 (``None`` when there are no values: JSON null)."""
    values = np.asarray(values_ms, dtype=np.float64)
    if values.size == 0:
        return {**dict.fromkeys(PERCENTILES), "max": None}
    out: dict[str, float | None] = {
        name: round(float(np.percentile(values, q)), 2) for name, q in PERCENTILES.items()
    }
    out["max"] = round(float(values.max()), 2)
    return out

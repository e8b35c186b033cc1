"""Latency summaries shared by every command that reports milliseconds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from streams.metrics import histogram_sum_count

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


def bucket_quantiles_ms(before: Mapping[float, float], after: Mapping[float, float],
                        quantiles: Mapping[str, float] = MappingProxyType({"p50": 0.5, "p99": 0.99}),
                        ) -> dict[str, float] | None:
    """Quantiles (ms) of what a Prometheus histogram counted between two scrapes.

    Each ``pXX_le`` is the upper bound of the bucket that holds that quantile: the value is
    at most that (``inf`` past the last finite bound). ``count`` is the number observed.
    ``None`` when nothing was observed in between.
    """
    if not after:
        return None
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return None
    out: dict[str, float] = {}
    for name, q in quantiles.items():
        bound = next(b for b, c in zip(bounds, counts, strict=True) if c >= q * total)
        out[f"{name}_le"] = bound * 1000.0 if bound != float("inf") else float("inf")
    out["count"] = total
    return out


def histogram_means_ms(before: str, after: str, series: Mapping[str, tuple[str, str]]) -> dict[str, float | None]:
    """Mean (ms) of what each Prometheus histogram series observed between two scrapes of
    exposition text: ``series`` maps an output name to ``(histogram name, labels)`` (labels as
    exposed, e.g. ``'step="rank"'``, or ``""``); ``None`` where nothing was observed. Exact,
    unlike bucket quantiles: ``_sum`` and ``_count`` are exact."""
    out: dict[str, float | None] = {}
    for name, (histogram, labels) in series.items():
        total0, count0 = histogram_sum_count(before, histogram, labels)
        total1, count1 = histogram_sum_count(after, histogram, labels)
        out[name] = round((total1 - total0) / (count1 - count0) * 1000.0, 3) if count1 > count0 else None
    return out

"""Summaries of measured samples for the benchmarks: nearest-rank percentiles and the
(p50, p99) pair every latency figure reports."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def quantiles(values: Sequence[float], scale: float, digits: int) -> tuple[float, float]:
    """(p50, p99) of ``values`` divided by ``scale``, rounded."""
    ordered = sorted(values)
    return (
        round(percentile(ordered, 0.50) / scale, digits),
        round(percentile(ordered, 0.99) / scale, digits),
    )

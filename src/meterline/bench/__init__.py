"""Benchmarks behind ``meterline bench``: each prints its figures and a same-run baseline."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["spread"]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, minimum and maximum of repeated runs' figures."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}

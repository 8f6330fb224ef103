"""Named limits on everything that enters the ledger.

Every bound a producer can hit is declared here once, with its unit in its name, so the
API, the SDK and the docs quote the same numbers. A limit is a promise: input past it is
refused with an error naming the limit, never truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

MICROSECONDS_PER_SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Bounds on one event and one batch, and the tolerated clock skew of producers."""

    id_length_max: int = 256
    customer_length_max: int = 256
    type_length_max: int = 256
    source_length_max: int = 1024
    event_bytes_max: int = 64 * 1024
    batch_events_max: int = 10_000
    batch_bytes_max: int = 16 * 1024 * 1024
    future_skew_us: int = 5 * 60 * MICROSECONDS_PER_SECOND

    def __post_init__(self) -> None:
        for name in (
            "id_length_max",
            "customer_length_max",
            "type_length_max",
            "source_length_max",
            "event_bytes_max",
            "batch_events_max",
            "batch_bytes_max",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"IngestLimits.{name} must be positive")
        if self.future_skew_us < 0:
            raise ValueError("IngestLimits.future_skew_us must not be negative")


DEFAULT_LIMITS = IngestLimits()

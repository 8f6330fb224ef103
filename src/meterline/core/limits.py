"""Named limits on everything that enters the ledger.

Every bound a producer can hit is declared here once, with its unit in its name, so the
API, the SDK and the docs quote the same numbers. A limit is a promise: input past it is
refused with an error naming the limit, never truncated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MICROSECONDS_PER_SECOND = 1_000_000

EVENTS_PER_QUANTITY_DIGITS = 12
"""Decimal digits of the number of events one quantity sums (up to 10**12 events: a
trillion events in one line of one period), in the exactness budget below."""

PRICE_DIGITS_MAX = 20
"""Digits (before plus after the point) a unit price may be written with for any
quantity of accepted events times that price to stay exact (the budget below)."""


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Bounds on one event and one batch, and the tolerated clock skew of producers.

    Numbers: money arithmetic (``core.money.MONEY_CONTEXT``) carries 60 significant
    digits and raises rather than lose one, so an accepted number must leave room for
    what billing does with it. One spans at most 18 + 10 = 28 digits; a sum of up to
    10**``EVENTS_PER_QUANTITY_DIGITS`` of them at most 40; times a unit price written with
    at most ``PRICE_DIGITS_MAX`` digits at most 60: exact (tested in test_limits). A
    number past either bound is refused at ingest, naming its property path.
    """

    id_length_max: int = 256
    customer_length_max: int = 256
    type_length_max: int = 256
    source_length_max: int = 1024
    event_bytes_max: int = 64 * 1024
    batch_events_max: int = 10_000
    batch_bytes_max: int = 16 * 1024 * 1024
    future_skew_us: int = 5 * 60 * MICROSECONDS_PER_SECOND
    number_integer_digits_max: int = 18
    """Digits before the decimal point of any number in ``properties``: its absolute value
    is below 10**18 (an int64 holds it)."""
    number_decimal_places_max: int = 10
    """Digits after the decimal point of any number in ``properties``, as written (``1.50``
    has two): at most 10, the scale of the exports' DECIMAL(38,10)."""
    number_integer_bound: int = field(init=False, repr=False, compare=False)
    """``10**number_integer_digits_max``, derived once: an integer is accepted when its
    absolute value is below it (the ingest fast path compares with it per property)."""

    def __post_init__(self) -> None:
        for name in (
            "id_length_max",
            "customer_length_max",
            "type_length_max",
            "source_length_max",
            "event_bytes_max",
            "batch_events_max",
            "batch_bytes_max",
            "number_integer_digits_max",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"IngestLimits.{name} must be positive")
        if self.future_skew_us < 0:
            raise ValueError("IngestLimits.future_skew_us must not be negative")
        if self.number_decimal_places_max < 0:
            raise ValueError("IngestLimits.number_decimal_places_max must not be negative")
        object.__setattr__(self, "number_integer_bound", 10**self.number_integer_digits_max)

    @property
    def number_digits_max(self) -> int:
        """Significant digits an accepted number can carry: integer digits plus places."""
        return self.number_integer_digits_max + self.number_decimal_places_max


DEFAULT_LIMITS = IngestLimits()

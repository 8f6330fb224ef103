"""One customer's current billing period in memory (``CustomerLive``: its rating, credit
inputs, earlier charges, controls and usage-rate counters), and an appended event as the
live projection is fed it (``LiveEvent``)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any, NamedTuple

import msgspec

from meterline.billing.credits import CreditInputs
from meterline.billing.scan import BODY_DECODER, RatingJob
from meterline.core.control_policies import ControlPolicy, RateCounter
from meterline.core.credit_records import Charge
from meterline.core.meters import Meter
from meterline.core.model import Contract
from meterline.core.periods import BillingPeriod


class LiveEvent(NamedTuple):
    """An appended event as the projection needs it (``properties`` None: the stored
    body does not decode, which makes it unbillable, never a failed cycle); ``sequence``
    is within ``partition`` (the customer's)."""

    sequence: int
    customer: str
    type: str
    timestamp_us: int
    properties: dict[str, Any] | None
    partition: int = 0

    @staticmethod
    def decoded(
        sequence: int,
        customer: str,
        event_type: str,
        timestamp_us: int,
        body: bytes,
        partition: int = 0,
    ) -> LiveEvent:
        """The event of a stored record, its properties decoded from the canonical bytes
        the way the batch scan decodes them."""
        try:
            properties: dict[str, Any] | None = BODY_DECODER.decode(body).properties
        except msgspec.MsgspecError:
            properties = None
        return LiveEvent(sequence, customer, event_type, timestamp_us, properties, partition)


@dataclass
class CustomerLive:
    """One customer's current period in memory."""

    contract: Contract
    period: BillingPeriod
    job: RatingJob
    inputs: CreditInputs
    prior: list[Charge]
    policies: tuple[ControlPolicy, ...]
    counters: dict[str | None, RateCounter] = field(default_factory=dict)
    readers: list[tuple[str | None, Callable[[Any], Any] | None, RateCounter]] | None = None
    rates: dict[tuple[int, str, tuple[str | None, ...]], Decimal | None] = field(
        default_factory=dict
    )
    """Per counter: the event type, the meter's reader (None: count events), the counter."""
    stale: bool = False
    """Rebuild from the ledger before the next figures."""
    sequence: int = 0
    """The highest sequence fed, in the customer's partition."""
    usage_before: Decimal = Decimal(0)
    """For ``scope: lifetime`` progressive thresholds: the usage of the finalized period
    invoices of earlier periods (``billing.thresholds.usage_before``), read when the
    period is built; 0 otherwise."""

    def cost_rate(
        self, segment: int, meter: Meter, group: tuple[str | None, ...]
    ) -> Decimal | None:
        """What one unit of the line costs (the most specific rate in force at the
        segment's start), looked up once per line."""
        key = (segment, meter.key, group)
        if key not in self.rates:
            at = max(self.job.segments[segment].start_us, self.period.start_us)
            self.rates[key] = next(
                (
                    rate.per_unit
                    for rate in self.job.configuration.cost_rates(meter.key, at)
                    if rate.applies_to(meter.group_by, group)
                ),
                None,
            )
        return self.rates[key]

    @property
    def currency(self) -> str:
        return self.job.segments[0].terms.plan.currency if self.job.segments else "USD"

    @cached_property
    def bounded_prices(self) -> bool:
        """Whether a price of the period has a line minimum or maximum (fixed per build)."""
        return any(
            price.minimum is not None or price.maximum is not None
            for segment in self.job.segments
            for price in segment.terms.prices()
        )

    def grant_edge_between(self, after_us: int, through_us: int) -> bool:
        """Whether a window edge of the credit burn-down lies in ``(after_us, through_us]``
        (the edges are sorted)."""
        cuts = self.job.cuts or ()
        return bisect_right(cuts, after_us) != bisect_right(cuts, through_us)

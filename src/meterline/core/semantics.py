"""Where billing vendors disagree, the meaning a pricing file chose (pure): one frozen
``Semantics`` value, its options and their values (docs/billing.md, "Vendor semantics",
names the vendor each value matches). The defaults are meterline's own meaning; each
option changes one computation in the core:

- ``burn_cost_basis``, ``burn_expiry``: tie-breaks of the credit burn order
  (``burn_key``, read by ``core.credits``);
- ``grant_end``, ``grant_start``: whether a declared expiry instant still belongs to
  its grant, and whether a declared start is rounded to the minute (``core.grants``);
- ``gauge``: the quantity of a ``latest`` meter (``gauge_days``, read by
  ``core.rating``'s accumulators);
- ``line_maximum``, ``volume_billing``: a line's per-window charges
  (``core.rating.window_charges``);
- ``percentage_free``, ``free_event_minimum``: the fee of one event under a
  ``percentage`` price and the amount of its line (``core.line_pricing.percentage_fee``,
  ``percentage_amount``).

A plan and a contract may override options of the file's block (``overridden``): a
contract bills with the file's choice, then its plan's, then its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Literal, Protocol

from meterline.core.periods import local_date, local_midnight_us

BurnCostBasis = Literal["none", "promotional_first", "paid_first", "lowest_first"]
BurnExpiry = Literal["exact", "minute", "second"]
GrantEnd = Literal["exclusive", "inclusive"]
GrantStart = Literal["exact", "minute_up", "minute_down"]
Gauge = Literal["period", "day"]
LineMaximum = Literal["close", "every_window"]
VolumeBilling = Literal["progressive", "close"]
PercentageFree = Literal["fixed_fee", "events", "amount", "amount_else_events"]
FreeEventMinimum = Literal["applies", "skipped"]

MINUTE_US = 60_000_000
SECOND_US = 1_000_000
COST_CONTEXT = Context(prec=80, rounding=ROUND_HALF_EVEN)
"""For comparing per-unit cost bases (a quotient), never for an amount."""


@dataclass(frozen=True, slots=True)
class Semantics:
    """The options of a pricing file's ``semantics:`` block; each default is the first
    value of its entry in ``OPTIONS``."""

    burn_cost_basis: BurnCostBasis = "none"
    """Among grants of equal priority and expiry: ``promotional_first`` burns grants with
    nothing paid (``paid: 0``) before paid ones, ``paid_first`` the reverse,
    ``lowest_first`` the lowest per-unit cost basis (``paid / amount``) first, ``none``
    goes straight on to the creation instant."""
    burn_expiry: BurnExpiry = "exact"
    """How expiries are compared in the burn order: to the microsecond, or truncated to
    the minute or to the second (UTC), so grants expiring within one tie."""
    grant_end: GrantEnd = "exclusive"
    """A grant declared to expire at T pays for usage at T (``inclusive``) or not."""
    grant_start: GrantStart = "exact"
    """A grant's declared start as declared (``exact``), or rounded up (``minute_up``) or
    down (``minute_down``) to the whole minute (UTC)."""
    gauge: Gauge = "period"
    """A ``latest`` meter's quantity: its latest value in the period (``period``), or the
    sum of each local day's latest value (``day``; a day without events adds nothing)."""
    line_maximum: LineMaximum = "close"
    """A price's ``maximum`` caps the cumulative amount in every window (``every_window``)
    or settles only in the segment's last window (``close``)."""
    volume_billing: VolumeBilling = "progressive"
    """A ``volume`` line charges each window the change of its cumulative amount
    (``progressive``) or nothing until the segment's last window (``close``)."""
    percentage_free: PercentageFree = "fixed_fee"
    """What a ``percentage`` price's free allowance waives: the fixed fee of the first
    ``free_events`` events (``fixed_fee``), the whole fee of those events (``events``),
    the fee on the first ``free_units`` of the summed base, ending early after
    ``free_events`` events (``amount``), or that amount whatever the count, the events
    counting only when there is no amount (``amount_else_events``); under ``events`` and
    ``amount`` a line whose bases sum to 0 charges nothing (``percentage_amount``)."""
    free_event_minimum: FreeEventMinimum = "applies"
    """Whether ``per_event_minimum`` raises the fee of an event the allowance made free."""


OPTIONS: dict[str, tuple[str, ...]] = {
    "burn_cost_basis": ("none", "promotional_first", "paid_first", "lowest_first"),
    "burn_expiry": ("exact", "minute", "second"),
    "grant_end": ("exclusive", "inclusive"),
    "grant_start": ("exact", "minute_up", "minute_down"),
    "gauge": ("period", "day"),
    "line_maximum": ("close", "every_window"),
    "volume_billing": ("progressive", "close"),
    "percentage_free": ("fixed_fee", "events", "amount", "amount_else_events"),
    "free_event_minimum": ("applies", "skipped"),
}
"""Each option and its values, the default first."""

DEFAULT = Semantics()

Overrides = tuple[tuple[str, str], ...]
"""Some options and their values (a plan's or a contract's ``semantics:``), in order."""


def overridden(base: Semantics, overrides: Overrides) -> Semantics:
    """``base`` with each option ``overrides`` names set to its value (the values are
    checked where they are read: ``config.semantics``)."""
    return replace(base, **dict(overrides)) if overrides else base  # type: ignore[arg-type]


def compared_expiry(expires_us: int, semantics: Semantics) -> int:
    """An expiry as the burn order compares it (``burn_expiry``)."""
    if semantics.burn_expiry == "minute":
        return expires_us - expires_us % MINUTE_US
    if semantics.burn_expiry == "second":
        return expires_us - expires_us % SECOND_US
    return expires_us


def cost_rank(paid: Decimal, amount: Decimal, semantics: Semantics) -> Decimal:
    """Where a grant that cost ``paid`` for ``amount`` units stands among grants of equal
    priority and expiry (``burn_cost_basis``): the lowest burns first."""
    basis = semantics.burn_cost_basis
    if basis == "lowest_first":
        if amount <= 0:
            return Decimal(0)
        with localcontext(COST_CONTEXT):
            return paid / amount
    if basis == "promotional_first":
        return Decimal(0 if paid == 0 else 1)
    if basis == "paid_first":
        return Decimal(1 if paid == 0 else 0)
    return Decimal(0)


def declared_expiry(expires_us: int | None, semantics: Semantics) -> int | None:
    """The instant a grant declared to expire at ``expires_us`` stops paying: one
    microsecond later (the ledger's resolution) when its end is ``inclusive``."""
    if expires_us is None or semantics.grant_end == "exclusive":
        return expires_us
    return expires_us + 1


def declared_start(start_us: int, semantics: Semantics) -> int:
    """The instant a grant declared to start at ``start_us`` becomes effective: as
    declared, or on the whole minute (UTC) at or after it (``minute_up``) or at or before
    it (``minute_down``); an instant on a whole minute stays where it is."""
    if semantics.grant_start == "exact":
        return start_us
    floor = start_us - start_us % MINUTE_US
    if semantics.grant_start == "minute_down" or floor == start_us:
        return floor
    return floor + MINUTE_US


class Span(Protocol):
    """A stretch of time in a time zone (``core.model.Segment``)."""

    @property
    def start_us(self) -> int: ...

    @property
    def end_us(self) -> int: ...

    @property
    def timezone(self) -> str: ...


def gauge_days(semantics: Semantics, spans: Sequence[Span]) -> tuple[int, ...] | None:
    """The local midnights strictly inside ``spans`` (a period's segments, in order) that
    cut a ``latest`` meter into days (``gauge: day``); None when it is read once per
    period (or there are no spans)."""
    if semantics.gauge == "period" or not spans:
        return None
    timezone, end_us = spans[0].timezone, spans[-1].end_us
    midnights = []
    day = local_date(timezone, spans[0].start_us) + timedelta(days=1)
    while (midnight := local_midnight_us(timezone, day)) < end_us:
        midnights.append(midnight)
        day += timedelta(days=1)
    return tuple(midnights)

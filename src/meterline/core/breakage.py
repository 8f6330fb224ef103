"""Proportional breakage and a change of its estimate (pure; ASC 606-10-55-48).

A prepaid grant whose holder is expected to leave a share ``rate`` of its units unused
recognizes that share of its value as breakage in proportion to the rights exercised:
when ``consumed`` of the ``units - units x rate`` expected to be used have been used,
the cumulative breakage is ``value x rate x consumed / expected`` (all of it once the
expected use is reached). The rate is an estimate, effective-dated: when it changes, the
cumulative breakage is restated at the new rate for what was consumed so far, and the
difference from what was booked is one catch-up in the period of the change (a change
in estimate, ASC 250-10-45-17: prospective, past entries untouched).

Invariants: the cumulative figure is monotone in ``consumed`` for one rate, never above
``value x rate``, rounded once to the currency; the catch-up is exactly the restated
figure less what was booked, so the books after it equal what the new rate would have
booked from the start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext
from itertools import pairwise

from meterline.core.errors import MeterlineError
from meterline.core.money import MONEY_CONTEXT, rounded_ratio

ZERO = Decimal(0)


class BreakageError(MeterlineError, ValueError):
    """A breakage estimate that cannot be used: a rate outside [0, 1), changes out of
    date order."""

    code = "invalid_breakage"
    http_status = 422


@dataclass(frozen=True, slots=True)
class RateChange:
    """From ``effective`` on, the expected breakage rate is ``rate``."""

    effective: date
    rate: Decimal


def check_rates(initial: Decimal, changes: Sequence[RateChange]) -> None:
    """Every rate in [0, 1) and the changes in strictly ascending date order."""
    for rate in (initial, *(change.rate for change in changes)):
        if not ZERO <= rate < 1:
            raise BreakageError(f"breakage rate {rate} must be in [0, 1)")
    for before, after in pairwise(changes):
        if after.effective <= before.effective:
            raise BreakageError(
                f"breakage rate changes out of order: {after.effective} after {before.effective}"
            )


def rate_on(initial: Decimal, changes: Sequence[RateChange], day: date) -> Decimal:
    """The expected breakage rate in force on ``day``."""
    rate = initial
    for change in changes:
        if change.effective <= day:
            rate = change.rate
    return rate


def cumulative_breakage(
    value: Decimal, units: Decimal, rate: Decimal, consumed: Decimal, currency: str
) -> Decimal:
    """The breakage recognized once ``consumed`` of ``units`` (bought for ``value``) have
    been used, at the expected rate ``rate``, rounded once to ``currency``."""
    if rate == 0 or consumed <= 0:
        return ZERO
    with localcontext(MONEY_CONTEXT):
        expected = units * (1 - rate)
        used = min(consumed, expected)
        return rounded_ratio(value * rate, used, expected, currency)


def breakage_target(
    value: Decimal,
    units: Decimal,
    rate: Decimal,
    consumed: Decimal,
    unused_value: Decimal,
    currency: str,
) -> Decimal:
    """The cumulative breakage to have booked: ``cumulative_breakage``, never more than
    the value consumption left unused (``unused_value``: a heavy user leaves less, and
    what was recognized early goes back to deferred revenue), never below zero."""
    found = cumulative_breakage(value, units, rate, consumed, currency)
    return max(ZERO, min(found, unused_value))


def catch_up(
    value: Decimal,
    units: Decimal,
    consumed: Decimal,
    unused_value: Decimal,
    new_rate: Decimal,
    booked: Decimal,
    currency: str,
) -> Decimal:
    """The one entry a change of the expected rate books in its period: the breakage
    target at ``new_rate`` for what was consumed so far, less the breakage ``booked``
    (negative when the estimate falls)."""
    target = breakage_target(value, units, new_rate, consumed, unused_value, currency)
    with localcontext(MONEY_CONTEXT):
        return target - booked

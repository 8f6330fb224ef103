"""Billing periods: where each one starts and ends, and how much of it a change covers.

This module owns the calendar of a contract. A billing period is the half-open interval
``[start_us, end_us)`` of instants (integer microseconds since the Unix epoch, UTC) whose
boundaries are local midnights in the contract's time zone. Periods repeat daily, weekly,
monthly, quarterly or annually, ``every`` N of them (every 2 weeks, every 6 months),
anchored either to the calendar or to the contract's anniversary (its local start date).

- Month cycles (monthly, quarterly, annual): by the calendar a period starts on the 1st of
  a month whose month count since January of year 0 is a multiple of the period's months
  (so quarterly starts in January/April/July/October, every 2 months in
  January/March/...); by the anniversary, on the anchor day of every Nth month from the
  anchor month (in a month without that day, the month's last day, always derived from the
  original anchor day, so Jan 31 gives Feb 28, Mar 31, Apr 30).
- Day cycles (daily, weekly): by the calendar a weekly period starts on a Monday (ISO
  weeks) and a daily one at each midnight, and every N of them are counted from Monday
  0001-01-01 (the proleptic calendar's first day); by the anniversary, every N days or
  weeks from the anchor date.

Local midnight is resolved through ``zoneinfo``: a period across a daylight-saving change
is an hour shorter or longer (743 or 745 hours for a 31-day month), and a day whose
midnight falls in a gap starts at the first instant that exists on that day.

``proration_fraction`` gives the share of a period that a coverage occupies, by local
calendar day (the day of a change belongs to the new terms) or by second, as an exact
fixed-point Decimal. Its division is the one inexact quotient here: it runs in a local
copy of ``MONEY_CONTEXT`` with ``Inexact`` untrapped and is rounded once, half-even, to
``FRACTION_PLACES`` decimal places.

Pure: standard library only, no clock; the only I/O is zoneinfo's reading of the time
zone database.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, Inexact, localcontext
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterline.core.money import MONEY_CONTEXT

Cycle = Literal["daily", "weekly", "monthly", "quarterly", "annual"]
CYCLES: tuple[Cycle, ...] = ("daily", "weekly", "monthly", "quarterly", "annual")

Anchor = Literal["calendar", "anniversary"]
ANCHORS: tuple[Anchor, ...] = ("calendar", "anniversary")

Proration = Literal["day", "second"]
PRORATIONS: tuple[Proration, ...] = ("day", "second")

MONTHS_PER_YEAR = 12
MONTHS_PER_CYCLE: Mapping[Cycle, int] = {"monthly": 1, "quarterly": 3, "annual": 12}
"""Length of each month cycle in calendar months."""
DAYS_PER_CYCLE: Mapping[Cycle, int] = {"daily": 1, "weekly": 7}
"""Length of each day cycle in calendar days."""
EVERY_LIMIT = 1000
"""The most cycles one period may span (``every``): 1,000 days, weeks or months."""

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)

FRACTION_PLACES = MONEY_CONTEXT.prec - 1
"""Decimal places of a proration fraction: any value in [0, 1] fits MONEY_CONTEXT's digits.

A fixed number of places (rather than a fixed number of significant digits) is what makes
the fractions of complementary coverages sum to exactly 1.
"""
FRACTION_QUANTUM = Decimal(1).scaleb(-FRACTION_PLACES)

FRACTION_DENOMINATOR_LIMIT = 2**60
"""Denominators below this never put a quotient exactly on a rounding midpoint.

A midpoint of the fraction grid is an odd multiple of 1 / (2**60 * 5**59), so only a
denominator divisible by 2**60 (over 36,000 years of microseconds) could land on one.
"""


@dataclass(frozen=True, slots=True, order=True)
class BillingPeriod:
    """The half-open interval ``[start_us, end_us)`` of one billing period."""

    start_us: int
    end_us: int

    def __post_init__(self) -> None:
        if type(self.start_us) is not int or type(self.end_us) is not int:
            raise TypeError("BillingPeriod: start_us and end_us must be integers")
        if self.start_us >= self.end_us:
            raise ValueError(
                f"BillingPeriod: start_us {self.start_us} must be before end_us {self.end_us}"
            )

    def contains(self, instant_us: int) -> bool:
        """Whether ``instant_us`` falls in the period (its end belongs to the next one)."""
        return self.start_us <= instant_us < self.end_us

    def label(self, timezone: str) -> str:
        """The period's local start date in ISO form, e.g. ``"2026-10-01"``."""
        return local_date(timezone, self.start_us).isoformat()


@dataclass(frozen=True, slots=True)
class BillingCycle:
    """How a contract's periods repeat: cycle length, anchor, and the contract's time zone.

    ``anchor_date`` is the contract's local start date; anniversary billing needs it and
    calendar billing ignores it. ``every``: how many cycles one period spans (every 2
    weeks). Construction does not validate: see ``cycle_errors``.
    """

    cycle: Cycle = "monthly"
    anchor: Anchor = "calendar"
    timezone: str = "UTC"
    anchor_date: date | None = None
    every: int = 1


def cycle_errors(cycle: BillingCycle, path: str = "billing") -> list[str]:
    """Every problem with a billing cycle, each prefixed with its path."""
    errors: list[str] = []
    if cycle.cycle not in CYCLES:
        errors.append(f"{path}.cycle: {cycle.cycle!r} is not one of {', '.join(CYCLES)}")
    if cycle.anchor not in ANCHORS:
        errors.append(f"{path}.anchor: {cycle.anchor!r} is not one of {', '.join(ANCHORS)}")
    if type(cycle.every) is not int or not 1 <= cycle.every <= EVERY_LIMIT:
        errors.append(
            f"{path}.every: {cycle.every!r} is not a whole number from 1 to {EVERY_LIMIT}"
        )
    if _zone_or_none(cycle.timezone) is None:
        errors.append(f"{path}.timezone: {cycle.timezone!r} is not a known time zone")
    if cycle.anchor_date is not None and type(cycle.anchor_date) is not date:
        errors.append(
            f"{path}.anchor_date: expected a date, got {type(cycle.anchor_date).__name__}"
        )
    elif cycle.anchor == "anniversary" and cycle.anchor_date is None:
        errors.append(
            f"{path}.anchor_date: anniversary billing needs the contract's local start date"
        )
    return errors


def local_midnight_us(timezone: str, day: date) -> int:
    """The first instant of ``day`` in ``timezone``: its local midnight.

    When midnight is repeated (clocks turned back across it) this is its first occurrence;
    when it does not exist (clocks turned forward across it) this is the transition, the
    first instant whose local date is ``day``.
    """
    zone = _zone(timezone)
    midnight = datetime.combine(day, time())
    before_transition = _instant_us(midnight.replace(tzinfo=zone, fold=0))
    if _local_wall(zone, before_transition) == midnight:
        return before_transition
    after_transition = _instant_us(midnight.replace(tzinfo=zone, fold=1))
    # In a gap, fold=0 reads midnight with the earlier offset and fold=1 with the later
    # one; the transition lies between. Search for the first instant at or past midnight.
    low = min(before_transition, after_transition)
    high = max(before_transition, after_transition)
    while low < high:
        middle = (low + high) // 2
        if _local_wall(zone, middle) >= midnight:
            high = middle
        else:
            low = middle + 1
    return high


def local_date(timezone: str, instant_us: int) -> date:
    """The calendar date in ``timezone`` at ``instant_us``."""
    return _local_wall(_zone(timezone), instant_us).date()


def period_containing(cycle: BillingCycle, instant_us: int) -> BillingPeriod:
    """The period of ``cycle`` that contains ``instant_us``."""
    _require_valid(cycle)
    return _containing(cycle, instant_us)[1]


def next_period(cycle: BillingCycle, period: BillingPeriod) -> BillingPeriod:
    """The period of ``cycle`` that starts where ``period`` ends.

    Raises ``ValueError`` when ``period`` does not end on a boundary of ``cycle``.
    """
    _require_valid(cycle)
    following = _containing(cycle, period.end_us)[1]
    if following.start_us != period.end_us:
        raise ValueError(
            f"period: end_us {period.end_us} is not a boundary of this {_cycle_name(cycle)} "
            f"{cycle.anchor} cycle"
        )
    return following


def periods_overlapping(cycle: BillingCycle, start_us: int, end_us: int) -> list[BillingPeriod]:
    """Every period of ``cycle`` that meets ``[start_us, end_us)``, in order.

    The periods tile the range: each ends where the next starts, the first contains
    ``start_us`` and the last contains the range's final instant. An empty range meets none.
    """
    _require_valid(cycle)
    if start_us > end_us:
        raise ValueError(f"start_us {start_us} must not be after end_us {end_us}")
    if start_us == end_us:
        return []
    return list(_periods_from(cycle, start_us, end_us))


def proration_fraction(
    period: BillingPeriod,
    start_us: int,
    end_us: int,
    timezone: str,
    by: Proration = "day",
) -> Decimal:
    """The share of ``period`` covered by ``[start_us, end_us)`` clipped to the period.

    By ``"second"``: covered microseconds over the period's microseconds. By ``"day"``:
    whole local calendar days, and the day of a change belongs to the new terms, so a
    coverage that starts mid-day counts from that day's local midnight and one that ends
    mid-day stops at that day's local midnight (a coverage within one day counts none).
    Full coverage is exactly ``Decimal(1)`` and none is exactly ``Decimal(0)``; anything
    else is rounded once, half-even, to ``FRACTION_PLACES`` places, so the fractions of
    coverages that split a period always sum to exactly 1.
    """
    if by not in PRORATIONS:
        raise ValueError(f"by: {by!r} is not one of {', '.join(PRORATIONS)}")
    zone = _zone(timezone)
    covered_start = max(start_us, period.start_us)
    covered_end = min(end_us, period.end_us)
    if covered_start >= covered_end:
        return Decimal(0)
    if by == "second":
        covered = covered_end - covered_start
        whole = period.end_us - period.start_us
    else:
        first_day = _local_wall(zone, period.start_us).date()
        whole = (_local_wall(zone, period.end_us).date() - first_day).days
        if whole <= 0:
            raise ValueError("period: shorter than one local day; prorate by second")
        covered_days = (
            _local_wall(zone, covered_end).date() - _local_wall(zone, covered_start).date()
        ).days
        covered = min(max(covered_days, 0), whole)
    if covered == 0:
        return Decimal(0)
    if covered == whole:
        return Decimal(1)
    return _fraction(covered, whole)


def _fraction(numerator: int, denominator: int) -> Decimal:
    """``numerator / denominator`` in (0, 1), correctly rounded to ``FRACTION_PLACES``.

    This is the one inexact quotient in the module, so it runs in a local copy of
    ``MONEY_CONTEXT`` with ``Inexact`` untrapped. The division carries guard digits (as
    many as the denominator has) so that its own rounding can never move the quotient
    across, or onto, a midpoint of the fraction grid; the quantize is then the single
    effective rounding, half-even.
    """
    if not 0 < numerator < denominator < FRACTION_DENOMINATOR_LIMIT:
        raise ValueError(f"fraction: {numerator}/{denominator} is not a proper proration")
    with localcontext(MONEY_CONTEXT) as context:
        context.traps[Inexact] = False
        context.prec = FRACTION_PLACES + 1 + len(str(denominator))
        quotient = Decimal(numerator) / Decimal(denominator)
        return quotient.quantize(FRACTION_QUANTUM).normalize()


def _zone_or_none(timezone: object) -> ZoneInfo | None:
    if type(timezone) is not str:
        return None
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _zone(timezone: str) -> ZoneInfo:
    zone = _zone_or_none(timezone)
    if zone is None:
        raise ValueError(f"timezone: {timezone!r} is not a known time zone")
    return zone


def _require_valid(cycle: BillingCycle) -> None:
    errors = cycle_errors(cycle)
    if errors:
        raise ValueError("; ".join(errors))


def _instant_us(moment: datetime) -> int:
    return (moment - UNIX_EPOCH) // ONE_MICROSECOND


def _local_wall(zone: ZoneInfo, instant_us: int) -> datetime:
    """The naive local wall-clock time in ``zone`` at ``instant_us``."""
    moment = UNIX_EPOCH + timedelta(microseconds=instant_us)
    return moment.astimezone(zone).replace(tzinfo=None, fold=0)


def _cycle_name(cycle: BillingCycle) -> str:
    return cycle.cycle if cycle.every == 1 else f"every {cycle.every} {cycle.cycle}"


def _month_ordinal(day: date) -> int:
    return day.year * MONTHS_PER_YEAR + day.month - 1


def _step(cycle: BillingCycle) -> int:
    """A period's length in ordinals: months for month cycles, days for day cycles."""
    if cycle.cycle in DAYS_PER_CYCLE:
        return DAYS_PER_CYCLE[cycle.cycle] * cycle.every
    return MONTHS_PER_CYCLE[cycle.cycle] * cycle.every


def _ordinal_of(cycle: BillingCycle, day: date) -> int:
    """``day``'s ordinal on the cycle's axis: its month count or its day count."""
    return day.toordinal() if cycle.cycle in DAYS_PER_CYCLE else _month_ordinal(day)


def _start_date(cycle: BillingCycle, ordinal: int) -> date:
    """The local start date of the period beginning at ``ordinal``."""
    if cycle.cycle in DAYS_PER_CYCLE:
        return date.fromordinal(ordinal)
    year, month_index = divmod(ordinal, MONTHS_PER_YEAR)
    month = month_index + 1
    if cycle.anchor == "calendar" or cycle.anchor_date is None:
        return date(year, month, 1)
    last_day = calendar.monthrange(year, month)[1]
    return date(year, month, min(cycle.anchor_date.day, last_day))


def _offset(cycle: BillingCycle) -> int:
    """The ordinal every period start is congruent to, modulo the step."""
    step = _step(cycle)
    if cycle.anchor == "anniversary" and cycle.anchor_date is not None:
        return _ordinal_of(cycle, cycle.anchor_date) % step
    if cycle.cycle in DAYS_PER_CYCLE:
        return date(1, 1, 1).toordinal() % step  # a Monday: calendar weeks are ISO weeks
    return 0


def _start_ordinal(cycle: BillingCycle, day: date) -> int:
    """The ordinal of the period whose local dates include ``day``."""
    step = _step(cycle)
    ordinal = _ordinal_of(cycle, day)
    ordinal -= (ordinal - _offset(cycle)) % step
    if _start_date(cycle, ordinal) > day:
        ordinal -= step
    return ordinal


def _period_at(cycle: BillingCycle, ordinal: int) -> BillingPeriod:
    return BillingPeriod(
        local_midnight_us(cycle.timezone, _start_date(cycle, ordinal)),
        local_midnight_us(cycle.timezone, _start_date(cycle, ordinal + _step(cycle))),
    )


def _containing(cycle: BillingCycle, instant_us: int) -> tuple[int, BillingPeriod]:
    """The ordinal and period containing ``instant_us``.

    The local date picks the period; the instant comparisons settle the rare instant whose
    local date disagrees with its order (a repeated hour across midnight).
    """
    step = _step(cycle)
    ordinal = _start_ordinal(cycle, local_date(cycle.timezone, instant_us))
    period = _period_at(cycle, ordinal)
    while instant_us >= period.end_us:
        ordinal += step
        period = _period_at(cycle, ordinal)
    while instant_us < period.start_us:
        ordinal -= step
        period = _period_at(cycle, ordinal)
    return ordinal, period


def _periods_from(cycle: BillingCycle, start_us: int, end_us: int) -> Iterator[BillingPeriod]:
    step = _step(cycle)
    ordinal, period = _containing(cycle, start_us)
    yield period
    while period.end_us < end_us:
        ordinal += step
        period = _period_at(cycle, ordinal)
        yield period

"""Coupons: percentage or fixed-amount discounts with a scope and a duration (pure).

A coupon (``Coupon``) takes a percentage or a fixed amount off the fee lines, the usage
lines (optionally only some meters') or the whole invoice, for the first period, for N
periods, or forever, counted from the period its redemption falls in; or for N calendar
months from the redemption instant (``duration_months``: Stripe's ``duration_in_months``,
which counts months whatever the plan's cycle): then it applies to every period invoice
whose period starts before the redemption's local wall time N months on. A code may carry a
redemption limit and a last day to redeem it (checked where contracts are declared,
``redemption_errors``).

The order when several apply (``APPLICATION_ORDER``), the rule every invoice follows:

1. line coupons naming meters (the most specific scope) before line coupons on all fees
   or all usage, before invoice coupons;
2. within each of those, percentages before fixed amounts;
3. within those, by code.

A percentage applies to each matching line's amount after the coupons before it
(sequential: two 10% coupons take 19%); it is exact (no rounding here), so percentages of
one group commute. A fixed amount takes at most what its matching lines still hold (a
coupon never takes the lines it matches, or the invoice, below zero) and is shared over
those of them holding more than zero in proportion to what each holds, in whole minor
units (``money.allocate``), unless it takes everything. The coupon's line on the invoice
is the sum of its shares; the shares are what tax is computed on (``core.tax``), as a
line's discounted amount.

Because the order is fixed by the coupons themselves and not by the order they were
listed or redeemed in, any listing of the same coupons gives one invoice (a hypothesis law
checks it).
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext
from typing import Literal

from meterline.core.money import (
    MINOR_UNITS,
    MONEY_CONTEXT,
    allocate,
    exact_sum,
    minor_units,
    round_amount,
)
from meterline.core.periods import (
    BillingCycle,
    BillingPeriod,
    local_date,
    local_midnight_us,
    periods_overlapping,
)

CouponScope = Literal["fees", "usage", "invoice"]
COUPON_SCOPES: tuple[CouponScope, ...] = ("fees", "usage", "invoice")
CouponDuration = Literal["once", "repeating", "forever"]
COUPON_DURATIONS: tuple[CouponDuration, ...] = ("once", "repeating", "forever")
HUNDRED = Decimal(100)
ZERO = Decimal(0)
DURATION_PERIODS_LIMIT = 1200
"""The most periods a repeating coupon may last (100 years of months)."""
DURATION_MONTHS_LIMIT = 1200
"""The most calendar months a repeating coupon may last (100 years)."""

APPLICATION_ORDER = (
    "line coupons naming meters, then line coupons on all fees or all usage, then invoice"
    " coupons; within each, percentages before fixed amounts; within those, by code"
)


@dataclass(frozen=True, slots=True)
class Coupon:
    """A discount a contract can redeem. Exactly one of ``percent_off`` and
    ``amount_off`` is set; ``amount_off`` is in ``currency``. ``meters`` narrows a
    ``usage`` coupon to those meters' lines. ``duration_periods``: how many periods a
    ``repeating`` coupon lasts; or ``duration_months``: how many calendar months from its
    redemption (exactly one of them). ``max_redemptions``: how many contracts may redeem the
    code; ``redeem_by_us``: the instant after which it cannot be redeemed."""

    code: str
    name: str
    percent_off: Decimal | None = None
    amount_off: Decimal | None = None
    currency: str | None = None
    applies_to: CouponScope = "invoice"
    meters: tuple[str, ...] = ()
    duration: CouponDuration = "once"
    duration_periods: int | None = None
    max_redemptions: int | None = None
    redeem_by_us: int | None = None
    duration_months: int | None = None

    def rank(self) -> tuple[int, int, str]:
        """The coupon's place in ``APPLICATION_ORDER``."""
        scope = 0 if self.meters else 1 if self.applies_to != "invoice" else 2
        return scope, 0 if self.percent_off is not None else 1, self.code

    def lasts(self, periods_since_redemption: int) -> bool:
        """Whether the coupon still applies in the period ``periods_since_redemption``
        after the one its redemption falls in (0 is that period)."""
        if periods_since_redemption < 0:
            return False
        if self.duration == "forever":
            return True
        if self.duration == "once":
            return periods_since_redemption == 0
        return periods_since_redemption < (self.duration_periods or 0)


@dataclass(frozen=True, slots=True)
class Redemption:
    """A contract's use of a coupon code, from ``redeemed_at_us``."""

    code: str
    redeemed_at_us: int


@dataclass(frozen=True, slots=True)
class Discountable:
    """An invoice line a coupon may reduce: its position, kind (``fee`` or ``usage``;
    any other kind is reached by invoice coupons only), meter and exact amount."""

    key: int
    kind: str
    meter: str | None
    amount: Decimal


@dataclass(frozen=True, slots=True)
class CouponLine:
    """What one coupon took: its total (negative, exact) and each line's share of it."""

    coupon: Coupon
    amount: Decimal
    shares: tuple[tuple[int, Decimal], ...]

    def description(self, currency: str) -> str:
        coupon = self.coupon
        if coupon.percent_off is not None:
            off = f"{coupon.percent_off}% off"
        else:
            off = f"{round_amount(coupon.amount_off or ZERO, currency)} {currency} off"
        where = {"fees": "fees", "usage": "usage", "invoice": "the invoice"}[coupon.applies_to]
        if coupon.meters:
            where = "usage of " + ", ".join(coupon.meters)
        return f"Coupon {coupon.code}: {coupon.name} ({off} {where})"


def coupon_errors(coupon: Coupon, path: str) -> list[str]:
    """Every problem with a coupon's declaration, each naming its field."""
    errors = []
    if (coupon.percent_off is None) == (coupon.amount_off is None):
        errors.append(f"{path}: set exactly one of percent_off and amount_off")
    if coupon.percent_off is not None and not ZERO < coupon.percent_off <= HUNDRED:
        errors.append(f"{path}.percent_off: must be more than 0 and at most 100")
    if coupon.amount_off is not None:
        if coupon.amount_off <= 0:
            errors.append(f"{path}.amount_off: must be more than 0")
        if coupon.currency is None:
            errors.append(f"{path}.currency: a fixed amount needs its currency")
        elif coupon.currency not in MINOR_UNITS:
            errors.append(f"{path}.currency: {coupon.currency!r} is not a known currency")
        elif coupon.amount_off != round_amount(coupon.amount_off, coupon.currency):
            errors.append(
                f"{path}.amount_off: {coupon.amount_off} is not a whole number of"
                f" {coupon.currency} minor units ({minor_units(coupon.currency)} places)"
            )
    if coupon.applies_to not in COUPON_SCOPES:
        errors.append(f"{path}.applies_to: must be one of {', '.join(COUPON_SCOPES)}")
    if coupon.meters and coupon.applies_to != "usage":
        errors.append(f"{path}.meters: only a usage coupon names meters")
    if coupon.duration not in COUPON_DURATIONS:
        errors.append(f"{path}.duration: must be one of {', '.join(COUPON_DURATIONS)}")
    errors += _duration_errors(coupon, path)
    if coupon.max_redemptions is not None and coupon.max_redemptions < 1:
        errors.append(f"{path}.max_redemptions: must be 1 or more")
    return errors


def _duration_errors(coupon: Coupon, path: str) -> list[str]:
    periods, months = coupon.duration_periods, coupon.duration_months
    if coupon.duration != "repeating":
        return [
            f"{path}.{name}: only a repeating coupon has a duration"
            for name, value in (("duration_periods", periods), ("duration_months", months))
            if value is not None
        ]
    if periods is not None and months is not None:
        return [f"{path}.duration_months: set duration_periods or duration_months, not both"]
    if months is not None:
        if not 1 <= months <= DURATION_MONTHS_LIMIT:
            return [
                f"{path}.duration_months: a repeating coupon lasts 1 to"
                f" {DURATION_MONTHS_LIMIT} months"
            ]
        return []
    if not 1 <= (periods or 0) <= DURATION_PERIODS_LIMIT:
        return [
            f"{path}.duration_periods: a repeating coupon lasts 1 to"
            f" {DURATION_PERIODS_LIMIT} periods"
        ]
    return []


def months_after_us(timezone: str, instant_us: int, months: int) -> int:
    """The instant ``months`` calendar months after ``instant_us`` at the same local wall
    time in ``timezone`` (the day kept, or the month's last day when it is shorter: 31
    January + 1 month is 28 or 29 February)."""
    day = local_date(timezone, instant_us)
    into_day_us = instant_us - local_midnight_us(timezone, day)
    year, month_index = divmod(day.year * 12 + day.month - 1 + months, 12)
    last = calendar.monthrange(year, month_index + 1)[1]
    later = date(year, month_index + 1, min(day.day, last))
    return local_midnight_us(timezone, later) + into_day_us


def redemption_errors(
    coupons: Mapping[str, Coupon], redemptions: Sequence[tuple[str, Redemption]]
) -> list[str]:
    """Every redemption that names no coupon, comes after the code's last day, or goes
    past the code's limit (counted in the order given: the first ones are kept). Each
    entry of ``redemptions`` is the path it was declared at and the redemption."""
    errors = []
    used: dict[str, int] = {}
    for path, redemption in redemptions:
        coupon = coupons.get(redemption.code)
        if coupon is None:
            errors.append(f"{path}: no coupon has the code {redemption.code!r}")
            continue
        if coupon.redeem_by_us is not None and redemption.redeemed_at_us > coupon.redeem_by_us:
            errors.append(f"{path}: coupon {coupon.code} was redeemable only until redeem_by")
        used[coupon.code] = used.get(coupon.code, 0) + 1
        if coupon.max_redemptions is not None and used[coupon.code] > coupon.max_redemptions:
            errors.append(
                f"{path}: coupon {coupon.code} is limited to {coupon.max_redemptions} redemption(s)"
            )
    return errors


def coupons_in_force(
    coupons: Mapping[str, Coupon],
    redemptions: Sequence[Redemption],
    cycle: BillingCycle,
    period: BillingPeriod,
) -> list[Coupon]:
    """The redeemed coupons that apply to ``period``'s invoice: redeemed before it ends,
    and still lasting that many periods after the one their redemption falls in (a
    coupon redeemed mid-period applies to that whole period's invoice, as Stripe applies
    one to the next invoice); with ``duration_months``, every period starting before the
    redemption's wall time that many months on (``months_after_us``)."""
    found = []
    for redemption in redemptions:
        coupon = coupons.get(redemption.code)
        if coupon is None or redemption.redeemed_at_us >= period.end_us:
            continue
        if coupon.duration == "repeating" and coupon.duration_months is not None:
            ends_us = months_after_us(
                cycle.timezone, redemption.redeemed_at_us, coupon.duration_months
            )
            if period.start_us < ends_us:
                found.append(coupon)
            continue
        since = 0
        if redemption.redeemed_at_us < period.start_us:
            since = len(periods_overlapping(cycle, redemption.redeemed_at_us, period.start_us))
        if coupon.lasts(since):
            found.append(coupon)
    return found


def apply_coupons(
    lines: Sequence[Discountable], coupons: Sequence[Coupon], currency: str
) -> list[CouponLine]:
    """What each coupon takes from ``lines``, in ``APPLICATION_ORDER`` (see the module
    docstring). A coupon takes nothing, and is left out, when it is in another currency
    than ``currency`` or its matching lines hold nothing (their sum is zero or less:
    a line may be negative, as unused time credited on an upgrade)."""
    held = {line.key: line.amount for line in lines}
    taken = []
    for coupon in sorted(coupons, key=Coupon.rank):
        if coupon.amount_off is not None and coupon.currency != currency:
            continue
        holding = [(line.key, held[line.key]) for line in lines if _matches(coupon, line)]
        if exact_sum([amount for _, amount in holding]) <= 0:
            continue
        shares = _shares(coupon, holding, currency)
        with localcontext(MONEY_CONTEXT):
            for key, share in shares:
                held[key] -= share
        taken.append(CouponLine(coupon, -exact_sum([share for _, share in shares]), shares))
    return taken


def _matches(coupon: Coupon, line: Discountable) -> bool:
    if coupon.applies_to == "invoice":
        return True
    if coupon.applies_to == "fees":
        return line.kind == "fee"
    return line.kind == "usage" and (not coupon.meters or line.meter in coupon.meters)


def _shares(
    coupon: Coupon, holding: list[tuple[int, Decimal]], currency: str
) -> tuple[tuple[int, Decimal], ...]:
    """Each matching line's share of what ``coupon`` takes (what they hold is more than
    zero): a percentage of every line (a negative line gives a negative share, so the
    coupon takes the percentage of their sum); a fixed amount in whole minor units over
    the lines holding more than zero, or everything when it is at least their sum."""
    with localcontext(MONEY_CONTEXT):
        if coupon.percent_off is not None:
            return tuple((key, amount * coupon.percent_off / HUNDRED) for key, amount in holding)
    amount_off = coupon.amount_off or ZERO
    if amount_off >= exact_sum([amount for _, amount in holding]):
        return tuple(holding)
    positive = [(key, amount) for key, amount in holding if amount > 0]
    parts = allocate(amount_off, [amount for _, amount in positive], currency)
    return tuple((key, part) for (key, _), part in zip(positive, parts, strict=True))

"""Pricing one usage line (pure): the price a line of a meter and group takes, what a
quantity costs under it, the fee of one event under a ``percentage`` price (with the
free allowance and per-event minimum the pricing file's ``semantics`` chose) and the
amount its events' fees make (``percentage_amount``). The
rating that measures the lines is ``core.rating``'s."""

from __future__ import annotations

from decimal import Decimal, localcontext

from meterline.core.errors import MeterlineError
from meterline.core.meters import Meter
from meterline.core.model import Price
from meterline.core.money import MONEY_CONTEXT
from meterline.core.pricing import (
    after_allowance,
    bounded,
    graduated,
    matrix_unit_amount,
    package,
    per_unit,
    volume,
)
from meterline.core.semantics import DEFAULT, Semantics

ZERO = Decimal(0)


class RatingError(MeterlineError, ValueError):
    """A line cannot be priced (e.g. a matrix without a price for a group and no default)."""

    code = "rating_failed"
    http_status = 422


def price_for(
    prices: tuple[Price, ...], meter: Meter, group: tuple[str | None, ...]
) -> Price | None:
    """The first price for ``meter`` whose ``where`` matches ``group`` (prices come most
    specific first, see ``Terms.prices``)."""
    for price in prices:
        if price.meter == meter.key and price.applies_to(meter.group_by, group):
            return price
    return None


def price_quantity(price: Price, quantity: Decimal, group: tuple[str | None, ...]) -> Decimal:
    """The amount ``price`` charges for ``quantity`` (not for ``percentage``, which is per
    event), before the line minimum and maximum."""
    billable = after_allowance(quantity, price.free_units)
    if price.model == "per_unit":
        return per_unit(billable, price.unit_amount or ZERO)
    if price.model == "package":
        return package(billable, price.package_size or Decimal(1), price.package_amount or ZERO)
    if price.model == "graduated":
        return graduated(billable, price.tiers, price.first_flat_at_zero)
    if price.model == "volume":
        return volume(billable, price.tiers)
    if price.model == "matrix":
        key = tuple("" if value is None else value for value in group)
        try:
            unit = matrix_unit_amount(dict(price.matrix), key, price.matrix_default)
        except KeyError as error:
            raise RatingError(f"price for meter {price.meter}: {error.args[0]}") from None
        return per_unit(billable, unit)
    raise RatingError(f"price for meter {price.meter}: {price.model} is priced per event")


def percentage_fee(
    price: Price,
    amount: Decimal,
    position: int,
    before: Decimal = ZERO,
    semantics: Semantics = DEFAULT,
) -> Decimal:
    """The fee on one event of ``amount`` that is the ``position``-th (from 0) of its line,
    after events whose amounts sum to ``before``: ``rate x (amount - its part in the free
    allowance) + fixed_fee`` unless the allowance makes the event free, held within
    ``per_event_minimum`` (not for a free event when ``free_event_minimum`` is
    ``skipped``) and ``per_event_maximum``. The allowance is ``semantics.percentage_free``'s
    (``free_allowance``)."""
    covered, free = free_allowance(price, amount, position, before, semantics)
    with localcontext(MONEY_CONTEXT):
        fee = (amount - covered) * (price.rate or ZERO)
        if not free:
            fee += price.fixed_fee
    if price.per_event_minimum is not None and not (
        free and semantics.free_event_minimum == "skipped"
    ):
        fee = max(fee, price.per_event_minimum)
    if price.per_event_maximum is not None:
        fee = min(fee, price.per_event_maximum)
    return fee


def percentage_amount(fees: Decimal, bases: Decimal, semantics: Semantics = DEFAULT) -> Decimal:
    """A ``percentage`` line's amount from its events' ``fees`` (``percentage_fee`` of each)
    and their summed ``bases``: the fees, except that under ``percentage_free`` ``events``
    or ``amount`` (Lago's meaning without a per-transaction minimum or maximum) a line
    whose bases sum to exactly 0 charges nothing, fixed fees and per-event minimums
    included: Lago charges no fixed amount when the aggregated units are 0 (getlago/lago-api
    ``percentage_service.rb``, ``compute_fixed_amount``), and a rate on 0 is 0. A window
    of a progressive line reads it on the usage so far, as Lago's progressive billing
    prices the usage to date."""
    if bases == 0 and semantics.percentage_free in ("events", "amount"):
        return ZERO
    return fees


def free_allowance(
    price: Price, amount: Decimal, position: int, before: Decimal, semantics: Semantics
) -> tuple[Decimal, bool]:
    """The part of an event's ``amount`` the rate spares, and whether the event is free
    (pays no fixed fee):

    - ``fixed_fee``: the first ``free_events`` events are free of the fixed fee only;
    - ``events``: the first ``free_events`` events are free of rate and fixed fee;
    - ``amount``: the first ``free_units`` of the line's summed amounts are free of the
      rate, and an event wholly inside them (``before + amount < free_units``: the one
      that reaches the limit exactly pays it, as Lago's does) of the fixed fee; with
      ``free_events`` too, the allowance ends at whichever limit is reached first
      (either one alone when the other is zero; none when both are);
    - ``amount_else_events``: as ``amount`` with ``free_units`` alone, however many
      events it takes (``free_events`` is not read); without ``free_units``, as
      ``events``."""
    mode = semantics.percentage_free
    in_events = position < price.free_events
    if mode == "fixed_fee":
        return ZERO, in_events
    if mode == "events" or not price.free_units:
        return (amount, True) if in_events else (ZERO, False)
    if mode == "amount" and price.free_events and not in_events:
        return ZERO, False
    with localcontext(MONEY_CONTEXT):
        left = max(price.free_units - before, ZERO)
    if left == 0:
        return ZERO, False
    return min(amount, left), amount < left


def amount_so_far(amount: Decimal, price: Price, last: bool, semantics: Semantics) -> Decimal:
    """A line's cumulative amount as a window charges it: in the segment's last window,
    held within the price's minimum and maximum; before it, capped at the maximum when
    ``line_maximum`` is ``every_window``, and nothing at all for a ``volume`` price when
    ``volume_billing`` is ``close``."""
    if last:
        return bounded(amount, price.minimum, price.maximum)
    if price.model == "volume" and semantics.volume_billing == "close":
        return ZERO
    if semantics.line_maximum == "every_window":
        return bounded(amount, None, price.maximum)
    return amount

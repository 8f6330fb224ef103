"""Pricing one usage line (pure): the price a line of a meter and group takes, what a
quantity costs under it, and the fee of one event under a ``percentage`` price. The
rating that measures the lines is ``core.rating``'s."""

from __future__ import annotations

from decimal import Decimal, localcontext

from meterline.core.errors import MeterlineError
from meterline.core.meters import Meter
from meterline.core.model import Price
from meterline.core.money import MONEY_CONTEXT
from meterline.core.pricing import (
    after_allowance,
    graduated,
    matrix_unit_amount,
    package,
    per_unit,
    volume,
)

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


def percentage_fee(price: Price, amount: Decimal, position: int) -> Decimal:
    """The fee on one event of ``amount`` that is the ``position``-th (from 0) of its line."""
    with localcontext(MONEY_CONTEXT):
        fee = amount * (price.rate or ZERO)
        if position >= price.free_events:
            fee += price.fixed_fee
    if price.per_event_minimum is not None:
        fee = max(fee, price.per_event_minimum)
    if price.per_event_maximum is not None:
        fee = min(fee, price.per_event_maximum)
    return fee

"""The ingest limits on numbers leave billing room to compute exactly (pure core)."""

from __future__ import annotations

from decimal import Decimal, Inexact, localcontext

import pytest

from meterline.core.limits import DEFAULT_LIMITS, EVENTS_PER_QUANTITY_DIGITS, PRICE_DIGITS_MAX
from meterline.core.money import MONEY_CONTEXT, round_amount
from meterline.core.pricing import Tier, graduated, per_unit

WIDEST = Decimal("999999999999999999.9999999999")
"""The largest number, with the most places, that ingest accepts."""
LONGEST_PRICE = Decimal("9999999999.9999999999")
"""A unit price written with PRICE_DIGITS_MAX digits, all nines (the longest products)."""


def _summed(number: Decimal) -> Decimal:
    """The sum over 10**EVENTS_PER_QUANTITY_DIGITS events of ``number``, one of them a unit
    of its last place smaller (so the sum ends in no zero), in exact arithmetic."""
    last_place = Decimal((0, (1,), number.as_tuple().exponent))
    with localcontext(MONEY_CONTEXT):
        return number * (10**EVENTS_PER_QUANTITY_DIGITS - 1) + (number - last_place)


def test_the_digit_budget_fits_the_money_context() -> None:
    """A number's digits + a trillion events' digits + a price's digits <= MONEY_CONTEXT's."""
    assert DEFAULT_LIMITS.number_digits_max == 28
    budget = DEFAULT_LIMITS.number_digits_max + EVENTS_PER_QUANTITY_DIGITS + PRICE_DIGITS_MAX
    assert budget <= MONEY_CONTEXT.prec
    assert len(LONGEST_PRICE.as_tuple().digits) == PRICE_DIGITS_MAX


def test_the_largest_quantity_times_the_longest_price_is_exact() -> None:
    """A trillion of the widest accepted number, at a 20-digit price, prices without raising."""
    quantity = _summed(WIDEST)
    tiers = (Tier(Decimal(10**20), LONGEST_PRICE, Decimal(1)), Tier(None, LONGEST_PRICE))
    for amount in (per_unit(quantity, LONGEST_PRICE), graduated(quantity, tiers)):
        assert round_amount(amount, "USD") > 0
    tiny = per_unit(_summed(Decimal("1E-10")), LONGEST_PRICE)
    assert tiny == Decimal("999999999998.99999999000000000001")  # (100 - 1E-10)(1E+10 - 1E-10)


def test_a_number_past_the_limits_would_stop_billing() -> None:
    """The bounds are needed: a digit more on each side, and exact money arithmetic raises."""
    beyond = Decimal("9999999999999999999.99999999999")  # 19 + 11 digits
    with pytest.raises(Inexact):
        per_unit(_summed(beyond), LONGEST_PRICE)

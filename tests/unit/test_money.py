"""Money: exact entry, the one rounding step, cent-exact allocation."""

from __future__ import annotations

from decimal import Decimal as D
from decimal import Inexact, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.money import MONEY_CONTEXT, MoneyError, allocate, round_amount, to_decimal


def test_floats_are_refused() -> None:
    """to_decimal refuses a float, naming the field and how to fix it."""
    with pytest.raises(MoneyError, match="unit_amount: floats are never money"):
        to_decimal(0.1, "unit_amount")
    assert to_decimal("0.1") == D("0.1") and to_decimal(3) == D(3)
    for bad in ("NaN", "Infinity", "1,5", None):
        with pytest.raises(MoneyError):
            to_decimal(bad)


def test_rounding_half_up_by_default_half_even_selectable() -> None:
    """2.675 USD rounds to 2.68 (half-up); 2.665 to 2.66 with banker's rounding."""
    assert round_amount(D("2.675"), "USD") == D("2.68")
    assert round_amount(D("2.665"), "USD", "half_even") == D("2.66")
    assert round_amount(D("1234.5"), "JPY") == D("1235")
    assert round_amount(D("1.0005"), "KWD") == D("1.001")


def test_unknown_currency_is_an_error() -> None:
    """A currency without a known minor unit is refused, not guessed."""
    with pytest.raises(MoneyError, match="ZZZ"):
        round_amount(D(1), "ZZZ")


def test_inexact_arithmetic_raises_in_money_context() -> None:
    """Under MONEY_CONTEXT a result that would lose digits raises instead."""
    with localcontext(MONEY_CONTEXT), pytest.raises(Inexact):
        _ = D(1) / D(3)


def test_allocation_worked_example() -> None:
    """$100 in three equal parts: 33.34 + 33.33 + 33.33, the extra cent to the first."""
    assert allocate(D("100.00"), [D(1), D(1), D(1)], "USD") == [D("33.34"), D("33.33"), D("33.33")]


@given(
    cents=st.integers(0, 10**9),
    weights=st.lists(st.integers(0, 1000), min_size=1, max_size=8).filter(any),
)
def test_allocation_conserves_every_cent(cents: int, weights: list[int]) -> None:
    """Allocated shares sum exactly to the total and differ from exact shares by < 1 cent."""
    total = D(cents).scaleb(-2)
    shares = allocate(total, [D(w) for w in weights], "USD")
    assert sum(shares) == total
    weight_total = sum(weights)
    for share, weight in zip(shares, weights, strict=True):
        assert abs(share - total * weight / weight_total) < D("0.01")

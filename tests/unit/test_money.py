"""Money: exact entry, the one rounding step, cent-exact allocation, and the display of
amounts and quantities for reading."""

from __future__ import annotations

from decimal import Decimal as D
from decimal import Inexact, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.money import (
    MINOR_UNITS,
    MONEY_CONTEXT,
    MoneyError,
    allocate,
    cumulative_shares,
    display_amount,
    display_figure,
    display_quantity,
    round_amount,
    to_decimal,
)


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


def test_cumulative_shares_worked_example() -> None:
    """$100 over three days: 33.33, 33.34, 33.33 (cumulative 33.33, 66.67, 100.00: each the
    exact cumulative amount rounded), not the extra cent on the first day."""
    assert cumulative_shares(D("100.00"), 3, "USD") == [D("33.33"), D("33.34"), D("33.33")]
    assert cumulative_shares(D("-100.00"), 3, "USD") == [D("-33.33"), D("-33.34"), D("-33.33")]


def test_cumulative_shares_refuse_a_total_below_the_minor_unit() -> None:
    with pytest.raises(MoneyError):
        cumulative_shares(D("1.005"), 2, "USD")
    with pytest.raises(MoneyError):
        cumulative_shares(D("1.00"), 0, "USD")


@given(cents=st.integers(-(10**9), 10**9), count=st.integers(1, 400))
def test_cumulative_shares_stay_within_half_a_cent_of_the_exact_amount(
    cents: int, count: int
) -> None:
    total = D(cents).scaleb(-2)
    shares = cumulative_shares(total, count, "USD")
    assert len(shares) == count and sum(shares) == total
    running = D(0)
    for step, share in enumerate(shares, start=1):
        running += share
        assert abs(running * count - total * step) <= D("0.005") * count


# -- display ---------------------------------------------------------------------------------


def test_amounts_display_at_the_currency_minor_unit() -> None:
    """The issue's figures read as money: 2 places for USD, none for JPY, 3 for KWD."""
    assert display_amount(D("15011.3476752"), "USD") == "15,011.35"
    assert display_amount(D("0E-7"), "USD") == "0.00"
    assert display_amount(D("30.4800000"), "USD") == "30.48"
    assert display_amount(D("0"), "EUR") == "0.00"
    assert display_amount(D("-12.3"), "GBP") == "-12.30"
    assert display_amount(D("1234567.1"), "USD") == "1,234,567.10"
    assert display_amount(D("1234.5"), "JPY") == "1,235"
    assert display_amount(D("0E-7"), "JPY") == "0"
    assert display_amount(D("1.0005"), "KWD") == "1.001"
    assert display_amount("274.1935483870967741935483871", "USD") == "274.19"
    assert display_amount(7, "USD") == "7.00"


def test_display_rounds_half_up_and_never_shows_negative_zero() -> None:
    """Half-up at the minor unit (2.675 -> 2.68, -2.675 -> -2.68); -0.004 reads 0.00."""
    assert display_amount(D("2.675"), "USD") == "2.68"
    assert display_amount(D("2.665"), "USD") == "2.67"
    assert display_amount(D("-2.675"), "USD") == "-2.68"
    assert display_amount(D("-0.004"), "USD") == "0.00"
    assert display_amount(D("-0E-7"), "USD") == "0.00"
    assert display_amount(D("-0.5"), "JPY") == "-1"


def test_custom_units_display_exactly_with_trailing_zeros_trimmed() -> None:
    """A credit type has no minor unit: its exact value, trimmed, never 0E-7."""
    assert display_amount(D("19999.500"), "credits") == "19,999.5"
    assert display_amount(D("0E-7"), "credits") == "0"
    assert display_amount(D("-0E-7"), "tokens") == "0"
    assert display_amount(D("1E+3"), "credits") == "1,000"
    assert display_amount(D("0.0000001"), "credits") == "0.0000001"
    assert display_amount(D("-2.50"), "credits") == "-2.5"


def test_display_refuses_floats_like_every_entry() -> None:
    """A float is refused by the display too (it goes through to_decimal)."""
    with pytest.raises(MoneyError, match="floats are never money"):
        display_amount(0.1, "USD")  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        display_quantity(1.5)  # type: ignore[arg-type]


def test_quantities_and_percentages_never_show_exponents() -> None:
    """Quantities are exact and trimmed (0E-7 -> 0); percentages round to their places."""
    assert display_quantity(D("0E-7")) == "0"
    assert display_quantity(D("30.4800000")) == "30.48"
    assert display_quantity(D("1234567")) == "1,234,567"
    assert display_quantity(D("1E+3")) == "1,000"
    assert display_quantity(D("-0")) == "0"
    assert display_quantity("0.000000000000000000001") == "0.000000000000000000001"
    assert display_quantity(D("27.2"), 1) == "27.2"
    assert display_quantity(D("27.25"), 1) == "27.3"
    assert display_quantity(D("-0.04"), 1) == "0.0"
    assert display_quantity(D("1E+2"), 1) == "100.0"


def test_figures_in_records_are_shown_exactly_and_words_as_they_are() -> None:
    """Evidence is not rounded: 30.4800000 -> 30.48, 18.2880000 -> 18.288; words kept."""
    assert display_figure("30.4800000") == "30.48"
    assert display_figure("18.2880000") == "18.288"
    assert display_figure(D("0E-7")) == "0" and display_figure(2000000) == "2,000,000"
    assert display_figure("none") == "none" and display_figure("in ledger") == "in ledger"
    assert display_figure(True) == "True" and display_figure(None) == "None"


finite_decimals = st.decimals(
    allow_nan=False, allow_infinity=False, min_value=-(10**15), max_value=10**15
)
exponents = st.integers(-12, 6)


def _scaled(value: D, exponent: int) -> D:
    """``value`` with its exponent moved (hypothesis' decimals rarely carry many zeros)."""
    return value.scaleb(exponent)


@given(value=finite_decimals, exponent=exponents, currency=st.sampled_from(sorted(MINOR_UNITS)))
def test_a_displayed_amount_parses_back_to_the_rounded_amount(
    value: D, exponent: int, currency: str
) -> None:
    """display(x) without separators is round(x) at the currency's minor unit, half-up."""
    amount = _scaled(value, exponent)
    shown = display_amount(amount, currency)
    assert "E" not in shown and "e" not in shown
    places = MINOR_UNITS[currency]
    fraction = shown.rpartition(".")[2] if "." in shown else ""
    assert len(fraction) == places
    assert D(shown.replace(",", "")) == round_amount(amount, currency, "half_up")
    assert not shown.startswith("-") or D(shown.replace(",", "")) < 0


@given(value=finite_decimals, exponent=exponents)
def test_a_custom_unit_and_a_quantity_parse_back_exactly(value: D, exponent: int) -> None:
    """Credits and quantities lose nothing: the text parses back to the same number."""
    amount = _scaled(value, exponent)
    for shown in (display_amount(amount, "credits"), display_quantity(amount)):
        assert "E" not in shown and "e" not in shown
        assert D(shown.replace(",", "")) == amount
        assert not shown.endswith("0") or "." not in shown  # trailing zeros trimmed
        integral = shown.lstrip("-").partition(".")[0]
        assert integral == f"{int(integral.replace(',', '')):,}"  # separated by thousands


def test_a_typed_amount_stays_within_the_digits_money_can_carry() -> None:
    """18 digits before the point and 12 after pass; one more either side, or an exponent
    past them, is refused naming the field."""
    from meterline.core.money import MoneyError, to_bounded_amount

    assert to_bounded_amount("999999999999999999.999999999999", "--amount") == D(
        "999999999999999999.999999999999"
    )
    assert to_bounded_amount("-100.50", "--amount") == D("-100.50")
    assert to_bounded_amount("0", "--paid") == 0
    for bad in ("1000000000000000000", "0.0000000000001", "1e100", "1E-20"):
        with pytest.raises(MoneyError, match=r"--amount: .* out of range"):
            to_bounded_amount(bad, "--amount")

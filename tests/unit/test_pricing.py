"""Price models: vendors' published worked examples, and laws over generated inputs."""

from __future__ import annotations

from decimal import Decimal as D
from decimal import localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.money import MONEY_CONTEXT
from meterline.core.pricing import (
    Tier,
    after_allowance,
    bounded,
    graduated,
    matrix_unit_amount,
    package,
    per_unit,
    percentage,
    tier_errors,
    volume,
    volume_tier,
)

# Lago, "Volume" charge model: four tiers with a $10 fixed fee each.
LAGO_VOLUME = [
    Tier(D(10_000), D("0.0010"), D(10)),
    Tier(D(50_000), D("0.0008"), D(10)),
    Tier(D(100_000), D("0.0006"), D(10)),
    Tier(None, D("0.0004"), D(10)),
]
# Lago, "Graduated": $1 for the first 100 units, $0.50 for the next 100, $0.10 after.
LAGO_GRADUATED = [Tier(D(100), D(1)), Tier(D(200), D("0.50")), Tier(None, D("0.10"))]
# A common published example (Zuplo's monetization docs): 1,000 at $0.10,
# to 10,000 at $0.05, then $0.01.
THREE_TIERS = [Tier(D(1000), D("0.10")), Tier(D(10_000), D("0.05")), Tier(None, D("0.01"))]
# Lago, "Graduated percentage": 1% + $200, 2% + $300, 3% + $400 per tier entered.
LAGO_GRADUATED_PERCENTAGE = [
    Tier(D(1000), D("0.01"), D(200)),
    Tier(D(10_000), D("0.02"), D(300)),
    Tier(None, D("0.03"), D(400)),
]


def test_lago_volume_example() -> None:
    """Lago: 65,000 API calls cost 65,000 x $0.0006 + $10 = $49."""
    assert volume(D(65_000), LAGO_VOLUME) == D(49)


def test_lago_graduated_example() -> None:
    """Lago's tiers: 250 units = 100 x $1 + 100 x $0.50 + 50 x $0.10 = $155."""
    assert graduated(D(250), LAGO_GRADUATED) == D(155)


def test_published_graduated_and_volume_at_15000_units() -> None:
    """15,000 units: graduated $100 + $450 + $50 = $600; volume 15,000 x $0.01 = $150."""
    assert graduated(D(15_000), THREE_TIERS) == D(600)
    assert volume(D(15_000), THREE_TIERS) == D(150)


def test_autumn_graduated_example() -> None:
    """Autumn: 1,000 x $0.01 + 9,000 x $0.008 + 5,000 x $0.005 = $107."""
    tiers = [Tier(D(1000), D("0.01")), Tier(D(10_000), D("0.008")), Tier(None, D("0.005"))]
    assert graduated(D(15_000), tiers) == D(107)


def test_lago_package_example() -> None:
    """Lago: $5 per 100 units, first 100 free: 201 units cost $0 + $5 + $5 = $10."""
    assert package(D(201), size=D(100), amount=D(5), free_units=D(100)) == D(10)
    assert package(D(100), size=D(100), amount=D(5), free_units=D(100)) == D(0)


def test_lago_graduated_percentage_example() -> None:
    """Lago: transactions of $500, $550, $4,000 cost $205, $306 and $80 (running total)."""
    charged, running = [], D(0)
    for amount in (D(500), D(550), D(4000)):
        before = graduated(running, LAGO_GRADUATED_PERCENTAGE, first_flat_at_zero=False)
        running += amount
        after = graduated(running, LAGO_GRADUATED_PERCENTAGE, first_flat_at_zero=False)
        charged.append(after - before)
    assert charged == [D(205), D(306), D(80)]


def test_stripe_card_pricing_as_percentage() -> None:
    """2.9% + $0.30 per card payment (Stripe's published card rate, via Lago's template)."""
    assert percentage([D(100), D(20)], rate=D("0.029"), fixed_fee=D("0.30")) == D("4.08")


def test_percentage_per_event_bounds_and_free_events() -> None:
    """Per-event minimum and maximum clamp each fee; free events skip the fixed fee."""
    fees = percentage(
        [D(1), D(10_000), D(100)],
        rate=D("0.01"),
        fixed_fee=D("0.50"),
        free_events=1,
        per_event_min=D(1),
        per_event_max=D(20),
    )
    assert fees == D(1) + D(20) + D("1.50")


def test_tier_bound_is_inclusive() -> None:
    """With up_to 100, unit 100 is in tier 1 and 100.5 is in tier 2 (Stripe, OpenMeter)."""
    tiers = [Tier(D(100), D(1)), Tier(None, D(2))]
    assert volume_tier(D(100), tiers).unit_amount == D(1)
    assert volume_tier(D("100.5"), tiers).unit_amount == D(2)
    assert graduated(D("100.5"), tiers) == D(101)


def test_first_tier_flat_fee_at_zero_usage() -> None:
    """A first-tier flat fee is charged even at zero usage; later tiers' only when entered."""
    tiers = [Tier(D(10), D(1), D(5)), Tier(None, D(1), D(7))]
    assert graduated(D(0), tiers) == D(5)
    assert graduated(D(10), tiers) == D(15)
    assert graduated(D(11), tiers) == D(23)
    assert volume(D(0), tiers) == D(5)


def test_zero_usage_is_zero_packages() -> None:
    """Packages round up, and zero usage is zero packages."""
    assert package(D(0), D(1000), D(2)) == D(0)
    assert package(D(1), D(1000), D(2)) == D(2)
    assert package(D(1000), D(1000), D(2)) == D(2)
    assert package(D(1001), D(1000), D(2)) == D(4)


def test_matrix_prices_by_dimension_with_default() -> None:
    """A matrix price looks up its dimension values and falls back to its default."""
    prices = {("gpt-4o", "input"): D("0.0000025"), ("gpt-4o", "output"): D("0.00001")}
    assert matrix_unit_amount(prices, ("gpt-4o", "output")) == D("0.00001")
    assert matrix_unit_amount(prices, ("llama", "input"), default=D("0.000001")) == D("0.000001")
    with pytest.raises(KeyError, match="llama/input"):
        matrix_unit_amount(prices, ("llama", "input"))


def test_line_minimum_and_maximum() -> None:
    """A line is held within its minimum and maximum spend."""
    assert bounded(D(3), minimum=D(10)) == D(10)
    assert bounded(D(300), maximum=D(100)) == D(100)
    with pytest.raises(ValueError, match="minimum"):
        bounded(D(1), minimum=D(5), maximum=D(2))


def test_tier_errors_name_the_path() -> None:
    """Overlapping, unbounded-in-the-middle and negative tiers are named by path."""
    errors = tier_errors([Tier(D(100), D(1)), Tier(D(50), D(1)), Tier(None, D(-1))])
    assert errors == [
        "tiers[1].up_to: 50 must be greater than 100 (tiers overlap or are out of order)",
        "tiers[2].unit_amount: must not be negative",
    ]
    assert tier_errors([Tier(None), Tier(D(5))]) == [
        "tiers[0].up_to: only the last tier may be unbounded",
        "tiers[1].up_to: the last tier must be unbounded (omit up_to)",
    ]
    assert tier_errors(LAGO_VOLUME) == []


def test_negative_quantity_is_refused() -> None:
    """A negative quantity is an error, not a refund."""
    with pytest.raises(ValueError, match="quantity"):
        per_unit(D(-1), D(1))


prices = st.decimals(min_value=0, max_value=100, places=4)


@st.composite
def tier_lists(draw: st.DrawFn) -> list[Tier]:
    bounds = sorted(set(draw(st.lists(st.integers(1, 200), min_size=0, max_size=4))))
    tiers = [Tier(D(bound), draw(prices), draw(prices)) for bound in bounds]
    return [*tiers, Tier(None, draw(prices), draw(prices))]


def reference_graduated(quantity: int, tiers: list[Tier]) -> D:
    """Brute force, written apart from the code: price unit by unit, add flats entered."""
    total = tiers[0].flat_amount
    entered = {0}
    for unit in range(1, quantity + 1):
        position = next(i for i, t in enumerate(tiers) if t.up_to is None or unit <= t.up_to)
        total += tiers[position].unit_amount
        if position not in entered:
            entered.add(position)
            total += tiers[position].flat_amount
    return total


@given(tiers=tier_lists(), quantity=st.integers(0, 300))
def test_graduated_matches_unit_by_unit_reference(tiers: list[Tier], quantity: int) -> None:
    """Graduated equals pricing every unit in its own tier plus flats of tiers entered."""
    assert graduated(D(quantity), tiers) == reference_graduated(quantity, tiers)


@given(tiers=tier_lists(), a=st.decimals(0, 300, places=2), b=st.decimals(0, 300, places=2))
def test_graduated_is_monotone(tiers: list[Tier], a: D, b: D) -> None:
    """More usage never costs less (prices are non-negative)."""
    low, high = min(a, b), max(a, b)
    assert graduated(low, tiers) <= graduated(high, tiers)


@given(tiers=tier_lists(), data=st.data(), quantity=st.decimals(0, 400, places=2))
def test_graduated_is_additive_across_tier_boundaries(
    tiers: list[Tier], data: st.DataObject, quantity: D
) -> None:
    """Splitting a tier in two at any interior point (same price, no extra flat) changes
    no amount: a graduated price is the sum of its pieces wherever the boundaries lie."""
    position = data.draw(st.integers(0, len(tiers) - 1))
    lower = D(0) if position == 0 else tiers[position - 1].up_to
    assert lower is not None
    tier = tiers[position]
    cut = lower + data.draw(st.decimals(min_value=D("0.01"), max_value=D(100), places=2))
    if tier.up_to is not None and cut >= tier.up_to:
        return
    split = [
        *tiers[:position],
        Tier(cut, tier.unit_amount, tier.flat_amount),
        Tier(tier.up_to, tier.unit_amount, D(0)),
        *tiers[position + 1 :],
    ]
    assert graduated(quantity, split) == graduated(quantity, tiers)


@given(tiers=tier_lists(), quantity=st.decimals(0, 300, places=3))
def test_volume_is_its_tier_price_times_quantity_plus_flat(tiers: list[Tier], quantity: D) -> None:
    """Volume = the tier's unit price x quantity + that tier's flat amount, exactly."""
    tier = next(t for t in tiers if t.up_to is None or quantity <= t.up_to)
    assert volume(quantity, tiers) == quantity * tier.unit_amount + tier.flat_amount


@given(tiers=tier_lists(), quantity=st.decimals(0, 10**9, places=6))
def test_no_amount_is_ever_a_float(tiers: list[Tier], quantity: D) -> None:
    """Every model returns a Decimal, never a float."""
    for amount in (
        graduated(quantity, tiers),
        volume(quantity, tiers),
        package(quantity, D(7), D("1.5")),
        per_unit(quantity, D("0.000001")),
    ):
        assert type(amount) is D


def _reference_in_a_local_context(operation: str, left: D, right: D) -> D | str:
    """What ``per_unit`` and ``after_allowance`` computed before they called
    ``MONEY_CONTEXT``'s methods: the operator in a local context of it (or the error)."""
    try:
        with localcontext(MONEY_CONTEXT):
            if operation == "multiply":
                return left * right
            return max(left - right, D(0))
    except ArithmeticError as error:
        return type(error).__name__


exact_decimals = st.decimals(
    allow_nan=False, allow_infinity=False, min_value=0, max_value=D("1E+40")
) | st.integers(0, 10**40).map(lambda n: D(n).scaleb(-45))


@given(quantity=exact_decimals, other=exact_decimals)
def test_per_unit_and_after_allowance_equal_the_local_context_arithmetic(
    quantity: D, other: D
) -> None:
    """Same value, same digits and exponent, same error (``Inexact`` past 60 digits)."""
    for operation, function in (("multiply", per_unit), ("subtract", after_allowance)):
        expected = _reference_in_a_local_context(operation, quantity, other)
        try:
            found: D | str = function(quantity, other)
        except ArithmeticError as error:
            found = type(error).__name__
        if isinstance(expected, D):
            assert isinstance(found, D) and found.as_tuple() == expected.as_tuple()
        else:
            assert found == expected

"""Unit economics (core.economics): slices split exactly, sums by any dimension, margin %
and the negative-margin flag; the margin_floor control decides exactly at its floor."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError, read_yaml
from meterline.core.control_policies import ControlPolicy, Observation, read
from meterline.core.economics import (
    DIMENSIONS,
    OPEN_PERIOD_INVOICE,
    UsageSlice,
    allocate_recognized,
    model_of,
    spread,
    summarize,
)
from meterline.core.model import Configuration
from meterline.core.money import allocate, minor_units


def _slice(customer: str, model: str, revenue: str, cost: str, day: int = 1) -> UsageSlice:
    """A slice whose list-price charges were all recognized as revenue."""
    return UsageSlice(
        customer, "2026-10-01", date(2026, 10, day), "input_tokens", model, "chat", "team@1",
        "USD", 10, D(0), D(revenue), D(cost), revenue=D(revenue),
    )  # fmt: skip


def _charged(
    customer: str, charges: str, cost: str = "0", period: str = "2026-10-01"
) -> UsageSlice:
    """A slice charged ``charges`` at list price, nothing recognized yet."""
    return UsageSlice(
        customer, period, date.fromisoformat(period), "input_tokens", "gpt-4o", "chat",
        "team@1", "USD", 10, D(0), D(charges), D(cost),
    )  # fmt: skip


def test_an_open_period_is_not_flagged_for_revenue_it_recognizes_only_at_its_close() -> None:
    """A drafted period's usage is recognized when it is invoiced: with nothing recognized
    yet, its margin is below zero while its charges at list price cover its cost; it is
    marked open and flagged only when the charges do not cover the cost either."""
    covered = _charged("acme", "10.00", "4.00", "2026-11-01")
    uncovered = _charged("initech", "1.00", "3.00", "2026-11-01")
    closed = _slice("globex", "gpt-4o", "1.00", "3.00")
    rows = {
        m.key: m
        for m in summarize(
            [replace(covered, invoice=OPEN_PERIOD_INVOICE),
             replace(uncovered, invoice=OPEN_PERIOD_INVOICE),
             replace(closed, invoice="INV-000001")],
            ["customer"],
        )
    }  # fmt: skip
    acme, initech, globex = rows[("acme",)], rows[("initech",)], rows[("globex",)]
    assert acme.open and acme.margin == D("-4.00") and not acme.negative
    assert acme.margin_at_list_price == D("6.00")
    assert acme.margin_percent_at_list_price == D("60.0")
    assert initech.open and initech.negative and initech.margin_at_list_price == D("-2.00")
    assert not globex.open and globex.negative
    (both,) = summarize(
        [replace(covered, invoice=OPEN_PERIOD_INVOICE), replace(closed, invoice="INV-000001")],
        [],
    )
    assert both.open  # a group holding an open period reads as open


def test_spread_splits_revenue_and_cost_by_events_without_losing_a_cent() -> None:
    days = [(date(2026, 10, 1), 1), (date(2026, 10, 2), 1), (date(2026, 10, 3), 1)]
    parts = spread(days, D("10.00"), D("-0.01"), "USD")
    assert [p[2] for p in parts] == [D("3.34"), D("3.33"), D("3.33")]
    assert sum(p[3] for p in parts) == D("-0.01")
    assert spread([], D("1.00"), D(0), "USD") == []


@given(
    st.lists(st.integers(0, 10**9), min_size=1, max_size=8),
    st.sampled_from(["0", "0.00", "-0", "0.000", "0E+3", "-0.00", "0E-7", "1.25", "-3"]),
    st.sampled_from(["USD", "JPY", "BHD"]),
)
def test_spread_of_a_zero_is_the_allocation_of_it(
    counts: list[int], amount: str, currency: str
) -> None:
    """A zero charge or cost spreads to exactly the shares ``money.allocate`` gives it over
    the days' event counts (the same Decimals, exponent and all), without the division."""
    days = [(date(2026, 10, 1 + index), count) for index, count in enumerate(counts)]
    weights = [D(count) for count in counts] if any(counts) else [D(1)] * len(counts)
    expected = (
        [
            (-1 if D(amount) < 0 else 1) * part
            for part in allocate(abs(D(amount)), weights, currency)
        ]
        if D(amount) == D(amount).quantize(D(1).scaleb(-minor_units(currency)))
        else None
    )
    if expected is None:
        return  # not a whole number of minor units: refused either way
    found = spread(days, D(amount), D(amount), currency)
    assert [str(revenue) for _, _, revenue, _ in found] == [str(part) for part in expected]
    assert [str(cost) for _, _, _, cost in found] == [str(part) for part in expected]


def test_summarize_adds_up_by_dimension_and_flags_negative_margins() -> None:
    slices = [
        _slice("acme", "gpt-4o", "10.00", "4.00"),
        _slice("acme", "gpt-4o-mini", "2.00", "0.50", day=2),
        _slice("initech", "gpt-4o", "1.00", "3.00"),
    ]
    by_customer = {m.key: m for m in summarize(slices, ["customer"])}
    acme, initech = by_customer[("acme",)], by_customer[("initech",)]
    assert (acme.revenue, acme.cost, acme.margin) == (D("12.00"), D("4.50"), D("7.50"))
    assert acme.margin_percent == D("62.5") and not acme.negative
    assert initech.negative and initech.margin_percent == D("-200.0")
    by_model = summarize(slices, ["model", "day"])
    assert [m.key for m in by_model] == [
        ("gpt-4o", "2026-10-01"),
        ("gpt-4o-mini", "2026-10-02"),
    ]
    (total,) = summarize(slices, [])
    assert total.revenue == D("13.00") and total.events == 30
    assert summarize([_slice("a", "m", "0", "1.00")], ["customer"])[0].margin_percent is None
    with pytest.raises(ValueError, match="colour"):
        summarize(slices, ["colour"])


@given(
    st.lists(st.sampled_from(DIMENSIONS), unique=True, max_size=4),
    st.lists(
        st.tuples(st.sampled_from(["acme", "initech"]), st.sampled_from(["m", "n", ""])),
        min_size=1,
        max_size=6,
    ),
)
def test_summarize_keys_every_grouping_by_the_dimensions_text(
    by: list[str], rows: list[tuple[str, str]]
) -> None:
    """Each margin's key is its slices' ``dimension`` values (read straight off the slice
    unless ``day``, the one that is not text, is asked for)."""
    slices = [
        _slice(customer, model, "1.00", "0.25", day=1 + index % 3)
        for index, (customer, model) in enumerate(rows)
    ]
    expected = {tuple(item.dimension(name) for name in by) for item in slices}
    margins = summarize(slices, by)
    assert {margin.key for margin in margins} == expected
    assert all(type(value) is str for margin in margins for value in margin.key)
    assert sum(margin.events for margin in margins) == 10 * len(slices)


def test_margin_is_on_recognized_revenue_not_list_price_charges() -> None:
    """The accountant's review: 100.00 of usage at list price, 60.00 of it paid by free
    credit, recognizes 40.00; margin is 40.00 - 10.00 of cost, not 100.00 - 10.00. The
    list-price figure stays beside it, named as what it is."""
    slices = allocate_recognized(
        [_charged("acme", "100.00", "10.00")], {("acme", "2026-10-01", "USD"): D("40.00")}
    )
    (row,) = summarize(slices, ["customer"])
    assert (row.list_price_charges, row.revenue, row.cost, row.margin) == (
        D("100.00"),
        D("40.00"),
        D("10.00"),
        D("30.00"),
    )
    assert row.margin_percent == D("75.0")


def test_recognized_revenue_is_allocated_by_positive_list_price_charges() -> None:
    """A period's recognized revenue splits over its slices by their positive charges (a
    discount slice gets none), exactly; a period with nothing charged (breakage after the
    last use) gets a ``(recognized)`` slice of its own."""
    slices = [
        _charged("acme", "30.00"),
        _charged("acme", "10.00"),
        _charged("acme", "-5.00"),
        _charged("acme", "12.00", period="2026-09-01"),
    ]
    recognized = {
        ("acme", "2026-10-01", "USD"): D("35.01"),
        ("acme", "2026-09-01", "USD"): D("12.00"),
        ("initech", "2026-10-01", "USD"): D("2.27"),
    }
    allocated = allocate_recognized(slices, recognized)
    assert [item.revenue for item in allocated[:4]] == [D("26.26"), D("8.75"), D(0), D("12.00")]
    assert [(item.customer, item.meter, item.revenue) for item in allocated[4:]] == [
        ("initech", "(recognized)", D("2.27"))
    ]
    by_period = {m.key: m.revenue for m in summarize(allocated, ["customer", "period"])}
    assert by_period == {key[:2]: amount for key, amount in recognized.items()}


@given(
    charges=st.lists(st.integers(-10_000, 100_000), min_size=1, max_size=8),
    recognized=st.integers(-100_000, 1_000_000),
)
def test_a_periods_slices_sum_to_what_the_books_recognized(
    charges: list[int], recognized: int
) -> None:
    amount = D(recognized).scaleb(-2)
    slices = [_charged("acme", str(D(c).scaleb(-2))) for c in charges]
    allocated = allocate_recognized(slices, {("acme", "2026-10-01", "USD"): amount})
    assert sum((item.revenue for item in allocated), D(0)) == amount
    assert sum((i.list_price_charges for i in allocated), D(0)) == sum(
        (i.list_price_charges for i in slices), D(0)
    )


def test_model_of_joins_group_values() -> None:
    assert model_of({"model": "gpt-4o"}) == "gpt-4o"
    assert model_of({"region": "eu", "model": "x"}) == "eu/x"
    assert model_of({}) == ""


def _floor(percent: str, minimum: str = "0") -> ControlPolicy:
    return ControlPolicy(
        "thin", "margin_floor", ("alert",), margin_percent=D(percent), minimum=D(minimum)
    )


def test_margin_floor_fires_strictly_below_the_floor_once_spend_is_judged() -> None:
    policy = _floor("20", minimum="10")
    at_floor = read(policy, Observation(spend=D("100"), cost=D("80")))[0]
    below = read(policy, Observation(spend=D("100"), cost=D("80.01")))[0]
    too_small = read(policy, Observation(spend=D("9.99"), cost=D("9")))[0]
    assert not at_floor.crossed and below.crossed and not too_small.crossed
    assert below.observed["margin_percent"] == "20.0"
    assert below.observed["floor_percent"] == "20"
    assert read(_floor("0"), Observation(spend=D(0), cost=D("0.01")))[0].crossed
    assert not read(_floor("0"), Observation())[0].crossed
    # an extend override allows that much more cost
    assert not read(policy, Observation(spend=D("100"), cost=D("85")), D("5"))[0].crossed


PRICING = """
meters:
  - {key: calls, event_type: call, aggregation: count, product: assistant}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices: [{meter: calls, model: per_unit, unit_amount: "0.01"}]
contracts:
  - customer: acme
    plan: p
    start: 2026-01-01
    controls:
      - {key: thin, policy: margin_floor, margin_percent: 30, minimum: 5, actions: [alert]}
    credits:
      breakage: proportional
      breakage_rate: "0.1"
      grants:
        - {key: pack, credit_type: USD, amount: 100, paid: 90}
        - {key: gift, credit_type: USD, amount: 10, breakage: never}
"""


def _parse(text: str) -> Configuration:
    data, positions = read_yaml(text)
    return parse_configuration(data, positions)


def test_products_margin_floors_and_breakage_come_from_the_pricing_file() -> None:
    configuration = _parse(PRICING)
    (meter,) = configuration.meters
    assert meter.product == "assistant"
    (policy,) = configuration.contracts[0].controls
    assert (policy.kind, policy.margin_percent, policy.minimum) == ("margin_floor", 30, 5)
    credits = configuration.contracts[0].credits
    assert credits.breakage_of("pack") == ("proportional", D("0.1"))
    assert credits.breakage_of("pack@2026-10-01") == ("proportional", D("0.1"))
    assert credits.breakage_of("gift") == ("never", D("0.1"))
    assert credits.breakage_of("G-000001") == ("proportional", D("0.1"))


@pytest.mark.parametrize(
    ("credits", "path", "reason"),
    [
        ("breakage: proportional", "contracts[0].credits.breakage_rate", "expected rate"),
        ('breakage: expiry\n      breakage_rate: "0.1"', "breakage_rate", "only proportional"),
        ('breakage: proportional\n      breakage_rate: "1"', "breakage_rate", "below 1"),
        ("breakage: sometimes", "contracts[0].credits.breakage", "sometimes"),
    ],
)
def test_breakage_mistakes_name_their_path(credits: str, path: str, reason: str) -> None:
    text = PRICING.split("    credits:")[0] + "    credits:\n      " + credits + "\n"
    with pytest.raises(ConfigurationError) as caught:
        _parse(text)
    message = str(caught.value)
    assert path in message and reason in message, message


def test_a_margin_floor_needs_its_percent() -> None:
    text = PRICING.replace("margin_percent: 30, ", "")
    with pytest.raises(ConfigurationError, match="margin_percent"):
        _parse(text)

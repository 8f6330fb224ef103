"""Unbillable usage in the pure core: values a meter cannot measure, negatives, the exact
range, sums that stay exact, events outside the contract, and lines that never stop."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest

from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError, read_yaml
from meterline.core.events import decode_exact, timestamp_to_us
from meterline.core.meters import (
    QUANTITY_LIMIT,
    Accumulator,
    Meter,
    Unmeasurable,
    measure,
    measured,
    meter_errors,
)
from meterline.core.model import Configuration, segments
from meterline.core.periods import BillingPeriod
from meterline.core.rating import UNBILLABLE_REASONS, Rater, billable_meters, unrated_problems


def us(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


OCTOBER = BillingPeriod(us(2026, 10, 1), us(2026, 11, 1))

PRICING = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
  - {key: refunds, event_type: refund, aggregation: sum, property: amount, negative: allow}
  - {key: spend, event_type: charge, aggregation: sum, property: amount}
  - {key: unpriced, event_type: other, aggregation: count}
plans:
  - key: pro
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: tokens, model: per_unit, unit_amount: "0.001"}
          - {meter: refunds, model: per_unit, unit_amount: 1}
          - {meter: spend, model: percentage, rate: "0.1", property: amount}
contracts:
  - {customer: late, plan: pro, start: 2026-10-15, end: 2026-10-25}
  - {customer: whole, plan: pro, start: 2026-10-01}
"""


def configuration(text: str = PRICING) -> Configuration:
    data, positions = read_yaml(text)
    return parse_configuration(data, positions)


def rater_for(customer: str, config: Configuration | None = None) -> Rater:
    config = config or configuration()
    contract = config.contract(customer)
    assert contract is not None
    return Rater(config, segments(config, contract, OCTOBER.start_us, OCTOBER.end_us))


def feed(rater: Rater, events: list[tuple[int, int, str, dict[str, Any]]]) -> None:
    for sequence, timestamp_us, event_type, properties in events:
        digest = hashlib.sha256(sequence.to_bytes(8, "big")).digest()
        rater.add(sequence, timestamp_us, event_type, properties, digest)


def problems(rater: Rater) -> list[tuple[int, str, str]]:
    return [(p.sequence, p.meter, p.code) for p in rater.problems]


def test_measured_names_each_reason() -> None:
    """Each value a meter cannot aggregate is refused with its own reason code."""
    assert measured("12.5", "v") == D("12.5")
    assert measured(D("1E+23"), "v") == D("1E+23")
    cases = {
        "lots": "not_a_number",
        True: "not_a_number",
        None: "not_a_number",
        "NaN": "non_finite",
        "-Infinity": "non_finite",
        D("1E+400"): "out_of_range",
        "1e24": "out_of_range",
        10**24: "out_of_range",
        D("0.0000000000000000001"): "out_of_range",
        -3: "negative",
        "-0.5": "negative",
    }
    for value, code in cases.items():
        refusal = measured(value, "v")
        assert isinstance(refusal, Unmeasurable) and refusal.code == code, value
        assert refusal.code in UNBILLABLE_REASONS
    assert measured(-3, "v", allow_negative=True) == D(-3)
    assert measured(D("1.500000000000000000000"), "v") == D("1.5")  # zeros are not digits


def test_a_sum_meter_reports_every_unmeasurable_event_and_counts_the_rest() -> None:
    """Strings, 1e400, NaN and negatives are problems with codes; the sum is of the rest."""
    events = [
        (1, 1, "t", {"v": 5}),
        (2, 2, "t", {"v": "abc"}),
        (3, 3, "t", {"v": decode_exact(b'{"v":1e400}')["v"]}),
        (4, 4, "t", {"v": "NaN"}),
        (5, 5, "t", {"v": -7}),
        (6, 6, "t", {"v": "2.5"}),
    ]
    measurement = measure(Meter("m", "t", "sum", "v"), events)
    assert measurement.quantities() == {(): D("7.5")}
    assert [(p.sequence, p.meter, p.code) for p in measurement.problems] == [
        (2, "m", "not_a_number"),
        (3, "m", "out_of_range"),
        (4, "m", "non_finite"),
        (5, "m", "negative"),
    ]
    allowing = measure(Meter("m", "t", "sum", "v", negative="allow"), events)
    assert allowing.quantities() == {(): D("0.5")}


def test_the_negative_rule_is_checked_in_the_configuration() -> None:
    """``negative`` defaults to reject, accepts allow, and refuses anything else."""
    config = configuration()
    by_key = {meter.key: meter for meter in config.meters}
    assert by_key["tokens"].negative == "reject" and by_key["refunds"].negative == "allow"
    assert meter_errors(Meter("m", "t", "sum", "v", negative="maybe"), "m") == [  # type: ignore[arg-type]
        "m.negative: 'maybe' is not one of reject, allow"
    ]
    with pytest.raises(ConfigurationError, match="negative"):
        configuration(PRICING.replace("negative: allow", "negative: sometimes"))


def test_sums_stay_exact_past_the_default_decimal_precision() -> None:
    """Large integers and fine fractions sum exactly (the default 28 digits would round)."""
    accumulator = Accumulator("sum")
    accumulator.add(1, 1, QUANTITY_LIMIT - 1, QUANTITY_LIMIT - 1)
    accumulator.add(2, 2, D("0.000000000000000001"), "x")
    accumulator.add(3, 3, QUANTITY_LIMIT - 1, QUANTITY_LIMIT - 1)
    assert str(accumulator.quantity()) == "1999999999999999999999998.000000000000000001"
    doubled = accumulator.merged(accumulator).quantity()
    assert str(doubled) == "3999999999999999999999996.000000000000000002"


def test_an_addition_that_would_round_raises_and_changes_nothing() -> None:
    """The accumulator traps inexact sums, leaving its count and total as they were."""
    accumulator = Accumulator("sum")
    accumulator.add(1, 1, D("1E+59"), "x")
    with pytest.raises(ArithmeticError):
        accumulator.add(2, 2, D("0.1"), "y")
    assert (accumulator.events, accumulator.quantity()) == (1, D("1E+59"))


def test_the_rater_keeps_problems_per_event_and_meter_and_never_stops() -> None:
    """A poisoned event is unbillable with its reason; the others are priced."""
    rater = rater_for("whole")
    feed(
        rater,
        [
            (1, us(2026, 10, 2), "llm", {"tokens": 1000}),
            (2, us(2026, 10, 3), "llm", {"tokens": decode_exact(b'{"t":1e400}')["t"]}),
            (3, us(2026, 10, 4), "llm", {"tokens": "many"}),
            (4, us(2026, 10, 5), "llm", {"tokens": -50}),
            (5, us(2026, 10, 6), "refund", {"amount": -20}),
            (6, us(2026, 10, 7), "charge", {"amount": "100"}),
            (7, us(2026, 10, 8), "charge", {"amount": "lots"}),
            (8, us(2026, 10, 9), "other", {}),
        ],
    )
    assert problems(rater) == [
        (2, "tokens", "out_of_range"),
        (3, "tokens", "not_a_number"),
        (4, "tokens", "negative"),
        (7, "spend", "not_a_number"),
    ]
    lines = {line.meter: line for line in rater.lines("USD", configuration())}
    assert lines["tokens"].quantity == 1000 and lines["tokens"].amount == 1
    assert lines["tokens"].events == 1
    assert lines["refunds"].quantity == -20  # negative: allow (a line never prices below 0)
    assert lines["spend"].amount == 10 and lines["spend"].events == 1


def test_usage_outside_the_contract_is_unbillable_by_side() -> None:
    """Usage before the contract starts or after it ends is reported; other types not."""
    rater = rater_for("late")
    feed(
        rater,
        [
            (1, us(2026, 10, 5), "llm", {"tokens": 10}),
            (2, us(2026, 10, 16), "llm", {"tokens": 10}),
            (3, us(2026, 10, 28), "llm", {"tokens": 10}),
            (4, us(2026, 10, 5), "other", {}),
            (5, us(2026, 10, 5), "unknown.type", {}),
        ],
    )
    assert problems(rater) == [(1, "tokens", "before_contract"), (3, "tokens", "after_contract")]
    (line,) = rater.lines("USD", configuration())
    assert line.events == 1


def test_an_event_no_rating_takes_is_unbillable_when_it_is_usage() -> None:
    """No contract, before or after one: unbillable; inside the span or not usage: not."""
    config = configuration()
    meters = billable_meters(config)
    assert set(meters) == {"llm", "refund", "charge"}  # ``other`` is priced nowhere
    late = config.contract("late")
    assert late is not None

    def codes(contract: Any, at: int, event_type: str = "llm") -> list[str]:
        found = unrated_problems(meters, contract, 9, at, event_type, {"tokens": 1})
        return [problem.code for problem in found]

    assert codes(None, us(2026, 10, 20)) == ["no_contract"]
    assert codes(late, us(2026, 10, 1)) == ["before_contract"]
    assert codes(late, us(2026, 11, 1)) == ["after_contract"]
    assert codes(late, us(2026, 10, 20)) == []
    assert codes(None, us(2026, 10, 20), "other") == []
    undecodable = unrated_problems(meters, None, 9, 0, "llm", None)
    assert [(p.code, p.meter) for p in undecodable] == [("undecodable", "")]


def test_refused_and_overflowing_events_are_problems_not_exceptions() -> None:
    """A body the shell could not decode, and a fee past exact arithmetic, are unbillable."""
    config = configuration(
        PRICING.replace('rate: "0.1"', 'rate: "0.1234567890123456789012345678901"')
    )
    rater = rater_for("whole", config)
    rater.refuse(1, "llm", "undecodable", "does not decode")
    rater.refuse(2, "not.usage", "undecodable", "does not decode")
    feed(
        rater,
        [
            (3, us(2026, 10, 2), "charge", {"amount": "10"}),
            (
                4,
                us(2026, 10, 2),
                "charge",
                {"amount": "123456789012345678901234.123456789012345678"},
            ),
            (5, us(2026, 10, 2), "charge", {"amount": "5"}),
        ],
    )
    assert problems(rater) == [(1, "", "undecodable"), (4, "spend", "overflow")]
    (line,) = rater.lines("USD", config)
    assert line.events == 2
    assert line.amount == D("1.8518518351851851835185185183515")  # 15 x the rate, exactly

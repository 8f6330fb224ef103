"""The pricing file: a valid one parses; each kind of mistake is named by path and line."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from importlib.resources import files

import pytest

from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError, read_yaml
from meterline.core.events import timestamp_to_us

BASE = """\
meters:
  - key: tokens
    event_type: llm.completion
    aggregation: sum
    property: tokens
    group_by: [model]
plans:
  - key: team
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        fees:
          - {key: platform, amount: "500.00"}
        prices:
          - meter: tokens
            model: graduated
            tiers:
              - {up_to: 1000, unit_amount: 0.002}
              - {unit_amount: "0.001"}
contracts:
  - {customer: acme, plan: team, start: 2026-10-01, timezone: Europe/Berlin}
"""


def load(text: str):
    data, positions = read_yaml(text, "pricing.yaml")
    return parse_configuration(data, positions, "pricing.yaml")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        load(text)
    return caught.value.errors


def test_the_base_file_parses_exactly() -> None:
    configuration = load(BASE)
    (plan,) = configuration.plans
    assert plan.label == "team@1"
    price = plan.prices[0]
    assert price.tiers[0].unit_amount == D("0.002")
    assert type(price.tiers[0].unit_amount) is D  # a YAML float is read as an exact Decimal
    assert price.tiers[0].up_to == D(1000)
    (contract,) = configuration.contracts
    assert contract.timezone == "Europe/Berlin"
    # local midnight in Berlin (UTC+2 in October) is 22:00 UTC the day before
    assert contract.start_us == timestamp_to_us(datetime(2026, 9, 30, 22, tzinfo=UTC))


def test_the_demo_pricing_file_parses() -> None:
    text = files("meterline.demo").joinpath("pricing.yaml").read_text()
    configuration = load(text)
    assert len(configuration.contracts) == 10
    assert {p.label for p in configuration.plans} == {"free@1", "team@1", "enterprise@1"}


def test_overlapping_tiers_are_named_with_their_path_and_line() -> None:
    text = BASE.replace('{unit_amount: "0.001"}', '{up_to: 500, unit_amount: "0.001"}')
    problems = errors_of(text)
    assert any(
        p.startswith("pricing.yaml:20: plans[0].versions[0].prices[0].tiers[1].up_to:")
        and "overlap" in p
        for p in problems
    ), problems


def test_an_unknown_meter_is_named() -> None:
    problems = errors_of(BASE.replace("- meter: tokens", "- meter: tokenz"))
    assert any(
        "plans[0].versions[0].prices[0].meter: unknown meter 'tokenz' (meters: tokens)" in p
        for p in problems
    ), problems


def test_a_missing_currency_is_named() -> None:
    problems = errors_of(BASE.replace("        currency: USD\n", ""))
    assert any("plans[0].versions[0].currency: is required" in p for p in problems), problems


def test_an_unknown_currency_and_key_and_timezone_are_all_reported_at_once() -> None:
    text = (
        BASE.replace("currency: USD", "currency: USX")
        .replace("aggregation: sum", "aggregation: sum\n    colour: red")
        .replace("Europe/Berlin", "Mars/Olympus")
    )
    problems = errors_of(text)
    assert any("currency: 'USX' is not a known currency" in p for p in problems)
    assert any("meters[0].colour: unknown key" in p for p in problems)
    assert any(
        "contracts[0].timezone: 'Mars/Olympus' is not a known time zone" in p for p in problems
    )


def test_invalid_yaml_names_its_line() -> None:
    problems = errors_of(BASE + "  - {customer: broken, plan: [\n")
    assert problems[0].startswith("pricing.yaml:"), problems
    assert "invalid YAML" in problems[0]


def test_an_amendment_must_follow_the_start_and_name_a_known_plan() -> None:
    text = BASE.replace(
        "timezone: Europe/Berlin}",
        "timezone: Europe/Berlin,\n     amendments: [{effective: 2026-09-01, plan: gold}]}",
    )
    problems = errors_of(text)
    assert any("contracts[0].amendments[0].effective: must be after" in p for p in problems)
    assert any("contracts[0].amendments[0].plan: unknown plan 'gold'" in p for p in problems)


def test_prices_need_their_parameters() -> None:
    text = BASE.replace("model: graduated", "model: package")
    problems = errors_of(text)
    assert any("prices[0].size: is required for a package price" in p for p in problems)
    assert any("prices[0].amount: is required for a package price" in p for p in problems)


def test_a_negative_amount_and_a_boolean_amount_are_refused() -> None:
    text = BASE.replace('amount: "500.00"', "amount: true").replace("0.002", "-0.002")
    problems = errors_of(text)
    assert any("fees[0].amount: must be an exact number, not a boolean" in p for p in problems)
    assert any("tiers[0].unit_amount: must not be negative" in p for p in problems)


PERCENTAGE = BASE.replace(
    """          - meter: tokens
            model: graduated
            tiers:
              - {up_to: 1000, unit_amount: 0.002}
              - {unit_amount: "0.001"}""",
    """          - {meter: tokens, model: percentage, rate: "0.01", %s}""",
)


def test_a_per_event_minimum_above_the_per_event_maximum_is_refused() -> None:
    """No fee lies within a minimum of 2 and a maximum of 1 (Lago refuses the same
    charge: getlago/lago-api ``app/services/charges/validators/percentage_service.rb``,
    ``per_transaction_max_lower_than_per_transaction_min``); equal bounds are a fixed
    fee per event and load."""
    problems = errors_of(PERCENTAGE % 'per_event_minimum: "2", per_event_maximum: "1"')
    assert [p for p in problems if "per_event" in p] == [
        "pricing.yaml:16: plans[0].versions[0].prices[0].per_event_minimum: "
        "must not exceed per_event_maximum"
    ], problems
    (price,) = load(PERCENTAGE % 'per_event_minimum: "1", per_event_maximum: "1"').plans[0].prices
    assert (price.per_event_minimum, price.per_event_maximum) == (D(1), D(1))


def test_a_meter_declared_twice_is_refused() -> None:
    meter = BASE.split("plans:")[0].replace("meters:\n", "")
    problems = errors_of(BASE.replace("plans:", meter + "plans:", 1))
    assert any("meter 'tokens' is declared twice" in p for p in problems), problems


def test_a_pricing_file_nested_past_the_limit_is_refused_before_it_is_built() -> None:
    """3,000 nested sequences (flow style) name the limit instead of exhausting the stack."""
    from meterline.config.source import YAML_NESTING_LEVELS_MAX, read_yaml

    deep = "meters: " + "[" * 3000 + "]" * 3000
    with pytest.raises(ConfigurationError) as raised:
        read_yaml(deep, "deep.yaml")
    assert f"deep.yaml: YAML nests mappings and sequences more than {YAML_NESTING_LEVELS_MAX}" in (
        str(raised.value)
    )
    data, _ = read_yaml("meters: " + "[" * 10 + "]" * 10, "shallow.yaml")
    assert data == {"meters": [[[[[[[[[[]]]]]]]]]]}

"""Credit terms in the pricing file, and the grants a contract creates over time."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError, read_yaml
from meterline.core.credits import RolloverRule
from meterline.core.events import timestamp_to_us
from meterline.core.grants import contract_grants
from meterline.core.model import Configuration
from meterline.core.periods import BillingCycle

HEAD = """\
credit_types:
  - key: credits
    currency: USD
    unit_value: "0.01"
    conversions:
      - {effective: 2027-01-01, unit_value: "0.012"}
meters:
  - {key: calls, event_type: call, aggregation: count}
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
plans:
  - key: pro
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: calls, model: per_unit, unit_amount: 2, credit_type: credits}
contracts:
  - customer: acme
    plan: pro
    start: 2026-10-08
"""
CREDITS = """\
    credits:
      overage: carry
      overage_prices: {credits: "0.012"}
      threshold: "250.00"
      grants:
        - key: pool
          credit_type: credits
          amount: 15000
          paid: "135.00"
          priority: 10
          recurrence: period
          scope: [calls]
          rollover: {percent: 50, maximum: 1000, expires_after_periods: 2}
        - {key: promo, credit_type: credits, amount: 2000, priority: 1, expires: 2026-10-20}
      commits:
        - {kind: prepaid, key: annual, amount: "20000.00", paid: "18000.00"}
        - {kind: minimum, amount: "900.00"}
"""


def load(text: str) -> Configuration:
    data, positions = read_yaml(text, "pricing.yaml")
    return parse_configuration(data, positions, "pricing.yaml")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        load(text)
    return caught.value.errors


def us(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))


def test_credit_terms_parse_exactly() -> None:
    configuration = load(HEAD + CREDITS)
    (contract,) = configuration.contracts
    terms = contract.credits
    assert terms.overage == "carry"
    assert terms.overage_prices == (("credits", D("0.012")),)
    assert terms.threshold == D("250.00") and terms.minimum_commit == D("900.00")
    pool, promo, annual = terms.grants
    assert (pool.key, pool.unit, pool.amount, pool.paid, pool.priority) == (
        "pool",
        "credits",
        D(15000),
        D("135.00"),
        10,
    )
    assert pool.recurrence == "period" and pool.scope == ("calls",)
    assert pool.rollover == RolloverRule(D(50), D(0), D(1000)) and pool.rollover_periods == 2
    assert promo.expires_us == us(2026, 10, 20) and promo.paid == 0
    assert annual.commit and annual.unit == "" and annual.paid == D("18000.00")
    credit = configuration.credit_type("credits")
    assert credit is not None
    assert credit.value_at(us(2026, 12, 31)) == D("0.01")
    assert credit.value_at(us(2027, 1, 1)) == D("0.012")


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "    credits: {grants: [{key: a, credit_type: gems, amount: 5}]}\n",
            "contracts[0].credits.grants[0].credit_type: unknown credit type 'gems'",
        ),
        (
            "    credits: {grants: [{key: a, credit_type: credits, amount: -5}]}\n",
            "contracts[0].credits.grants[0].amount: must not be negative",
        ),
        (
            "    credits: {grants: [{key: a, credit_type: credits, amount: 5, scope: [nope]}]}\n",
            "contracts[0].credits.grants[0].scope[0]: unknown meter 'nope'",
        ),
        (
            "    credits: {grants: [{key: a, credit_type: credits, amount: 5,"
            " rollover: {percent: 50}}]}\n",
            "contracts[0].credits.grants[0].rollover: needs recurrence: period",
        ),
        (
            "    credits: {grants: [{key: a, credit_type: credits, amount: 5,"
            " recurrence: period, rollover: {percent: 150}}]}\n",
            "contracts[0].credits.grants[0].rollover.percent: must be at most 100",
        ),
        (
            "    credits: {grants: [{key: a, credit_type: credits, amount: 5,"
            " recurrence: period, rollover: {minimum: 10, maximum: 5}}]}\n",
            "contracts[0].credits.grants[0].rollover.maximum: must not be below minimum",
        ),
        (
            "    credits: {overage: forgive}\n",
            "contracts[0].credits.overage: 'forgive' is not one of bill, carry, refuse",
        ),
        (
            "    credits: {commits: [{kind: postpaid, amount: 5}]}\n",
            "contracts[0].credits.commits[0].kind: 'postpaid' is not one of prepaid, minimum",
        ),
        (
            "    credits: {threshold: 0}\n",
            "contracts[0].credits.threshold: must be above zero",
        ),
        (
            "    credits: {grants: [{key: a, credit_type: credits, amount: 5.5}]}\n",
            None,  # a YAML number with a fraction is an exact Decimal: valid
        ),
        (
            "    credits: {grants: [{key: a, credit_type: credits, amount: 5, colour: red}]}\n",
            "contracts[0].credits.grants[0].colour: unknown key",
        ),
    ],
)
def test_credit_mistakes_are_named_by_path_and_line(snippet: str, expected: str | None) -> None:
    if expected is None:
        load(HEAD + snippet)
        return
    problems = errors_of(HEAD + snippet)
    assert any(expected in problem for problem in problems), problems
    assert all(problem.startswith("pricing.yaml:") for problem in problems), problems


def test_a_recurring_grant_is_one_grant_per_period_with_its_rollover_expiry() -> None:
    configuration = load(HEAD + CREDITS)
    (contract,) = configuration.contracts
    cycle = BillingCycle("monthly", "calendar", "UTC")
    grants = {
        g.grant_id: g for g in contract_grants(configuration, contract, cycle, us(2026, 12, 5))
    }
    assert sorted(grants) == [
        "annual",
        "pool@2026-10-01",
        "pool@2026-11-01",
        "pool@2026-12-01",
        "promo",
    ]
    october = grants["pool@2026-10-01"]
    assert october.effective_us == us(2026, 10, 8)  # the contract starts mid-month
    assert october.reset_us == us(2026, 11, 1)
    assert october.rollover_expires_us == us(2027, 1, 1)  # two periods after the reset
    assert grants["pool@2026-11-01"].effective_us == us(2026, 11, 1)
    annual = grants["annual"]
    assert (annual.unit, annual.source, annual.paid_currency) == ("USD", "commit", "USD")
    assert grants["promo"].expires_us == us(2026, 10, 20) and grants["promo"].reset_us is None


def test_a_recurring_grant_cut_short_by_the_contract_end_expires_without_rollover() -> None:
    text = (HEAD + CREDITS).replace(
        "    start: 2026-10-08\n", "    start: 2026-10-08\n    end: 2026-11-15\n"
    )
    configuration = load(text)
    (contract,) = configuration.contracts
    cycle = BillingCycle("monthly", "calendar", "UTC")
    grants = {
        g.grant_id: g for g in contract_grants(configuration, contract, cycle, us(2027, 1, 1))
    }
    last = grants["pool@2026-11-01"]
    assert last.expires_us == us(2026, 11, 15) and last.reset_us is None
    assert last.rollover is None
    assert "pool@2026-12-01" not in grants

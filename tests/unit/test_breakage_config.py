"""The pricing file's ``breakage_rate_changes`` and a grant's ``unit_cost``
(``config.credits``): what is read, and each mistake named by its path."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from meterline.config.schema import parse_configuration
from meterline.config.source import ConfigurationError, read_yaml
from meterline.core.events import timestamp_to_us
from meterline.core.grants import contract_grants
from meterline.core.model import Configuration
from meterline.core.periods import BillingCycle

HEAD = """\
credit_types:
  - {key: credits, currency: USD, unit_value: "0.01"}
meters:
  - {key: calls, event_type: call, aggregation: count}
plans:
  - key: p
    versions:
      - {version: 1, effective_from: 2026-01-01, currency: USD,
         prices: [{meter: calls, model: per_unit, unit_amount: 1, credit_type: credits}]}
contracts:
  - customer: acme
    plan: p
    start: 2026-01-01
    credits:
"""
GOOD = (
    HEAD
    + """\
      breakage: proportional
      breakage_rate: "0.1"
      breakage_rate_changes:
        - {effective: 2026-06-01, rate: "0.2"}
        - {effective: 2027-01-01, rate: "0.15"}
      grants:
        - {key: pack, credit_type: credits, amount: 3333, unit_cost: "0.0095"}
        - {key: own, credit_type: credits, amount: 10, breakage_rate: "0.3",
           breakage_rate_changes: [{effective: 2026-03-01, rate: "0.4"}]}
        - {key: plain, credit_type: credits, amount: 10, breakage_rate: "0.3"}
"""
)


def _parse(text: str) -> Configuration:
    data, positions = read_yaml(text)
    return parse_configuration(data, positions)


def _midnight(year: int, month: int, day: int) -> int:
    return timestamp_to_us(datetime(year, month, day, tzinfo=UTC))


def test_rate_changes_belong_to_the_rate_beside_them() -> None:
    """A grant with its own rate has its own changes (none when it declares none); a grant
    without one follows the contract's rate and changes."""
    credits = _parse(GOOD).contracts[0].credits
    contract_changes = ((_midnight(2026, 6, 1), D("0.2")), (_midnight(2027, 1, 1), D("0.15")))
    assert credits.breakage_changes_of("pack") == contract_changes
    assert credits.breakage_changes_of("G-000001") == contract_changes
    assert credits.breakage_changes_of("own") == ((_midnight(2026, 3, 1), D("0.4")),)
    assert credits.breakage_changes_of("plain") == ()


def test_a_grant_unit_cost_is_its_cost_basis() -> None:
    """3,333 credits at 0.0095 each cost 31.6635, rounded once to 31.66 USD: the grant's
    paid amount, as a top-up's unit_cost gives it."""
    configuration = _parse(GOOD)
    contract = configuration.contracts[0]
    cycle = BillingCycle("monthly", 1, "calendar", contract.start_us, "UTC")
    grants = contract_grants(configuration, contract, cycle, _midnight(2026, 2, 1))
    paid = {grant.grant_id: (grant.paid, grant.paid_currency) for grant in grants}
    assert paid["pack"] == (D("31.66"), "USD")
    assert paid["plain"] == (D(0), "USD")


@pytest.mark.parametrize(
    ("credits", "path", "reason"),
    [
        (
            "      breakage: proportional\n"
            '      breakage_rate_changes: [{effective: 2026-06-01, rate: "0.2"}]',
            "credits.breakage_rate_changes",
            "give one beside it",
        ),
        (
            '      breakage: proportional\n      breakage_rate: "0.1"\n'
            '      breakage_rate_changes: [{effective: 2026-06-01, rate: "0.2"},'
            ' {effective: 2026-05-01, rate: "0.3"}]',
            "credits.breakage_rate_changes[1].effective",
            "after the change before it",
        ),
        (
            '      breakage: proportional\n      breakage_rate: "0.1"\n'
            '      breakage_rate_changes: [{effective: 2026-06-01, rate: "1.2"}]',
            "credits.breakage_rate_changes[0].rate",
            "below 1",
        ),
        (
            "      grants:\n        - {key: g, credit_type: credits, amount: 5, paid: 1,"
            ' unit_cost: "0.2"}',
            "credits.grants[0].unit_cost",
            "not both",
        ),
        (
            '      commits:\n        - {kind: prepaid, key: c, amount: 5, unit_cost: "0.2"}',
            "credits.commits[0].unit_cost",
            "",
        ),
    ],
)
def test_mistakes_name_their_path(credits: str, path: str, reason: str) -> None:
    """Changes without a rate, out of order, a rate of 1 or more, unit_cost beside paid,
    and unit_cost on a commit (its paid is given in money) are each refused by path."""
    with pytest.raises(ConfigurationError) as caught:
        _parse(HEAD + credits + "\n")
    message = str(caught.value)
    assert f"contracts[0].{path}" in message and reason in message, message

"""Free trials (core.trials) on built invoices: Stripe's trial example, usage caps."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal as D

from meterline.core.cuts import Cut
from meterline.core.documents import Invoice
from meterline.core.events import timestamp_to_us
from meterline.core.invoicing import InvoiceHeader, build_invoice, line_sum
from meterline.core.model import Configuration, segments
from meterline.core.periods import BillingPeriod
from meterline.core.rating import Rater
from meterline.core.trials import Trial, trial_errors
from tests.unit.test_invoicing import configuration

PLAN = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
plans:
  - key: pro
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        fees: [{key: subscription, name: Pro, amount: 30}]
        prices: [{meter: tokens, model: per_unit, unit_amount: "0.01"}]
contracts:
  - {customer: c, plan: pro, start: 2026-11-11}
"""
NOVEMBER = BillingPeriod(
    timestamp_to_us(datetime(2026, 11, 1, tzinfo=UTC)),
    timestamp_to_us(datetime(2026, 12, 1, tzinfo=UTC)),
)
DAY_US = 86_400_000_000


def with_trial(trial: Trial) -> Configuration:
    config = configuration(PLAN)
    (contract,) = config.contracts
    return replace(config, contracts=(replace(contract, trial=trial),))


def november(config: Configuration, usage: list[tuple[int, int]]) -> Invoice:
    contract = config.contract("c")
    assert contract is not None
    spans = segments(config, contract, NOVEMBER.start_us, NOVEMBER.end_us)
    rater = Rater(config, spans)
    for sequence, (at_us, tokens) in enumerate(usage, start=1):
        digest = hashlib.sha256(sequence.to_bytes(8, "big")).digest()
        rater.add(sequence, at_us, "llm", {"tokens": tokens}, digest)
    header = InvoiceHeader("c", "USD", "UTC", NOVEMBER, 1, "00", Cut((len(usage),)))
    return build_invoice(header, spans, rater.lines("USD", config), [], config)


def amounts(document: Invoice) -> list[tuple[str, str]]:
    return [(line.kind, str(line.amount)) for line in document.lines]


def test_a_trial_frees_fees_then_converts_prorated_from_the_conversion_instant() -> None:
    """Stripe: a 14-day trial from November 11th converts on the 25th; the $30 monthly
    fee is charged for the 6 remaining days of 30: $6.00. Usage in the trial is given
    back; usage after it is billed."""
    config = with_trial(Trial(14))
    start = timestamp_to_us(datetime(2026, 11, 11, tzinfo=UTC))
    document = november(config, [(start + DAY_US, 500), (start + 16 * DAY_US, 300)])
    assert amounts(document) == [
        ("usage", "5.00"),
        ("trial", "-5.00"),
        ("fee", "6.00"),
        ("usage", "3.00"),
    ]
    assert str(document.total) == "9.00" and line_sum(document) == D("9.00")
    remaining = next(line for line in document.lines if line.kind == "fee")
    assert "remaining time from 2026-11-25" in remaining.description


def test_a_usage_cap_limits_what_the_trial_gives_back() -> None:
    config = with_trial(Trial(14, applies_to="usage", usage_cap=D("2.50")))
    start = timestamp_to_us(datetime(2026, 11, 11, tzinfo=UTC))
    document = november(config, [(start + DAY_US, 500)])
    kinds = dict((kind, amount) for kind, amount in amounts(document) if kind != "fee")
    assert kinds == {"usage": "5.00", "trial": "-2.50"}
    fees = [amount for kind, amount in amounts(document) if kind == "fee"]
    assert fees == ["20.00"]  # a usage-only trial leaves the fee from the contract's start


def test_trial_errors_name_the_field() -> None:
    bad = Trial(0, applies_to="fees", usage_cap=D(-1), on_end="pause")  # type: ignore[arg-type]
    assert trial_errors(bad, "contracts[0].trial") == [
        "contracts[0].trial.days: must be a whole number from 1 to 730",
        "contracts[0].trial.on_end: must be one of convert, cancel",
        "contracts[0].trial.usage_cap: must not be negative",
        "contracts[0].trial.usage_cap: only a trial that frees usage has a usage cap",
    ]

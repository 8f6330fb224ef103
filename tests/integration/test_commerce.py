"""Coupons, tax, trials and weekly cycles through the real stores: close, audit, and the
journal agreeing with the invoices (``one_truth``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest

from meterline.billing.service import BillingError, open_billing
from meterline.config.source import ConfigurationError
from meterline.core.events import decode_exact, timestamp_to_us
from meterline.core.invoicing import line_sum
from meterline.finance.truth import one_truth
from tests.conftest import Location

NewDb = Callable[..., Location]

PRICING = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
coupons:
  - {code: LAUNCH20, name: Launch, percent_off: 20, duration: repeating, duration_periods: 2,
     max_redemptions: 2}
  - {code: TOKENS5, name: Five off tokens, amount_off: "5.00", currency: USD,
     applies_to: usage, meters: [tokens], duration: forever}
tax:
  rates:
    - {name: CA sales tax, percent: "7.25", jurisdiction: US-CA}
    - {name: VAT GB, percent: 20, inclusive: true, jurisdiction: GB}
plans:
  - key: weekly
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        billing: {cycle: weekly}
        fees: [{key: seat, name: Seat, amount: 70}]
        prices: [{meter: tokens, model: per_unit, unit_amount: "0.01"}]
  - key: monthly
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        fees: [{key: platform, name: Platform, amount: 30}]
        prices: [{meter: tokens, model: per_unit, unit_amount: "0.01"}]
contracts:
  - {customer: weekly-co, plan: weekly, start: 2026-11-02, coupons: [LAUNCH20],
     tax: {jurisdiction: US-CA}}
  - {customer: trial-co, plan: monthly, start: 2026-11-11, trial: {days: 14},
     coupons: [TOKENS5], tax: {jurisdiction: GB}}
"""


def at(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


def event(customer: str, day: int, tokens: int, number: int) -> dict[str, Any]:
    return {
        "id": f"{customer}-{number}",
        "customer": customer,
        "type": "llm",
        "timestamp": f"2026-11-{day:02d}T12:00:00Z",
        "properties": {"tokens": tokens},
    }


def lines(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(line["kind"], line["amount"]) for line in document["lines"]]


def test_weekly_coupons_tax_and_a_trial_close_audit_and_reconcile(new_db: NewDb) -> None:
    now = [at(2026, 12, 2)]
    with open_billing(new_db(), clock=lambda: now[0]) as billing:
        events = [event("weekly-co", day, 1000, day) for day in (3, 10, 17)]
        events += [event("trial-co", 12, 800, 1), event("trial-co", 27, 2000, 2)]
        assert billing.ledger.ingest(events).accepted == len(events)
        billing.apply(PRICING)
        finalized = billing.close(at(2026, 12, 2))
        by_customer: dict[str, list[dict[str, Any]]] = {}
        for invoice in finalized:
            by_customer.setdefault(invoice.customer, []).append(decode_exact(invoice.document))
        weeks = by_customer["weekly-co"]
        # Weeks from Monday November 2nd: 2, 9, 16, 23 (the 30th's week is still open)
        assert [w["period"]["label"] for w in weeks] == [
            "2026-11-02",
            "2026-11-09",
            "2026-11-16",
            "2026-11-23",
        ]
        # 70 seat + 10 tokens, 20% off for two weeks, then 7.25% on what is left
        assert lines(weeks[0]) == [
            ("fee", "70.00"),
            ("usage", "10.00"),
            ("coupon", "-16.00"),
            ("tax", "4.64"),
        ]
        assert weeks[0]["total"] == "68.64"
        assert [kind for kind, _ in lines(weeks[2])] == ["fee", "usage", "tax"]
        (trial,) = by_customer["trial-co"]
        assert lines(trial) == [
            ("usage", "8.00"),
            ("trial", "-8.00"),
            ("fee", "6.00"),
            ("usage", "20.00"),
            ("coupon", "-5.00"),
            ("tax", "0.00"),
        ]
        tax = trial["lines"][-1]
        assert tax["included"] == "3.50" and tax["inclusive"] is True  # 21.00 * 20/120
        for invoice in finalized:
            assert line_sum(invoice.record) == invoice.record.total
        report = billing.audit()
        assert report.passed, report.mismatches
        truth = one_truth(billing)
        assert truth.agrees, [c for c in truth.checks if not c.agrees]


def test_a_coupon_past_its_limit_and_unknown_rates_are_named(new_db: NewDb) -> None:
    crowded = PRICING.replace("max_redemptions: 2", "max_redemptions: 1").replace(
        "coupons: [TOKENS5]", "coupons: [TOKENS5, LAUNCH20]"
    )
    crowded = crowded.replace("jurisdiction: GB}}", "jurisdiction: FR}}")
    with open_billing(new_db()) as billing, pytest.raises(ConfigurationError) as raised:
        billing.apply(crowded)
    text = str(raised.value)
    assert "contracts[1].coupons[1]: coupon LAUNCH20 is limited to 1 redemption(s)" in text
    assert "contracts[1].tax.jurisdiction: no tax rate is declared for 'FR'" in text


def test_partial_credit_notes_reverse_lines_amounts_and_their_tax(new_db: NewDb) -> None:
    """Credit the usage line of a taxed week, then 10.00 of another: each note carries
    the tax back; more than is left, a line twice, or a void after them are refused; the
    journal still agrees with the invoices."""
    with open_billing(new_db(), clock=lambda: at(2026, 12, 2)) as billing:
        events = [event("weekly-co", day, 1000, day) for day in (3, 10, 17)]
        assert billing.ledger.ingest(events).accepted == len(events)
        billing.apply(PRICING)
        weeks = [i for i in billing.close(at(2026, 12, 2)) if i.customer == "weekly-co"]
        first = weeks[0].invoice_id  # fee 70, usage 10, coupon -16, tax 4.64
        note = decode_exact(billing.credit_note(first, "usage billed twice", lines=[2]).document)
        assert [(line["kind"], line["amount"]) for line in note["lines"]] == [
            ("usage", "-10.00"),
            ("coupon", "2.00"),  # the 20% the coupon took from the line
            ("tax", "-0.58"),  # 7.25% of the 8.00 paid for it
        ]
        with pytest.raises(BillingError, match="line 2: credited already"):
            billing.credit_note(first, "again", lines=[2])
        with pytest.raises(BillingError, match="no charge line 4"):
            billing.credit_note(first, "tax is not a charge", lines=[4])
        second = weeks[1].invoice_id
        by_amount = decode_exact(
            billing.credit_note(second, "goodwill", amount=D("10.00")).document
        )
        charged = [line for line in by_amount["lines"] if line["kind"] != "tax"]
        assert sum((D(line["amount"]) for line in charged), D(0)) == D("-10.00")
        assert by_amount["lines"][-1]["kind"] == "tax"
        with pytest.raises(BillingError, match="more than the"):
            billing.credit_note(second, "too much", amount=D("1000.00"))
        with pytest.raises(BillingError, match="partial credit notes"):
            billing.credit_note(second, "void", void=True)
        assert billing.audit().passed
        truth = one_truth(billing)
        assert truth.agrees, [c for c in truth.checks if not c.agrees]


EURO_PRICING = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
costs:
  - {meter: tokens, per_unit: "0.002", currency: USD}
reporting:
  currency: USD
  rates:
    - {currency: EUR, rate: "1.10", effective_from: 2026-01-01}
plans:
  - key: euro
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: EUR
        prices: [{meter: tokens, model: per_unit, unit_amount: "0.01"}]
contracts:
  - {customer: euro-co, plan: euro, start: 2026-11-01}
"""


def test_margin_across_currencies_reads_in_the_reporting_currency(new_db: NewDb) -> None:
    """Billed 10.00 EUR for 1,000 tokens that cost 2.00 USD from the provider: margin is
    read in USD at 1.10 (11.00 - 2.00); read in one currency it is refused, not mixed; the
    journal carries each posting's USD amount beside it."""
    from meterline.core.economics import in_reporting, summarize
    from meterline.core.exchange import ExchangeError
    from meterline.finance.books import build_books
    from meterline.finance.economics import usage_slices
    from meterline.finance.general_ledger_files import journal_csv

    with open_billing(new_db(), clock=lambda: at(2026, 12, 2)) as billing:
        assert billing.ledger.ingest([event("euro-co", 5, 1000, 1)]).accepted == 1
        billing.apply(EURO_PRICING)
        billing.close(at(2026, 12, 2))
        slices = usage_slices(billing)
        with pytest.raises(ExchangeError, match="billed in EUR and its tokens costs are in USD"):
            summarize(slices, ["customer"])
        (margin,) = summarize(in_reporting(slices, billing.load().configuration.reporting), [])
        assert margin.currency == "USD"
        assert (margin.list_price_charges, margin.cost) == (D("11.0000"), D("2.000"))
        assert margin.margin == margin.revenue - D("2.000")
        header, *rows = journal_csv(build_books(billing)).splitlines()
        assert header.endswith("reporting_currency,reporting_debit,reporting_credit")
        receivable = next(r for r in rows if "assets:accounts_receivable" in r).split(",")
        assert receivable[5] == "EUR" and receivable[-3:] == ["USD", "11.00", "0"]


PROGRESSIVE = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
plans:
  - key: payg
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices: [{meter: tokens, model: per_unit, unit_amount: "0.01"}]
contracts:
  - customer: lago-co
    plan: payg
    start: 2026-11-01
    credits: {thresholds: {levels: [10, 50], recurring: 100}}
"""


def test_progressive_billing_at_fixed_levels_then_every_x_as_lago(new_db: NewDb) -> None:
    """Lago's progressive billing: thresholds at $10 and $50, then every $100. Usage of
    $12 bills $12; at $55, $43; at $160 (past $150), $105; nothing more at $170; the
    period's invoice bills $170 and nets the $160 billed early: $10 left."""
    now = [at(2026, 11, 10)]
    with open_billing(new_db(), clock=lambda: now[0]) as billing:
        billing.apply(PROGRESSIVE)
        billed = []
        for number, (day, tokens) in enumerate([(3, 1200), (5, 4300), (7, 10500), (9, 1000)]):
            assert billing.ledger.ingest([event("lago-co", day, tokens, number)]).accepted == 1
            billed += [decode_exact(i.document) for i in billing.check_thresholds("lago-co")]
        assert [(doc["total"], doc["lines"][0]["threshold_level"]) for doc in billed] == [
            ("12.00", 1),
            ("43.00", 2),
            ("105.00", 3),
        ]
        assert billing.check_thresholds("lago-co") == []  # no new level reached
        now[0] = at(2026, 12, 2)
        (period,) = [decode_exact(i.document) for i in billing.close() if i.kind == "period"]
        assert period["total"] == "10.00"
        assert billing.audit().passed
        truth = one_truth(billing)
        assert truth.agrees, [c for c in truth.checks if not c.agrees]


def test_quantity_thresholds_count_units(new_db: NewDb) -> None:
    units = PROGRESSIVE.replace(
        "{thresholds: {levels: [10, 50], recurring: 100}}",
        "{thresholds: {levels: [1000], recurring: 5000, meter: tokens}}",
    )
    with open_billing(new_db(), clock=lambda: at(2026, 11, 10)) as billing:
        billing.apply(units)
        billing.ledger.ingest([event("lago-co", 3, 900, 1)])
        assert billing.check_thresholds("lago-co") == []
        billing.ledger.ingest([event("lago-co", 4, 200, 2)])
        (invoice,) = billing.check_thresholds("lago-co")
        assert decode_exact(invoice.document)["total"] == "11.00"  # 1,100 tokens at 0.01


def test_the_trial_balance_at_a_date_counts_only_entries_dated_through_it(
    new_db: NewDb,
) -> None:
    from datetime import date

    from meterline.finance.books import build_books
    from meterline.finance.reports import revenue_reports

    with open_billing(new_db(), clock=lambda: at(2026, 12, 2)) as billing:
        billing.ledger.ingest([event("weekly-co", day, 1000, day) for day in (3, 10, 17)])
        billing.apply(PRICING)
        billing.close(at(2026, 12, 2))
        books = build_books(billing)
        early = revenue_reports(books, balances_at=date(2026, 11, 8))
        full = revenue_reports(books)
        assert early["balances_at"] == "2026-11-08" and full["balances_at"] is None
        assert early["trial_balance_totals"] != full["trial_balance_totals"]
        assert (
            early["trial_balance_totals"]["debit"] == early["trial_balance_totals"]["credit"]
        )
        expected = books.trial_balance(date(2026, 11, 8))
        shown = {(row["account"], row["currency"]) for row in early["trial_balance"]}
        assert shown == set(expected)


LAPSING = """\
credit_types:
  - {key: credits, name: Credits, currency: USD, unit_value: "0.01"}
meters:
  - {key: calls, event_type: llm, aggregation: count}
plans:
  - key: pool
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices: [{meter: calls, model: per_unit, unit_amount: 1, credit_type: credits}]
contracts:
  - customer: pool-co
    plan: pool
    start: 2026-10-01
    credits:
      {timing}grants:
        - {key: october, credit_type: credits, amount: 100, paid: "1.00",
           expires: 2026-11-01}
"""


@pytest.mark.parametrize(
    ("timing", "booked"), [("", "2026-11-01"), ("breakage_timing: lapse\n      ", "2026-10-31")]
)
def test_a_lapsed_pool_books_its_breakage_on_expiry_or_in_the_month_it_lapses(
    new_db: NewDb, timing: str, booked: str
) -> None:
    from meterline.core.journal import REVENUE_BREAKAGE
    from meterline.finance.books import build_books

    with open_billing(new_db(), clock=lambda: at(2026, 11, 5)) as billing:
        billing.apply(LAPSING.replace("{timing}", timing))
        books = build_books(billing)
        days = {
            item.day.isoformat()
            for item in books.entries
            for posting in item.postings
            if posting.account == REVENUE_BREAKAGE
        }
        assert days == {booked}

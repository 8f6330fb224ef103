"""Vendor semantics through the billing shell (docs/billing.md, "Vendor semantics"): a
pricing file's ``semantics:`` block, applied to a real ledger, changes the draft invoice
as the table says, and the default keeps today's invoice. Each example is run with both
values of its option on the same events."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal as D
from typing import Any

import pytest

from meterline.billing.service import open_billing
from meterline.core.documents import CreditLine, Invoice, TaxLine, ThresholdLine, line_meter
from meterline.core.events import timestamp_to_us
from meterline.core.live_documents import plain
from meterline.errors import MeterlineError
from meterline.finance.books import build_books
from meterline.live.service import LiveEngine
from tests.conftest import Location

NewDb = Callable[..., Location]


def at(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


PRICING = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
  - {key: seats, event_type: seats, aggregation: latest, property: seats}
  - {key: payments, event_type: pay, aggregation: sum, property: amount}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: tokens, model: per_unit, unit_amount: 1}
          - {meter: seats, model: per_unit, unit_amount: 2}
          - {meter: payments, model: percentage, rate: "0.02", fixed_fee: "0.30",
             free_units: 150, per_event_minimum: "0.50"}
contracts:
  - customer: acme
    plan: p
    start: 2026-10-01
    credits:
      grants:
        - {key: a-paid, credit_type: USD, amount: 50, paid: 45, expires: 2026-12-01}
        - {key: b-promo, credit_type: USD, amount: 50, expires: 2026-12-01}
        - {key: c-short, credit_type: USD, amount: 40, priority: 1, expires: 2026-10-10}
"""


def event(number: int, timestamp: str, kind: str, **properties: Any) -> dict[str, Any]:
    return {
        "id": f"e{number}",
        "customer": "acme",
        "type": kind,
        "timestamp": timestamp,
        "properties": properties,
    }


EVENTS = [
    # c-short (priority 1, 40 USD) pays the first 20 tokens; the 15 at its exact expiry
    # instant are paid by it only when its end is inclusive
    event(1, "2026-10-05T12:00:00Z", "llm", tokens=20),
    event(2, "2026-10-10T00:00:00Z", "llm", tokens=15),
    event(3, "2026-10-11T09:00:00Z", "seats", seats=7),
    event(4, "2026-10-12T09:00:00Z", "seats", seats=3),
    event(5, "2026-10-13T09:00:00Z", "pay", amount=100),
    event(6, "2026-10-14T09:00:00Z", "pay", amount=100),
]


def draft(new_db: NewDb, block: str, name: str = "ledger") -> Invoice:
    with open_billing(new_db(name), clock=lambda: at(2026, 10, 20)) as billing:
        assert billing.ledger.ingest(EVENTS).accepted == len(EVENTS)
        billing.apply(PRICING + ("semantics:\n" + block if block else ""))
        return billing.draft("acme", at(2026, 10, 20))


def lines(document: Invoice, kind: str) -> dict[str, D]:
    """The amounts of the draft's lines of ``kind``, by grant (credit) or meter (usage)."""
    return {
        (line.grant if isinstance(line, CreditLine) else line_meter(line)) or line.description: (
            D(line.amount)
        )
        for line in document.lines
        if line.kind == kind
    }


def test_the_default_block_is_the_invoice_without_one(new_db: NewDb) -> None:
    explicit = (
        "  burn_cost_basis: none\n  burn_expiry: exact\n  grant_end: exclusive\n"
        "  grant_start: exact\n"
        "  gauge: period\n  line_maximum: close\n  volume_billing: progressive\n"
        "  percentage_free: fixed_fee\n  free_event_minimum: applies\n"
    )
    without, with_defaults = draft(new_db, ""), draft(new_db, explicit, "explicit")
    assert without.lines == with_defaults.lines
    assert without.total == with_defaults.total


def test_each_option_changes_the_draft_as_the_table_says(new_db: NewDb) -> None:
    """Defaults: c-short pays 20 tokens; the 15 at its expiry instant go to a-paid (the
    older of two grants of equal priority and expiry: ids break the tie); seats are the
    latest reading (3 x 2 = 6); payments pay 2% + 0.30 each (2.30 + 2.30).
    The chosen block: the 15 at the instant are c-short's (inclusive end); promotional
    b-promo burns before paid a-paid for the rest; seats are summed per day (7 + 3 = 10 x
    2 = 20); payments: the first 150 of the amounts are free (the first 100 wholly, with
    no minimum; the second pays 2% of 50 + 0.30 = 1.30)."""
    default = draft(new_db, "")
    usage = lines(default, "usage")
    assert usage == {"tokens": D(35), "seats": D(6), "payments": D("4.60")}
    assert lines(default, "credit") == {"c-short": D(-20), "a-paid": D("-25.60")}
    chosen = draft(
        new_db,
        "  burn_cost_basis: promotional_first\n  grant_end: inclusive\n  gauge: day\n"
        "  percentage_free: amount\n  free_event_minimum: skipped\n",
        "chosen",
    )
    usage = lines(chosen, "usage")
    assert usage == {"tokens": D(35), "seats": D(20), "payments": D("1.30")}
    assert lines(chosen, "credit") == {"c-short": D(-35), "b-promo": D("-21.30")}


@pytest.mark.parametrize(
    ("block", "credits"),
    [
        ("", {"c-short": D(-20), "a-paid": D("-25.60")}),
        ("  burn_cost_basis: promotional_first\n", {"c-short": D(-20), "b-promo": D("-25.60")}),
        ("  grant_end: inclusive\n", {"c-short": D(-35), "a-paid": D("-10.60")}),
    ],
)
def test_burn_order_options_pick_the_grant(
    new_db: NewDb, block: str, credits: dict[str, D]
) -> None:
    """The same usage (35 tokens, seats 6, payments 4.60 = 45.60) drawn: c-short pays
    20 (its priority) before its expiry instant, the rest falls to a-paid or,
    promotional first, to b-promo. ``inclusive``: c-short also pays the 15 at its expiry
    instant, a-paid the remaining 10.60."""
    assert lines(draft(new_db, block), "credit") == credits


def test_a_closed_period_under_chosen_semantics_audits(new_db: NewDb) -> None:
    """The invoice a close finalizes under a non-default block is re-derived byte for byte
    by ``audit`` (the block is part of the stored revision) and equals the draft."""
    block = "  grant_end: inclusive\n  gauge: day\n  percentage_free: amount\n"
    with open_billing(new_db(), clock=lambda: at(2026, 11, 2)) as billing:
        billing.ledger.ingest(EVENTS)
        billing.apply(PRICING + "semantics:\n" + block)
        before = billing.draft("acme", at(2026, 10, 20))
        (invoice,) = billing.close(at(2026, 11, 2))
        report = billing.audit()
        assert report.passed, report.mismatches
        after = billing.draft("acme", at(2026, 10, 20))
    assert after.lines == before.lines and after.total == before.total
    assert invoice.customer == "acme"


# -- the vendors' own worked examples, through the pricing file and the billing shell -------


def amounts(document: Invoice, kind: str) -> list[D]:
    """The amounts of the document's lines of ``kind``, in order."""
    return [line.amount for line in document.lines if line.kind == kind]


def _drafts(new_db: NewDb, pricing: str, customer: str, months: list[int]) -> list[Any]:
    """The draft of ``customer`` mid-month for each of ``months`` of 2026 (one ledger)."""
    found = []
    now = [at(2026, months[0], 15)]
    with open_billing(new_db(), clock=lambda: now[0]) as billing:
        billing.apply(pricing)
        for month in months:
            now[0] = at(2026, month, 15)
            found.append(billing.draft(customer, now[0]))
    return found


STRIPE = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
coupons:
  - {code: HALF, name: Half off, percent_off: 50, duration: repeating, duration_periods: 3}
  - {code: FIVE, name: Five off, amount_off: "5.00", currency: USD, duration: once}
tax:
  rates: [{name: VAT, percent: 20, inclusive: true, jurisdiction: GB}]
plans:
  - key: p
    versions:
      - {version: 1, effective_from: 2026-01-01, currency: USD,
         fees: [{key: base, name: Base, amount: 100}], prices: []}
contracts:
  - {customer: half, plan: p, start: 2026-01-01, coupons: [HALF]}
  - {customer: five, plan: p, start: 2026-01-01, coupons: [FIVE],
     overrides: {fees: [{key: base, name: Base, amount: 20}]}}
  - {customer: vat, plan: p, start: 2026-01-01, tax: {jurisdiction: GB},
     overrides: {fees: [{key: base, name: Base, amount: 10}]}}
"""


def test_stripe_coupons_with_a_duration_and_inclusive_tax(new_db: NewDb) -> None:
    """Stripe API reference, "The Coupon object" (docs.stripe.com/api/coupons/object):
    ``percent_off`` 50 makes a $100 invoice $50, and a ``repeating`` coupon applies for
    ``duration_in_months`` (here 3 monthly periods: January to March at $50, April at
    $100); ``amount_off`` with ``duration: once`` takes $5 off the first invoice only
    ($20 -> $15, then $20). Stripe Tax, "Tax behavior" (docs.stripe.com/tax/products-
    prices-tax-codes-tax-behavior): a 10.00 price with 20% inclusive tax holds 1.67 of
    tax and the total stays 10.00."""
    half = _drafts(new_db, STRIPE, "half", [1, 3, 4])
    assert [str(doc.total) for doc in half] == ["50.00", "50.00", "100.00"]
    assert amounts(half[0], "coupon") == [D(-50)] and amounts(half[2], "coupon") == []
    five = _drafts(new_db, STRIPE, "five", [1, 2])
    assert [str(doc.total) for doc in five] == ["15.00", "20.00"]
    (vat,) = _drafts(new_db, STRIPE, "vat", [1])
    (tax,) = [line for line in vat.lines if isinstance(line, TaxLine)]
    assert (str(tax.included), str(tax.amount), str(vat.total)) == ("1.67", "0.00", "10.00")


STRIPE_MONTHS = """\
coupons:
  - {code: HALF3M, name: Half off for 3 months, percent_off: 50, duration: repeating,
     duration_months: 3}
  - {code: HALF3P, name: Half off for 3 periods, percent_off: 50, duration: repeating,
     duration_periods: 3}
plans:
  - key: weekly
    versions:
      - {version: 1, effective_from: 2026-01-01, currency: USD,
         billing: {cycle: weekly}, fees: [{key: base, name: Base, amount: 10}], prices: []}
  - key: annual
    versions:
      - {version: 1, effective_from: 2026-01-01, currency: USD,
         billing: {cycle: annual}, fees: [{key: base, name: Base, amount: 1200}], prices: []}
contracts:
  - {customer: weeks, plan: weekly, start: 2026-01-05, coupons: [HALF3M]}
  - {customer: periods, plan: weekly, start: 2026-01-05, coupons: [HALF3P]}
  - {customer: june, plan: annual, start: 2026-01-01,
     coupons: [{code: HALF3M, redeemed: 2026-06-15}]}
  - {customer: november, plan: annual, start: 2026-01-01,
     coupons: [{code: HALF3M, redeemed: 2026-11-15}]}
"""


def test_stripe_repeating_coupon_counts_calendar_months_on_any_cycle(new_db: NewDb) -> None:
    """Stripe API reference, "The Coupon object": ``duration_in_months`` is "the number
    of months the coupon applies" whatever the price's interval. 50% off for 3 months on
    a $10 weekly plan from Monday 5 January 2026: the discount ends on 5 April, so the 13
    weekly invoices of periods starting before it (5 January to 30 March) are $5 and the
    week of 6 April is $10; ``duration_periods: 3`` would stop after 3 weeks. On an annual
    plan, a redemption on 15 June 2026 applies to the 2026 invoice (its period holds the
    redemption) and not to 2027's (the discount ended on 15 September); one on 15 November
    reaches 2027's too, whose period starts on 1 January, before the discount ends on 15
    February (Stripe's renewal invoice that day carries it)."""
    weekly_us = 7 * 86_400_000_000
    mondays = [at(2026, 1, 5) + n * weekly_us for n in range(15)]
    with open_billing(new_db(), clock=lambda: mondays[-1]) as billing:
        billing.apply(STRIPE_MONTHS)
        months = [str(billing.draft("weeks", monday + 1).total) for monday in mondays]
        periods = [str(billing.draft("periods", monday + 1).total) for monday in mondays[:5]]
        years = {
            customer: [str(billing.draft(customer, at(year, 6, 1)).total) for year in (2026, 2027)]
            for customer in ("june", "november")
        }
    assert months == ["5.00"] * 13 + ["10.00"] * 2
    assert periods == ["5.00"] * 3 + ["10.00"] * 2
    assert years == {"june": ["600.00", "1200.00"], "november": ["600.00", "600.00"]}


def test_a_coupon_lasts_periods_or_months_not_both(new_db: NewDb) -> None:
    """A repeating coupon names one duration; the pricing file is refused otherwise,
    naming the field."""
    both = STRIPE_MONTHS.replace("duration_months: 3}", "duration_months: 3, duration_periods: 2}")
    once = STRIPE_MONTHS.replace(
        "duration: repeating,\n     duration_months", "duration: once,\n     duration_months"
    )
    with open_billing(new_db(), clock=lambda: at(2026, 2, 1)) as billing:
        for text, reason in (
            (both, "coupons[0].duration_months: set duration_periods or duration_months"),
            (once, "coupons[0].duration_months: only a repeating coupon has a duration"),
        ):
            with pytest.raises(MeterlineError) as refused:
                billing.apply(text)
            assert reason in str(refused.value)


LAGO = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
plans:
  - key: payg
    versions:
      - {version: 1, effective_from: 2026-01-01, currency: USD,
         prices: [{meter: tokens, model: per_unit, unit_amount: "0.01"}]}
contracts:
  - customer: lago-co
    plan: payg
    start: 2026-11-01
    credits: {thresholds: {levels: [5, 20, 50, 100, 1000], scope: %s}}
"""


def _usage(number: int, day: str, tokens: int) -> dict[str, Any]:
    return {
        "id": f"u{number}",
        "customer": "lago-co",
        "type": "llm",
        "timestamp": f"2026-{day}T12:00:00Z",
        "properties": {"tokens": tokens},
    }


@pytest.mark.parametrize("scope", ["lifetime", "period"])
def test_lago_progressive_billing_on_lifetime_usage(new_db: NewDb, scope: str) -> None:
    """Lago, "Progressive billing" (getlago.com/docs/guide/plans/progressive-billing):
    step thresholds at $5, $20, $50, $100 and $1,000 of the subscription's **lifetime**
    usage (persistent across periods); the final invoice deducts what was billed early.
    November: $6 of usage reaches $5 (a $6 invoice); $18 in all: the November invoice
    bills $18 less the $6: $12. December: $3 more makes $21 of lifetime usage, past $20:
    a $3 invoice. With ``scope: period`` (per-period levels) December's $3 reaches
    nothing."""
    now = [at(2026, 11, 10)]
    with open_billing(new_db(), clock=lambda: now[0]) as billing:
        billing.apply(LAGO % scope)
        billing.ledger.ingest([_usage(1, "11-03", 600)])
        (first,) = billing.check_thresholds("lago-co")
        assert str(first.record.total) == "6.00"
        billing.ledger.ingest([_usage(2, "11-05", 1200)])
        assert billing.check_thresholds("lago-co") == []
        now[0] = at(2026, 12, 2)
        (november,) = [i for i in billing.close() if i.kind == "period"]
        document = november.record
        assert str(document.total) == "12.00"
        assert amounts(document, "prepaid") == [D(-6)]
        now[0] = at(2026, 12, 10)
        billing.ledger.ingest([_usage(3, "12-05", 300)])
        december = billing.check_thresholds("lago-co")
        if scope == "period":
            assert december == []
            return
        (second,) = december
        billed = second.record
        assert str(billed.total) == "3.00"
        assert isinstance(billed.lines[0], ThresholdLine) and billed.lines[0].threshold_level == 2


def test_lifetime_threshold_progress_counts_earlier_periods_live(new_db: NewDb) -> None:
    """The same Lago example, live: an engine running since 1 December hears November
    closed; after $3 more in December its figures and access answer count $21 of lifetime
    usage with $50 next, and it tells ``threshold.reached`` for the $20 level only (the
    $5 level was passed in November)."""
    now = [at(2026, 11, 10)]
    with open_billing(new_db(), clock=lambda: now[0]) as billing:
        billing.apply(LAGO % "lifetime")
        billing.ledger.ingest([_usage(1, "11-03", 600), _usage(2, "11-05", 1200)])
        now[0] = at(2026, 12, 1)
        told: list[tuple[str, dict[str, Any]]] = []
        engine = LiveEngine(billing, publish=lambda kind, data, _: told.append((kind, plain(data))))
        engine.start(thread=False)
        try:
            now[0] = at(2026, 12, 2)
            billing.close()
            now[0] = at(2026, 12, 10)
            billing.ledger.ingest([_usage(3, "12-05", 300)])
            engine.cycle()
            figures = engine.projection.figures("lago-co")
            assert figures is not None
            progress = {"so_far": "21.00", "next": "50", "of": "USD"}
            assert figures.as_dict()["threshold"] == progress
            assert plain(engine.controls.access("lago-co"))["threshold"] == progress
            reached = [data for kind, data in told if kind == "threshold.reached"]
            assert [(data["level"], data["so_far"]) for data in reached] == [("20", "21.00")]
        finally:
            engine.stop()


ORB = """\
credit_types:
  - {key: credits, currency: USD, unit_value: "1.00"}
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
plans:
  - key: p
    versions:
      - {version: 1, effective_from: 2026-01-01, currency: USD,
         prices: [{meter: tokens, model: per_unit, unit_amount: 1, credit_type: credits}]}
contracts:
  - customer: orb-co
    plan: p
    start: 2026-10-01
    credits:
      grants:
        - {key: a-dear, credit_type: credits, amount: 100, unit_cost: "5.00",
           expires: 2027-01-01}
        - {key: b-cheap, credit_type: credits, amount: 100, unit_cost: "0.20",
           expires: 2027-01-01}
        - {key: c-trial, credit_type: credits, amount: 100, expires: 2027-01-01}
semantics:
  burn_cost_basis: %s
"""


@pytest.mark.parametrize(
    ("basis", "drawn"),
    [
        ("lowest_first", {"c-trial": D(-100), "b-cheap": D(-50)}),
        ("none", {"a-dear": D(-100), "b-cheap": D(-50)}),
    ],
)
def test_orb_burns_the_lowest_cost_basis_first_and_recognizes_it(
    new_db: NewDb, basis: str, drawn: dict[str, D]
) -> None:
    """Orb, "Create ledger entry" (docs.withorb.com/api-reference/credit/create-ledger-
    entry): 100 credits with ``per_unit_cost_basis`` "0.20" invoice 20.00 (here a grant's
    ``unit_cost``); Orb, "Fetch customer credits ledger": blocks with the same expiry
    date burn the lower cost basis first ($0 trial credits before paid ones). 150 credits
    of usage: the trial block's 100, then 50 of the 0.20 block, whose consumption
    recognizes 50 x 0.20 = 10.00 of credit revenue (the trial's nothing). Without the
    option, the older (here: first by id) 5.00 block burns first."""
    now = at(2026, 10, 20)
    with open_billing(new_db(), clock=lambda: now) as billing:
        billing.ledger.ingest(
            [
                {
                    "id": "o1",
                    "customer": "orb-co",
                    "type": "llm",
                    "timestamp": "2026-10-05T12:00:00Z",
                    "properties": {"tokens": 150},
                }
            ]
        )
        billing.apply(ORB % basis)
        document = billing.draft("orb-co", now)
        purchases = sorted(line.amount for line in document.lines if line.kind == "purchase")
        assert purchases == [D("20.00"), D("500.00")]
        credits = {
            line.grant: line.amount for line in document.lines if isinstance(line, CreditLine)
        }
        assert credits == drawn
        if basis == "lowest_first":
            books = build_books(billing, now)
            revenue = sum(
                (
                    -p.amount
                    for e in books.entries
                    for p in e.postings
                    if p.account == "revenue:credits"
                ),
                D(0),
            )
            assert revenue == D("10.00")


OPENMETER = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
plans:
  - key: p
    versions:
      - {version: 1, effective_from: 2026-01-01, currency: USD,
         prices: [{meter: tokens, model: per_unit, unit_amount: 1}]}
contracts:
  - customer: om-co
    plan: p
    start: 2026-10-01
    credits:
      overage: bill
      grants:
        - {key: later, credit_type: USD, amount: 20, priority: 5, expires: 2026-12-01}
        - {key: sooner, credit_type: USD, amount: 10, priority: 5, expires: 2026-11-15}
        - {key: urgent, credit_type: USD, amount: 10, priority: 1}
"""


def test_openmeter_priority_then_expiry_then_invoice_the_rest(new_db: NewDb) -> None:
    """Kong Metering & Billing (built on OpenMeter), "Credit consumption and expiration"
    (developer.konghq.com/metering-and-billing/credits/consumption-and-expiration/): a
    100 USD charge with a 40 USD credit balance under ``credit_then_invoice`` consumes
    the 40 and invoices the remaining 60; grants draw down by priority ascending, then
    ``expires_at`` ascending. Here: the priority-1 grant first (10, though it never
    expires), then of the two priority-5 grants the one expiring sooner (10), then the
    later one (20): 40 of credit, 60 left to pay."""
    now = at(2026, 10, 20)
    with open_billing(new_db(), clock=lambda: now) as billing:
        billing.ledger.ingest(
            [
                {
                    "id": "m1",
                    "customer": "om-co",
                    "type": "llm",
                    "timestamp": "2026-10-05T12:00:00Z",
                    "properties": {"tokens": 100},
                }
            ]
        )
        billing.apply(OPENMETER)
        document = billing.draft("om-co", now)
    assert lines(document, "credit") == {"urgent": D(-10), "sooner": D(-10), "later": D(-20)}
    assert str(document.total) == "60.00"


def test_a_plan_or_a_contract_overrides_one_option(new_db: NewDb) -> None:
    """A plan's ``semantics: {grant_end: inclusive}`` makes its contracts pay at the exact
    expiry instant (c-short pays 35, as the file-level option would); the contract's own
    ``semantics: {grant_end: exclusive}`` overrides its plan's back (20); the other
    options stay the file's (here the defaults)."""
    by_plan = PRICING.replace("  - key: p\n", "  - key: p\n    semantics: {grant_end: inclusive}\n")
    by_contract = by_plan.replace(
        "    plan: p\n", "    plan: p\n    semantics: {grant_end: exclusive}\n"
    )
    with open_billing(new_db(), clock=lambda: at(2026, 10, 20)) as billing:
        billing.ledger.ingest(EVENTS)
        billing.apply(by_plan)
        plan_level = billing.draft("acme", at(2026, 10, 20))
        configuration = billing.current().configuration
        assert configuration.semantics_for("acme").grant_end == "inclusive"
        assert configuration.semantics.grant_end == "exclusive"
        billing.apply(by_contract)
        contract_level = billing.draft("acme", at(2026, 10, 20))
    assert lines(plan_level, "credit") == {"c-short": D(-35), "a-paid": D("-10.60")}
    assert lines(contract_level, "credit") == {"c-short": D(-20), "a-paid": D("-25.60")}
    assert lines(plan_level, "usage") == {"tokens": D(35), "seats": D(6), "payments": D("4.60")}


LAGO_PER_TRANSACTION = """\
meters:
  - {key: payments, event_type: pay, aggregation: sum, property: amount}
plans:
  - key: p
    semantics: {percentage_free: %s}
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: payments, model: percentage, rate: "0.01", free_events: 1,
             free_units: 300, per_event_minimum: "1.75", per_event_maximum: "12"}
contracts:
  - {customer: lago-co, plan: p, start: 2026-10-01}
semantics:
  percentage_free: amount
  free_event_minimum: skipped
"""


@pytest.mark.parametrize(("free", "total"), [("amount_else_events", "20.00"), ("amount", "22.00")])
def test_lago_per_transaction_minimum_keeps_the_free_amount_past_the_free_events(
    new_db: NewDb, free: str, total: str
) -> None:
    """Lago, a percentage charge with ``per_transaction_min_amount`` 1.75 and
    ``per_transaction_max_amount`` 12 (getlago/lago-api
    ``app/services/charges/charge_models/percentage_service.rb``,
    ``compute_amount_with_transaction_min_max``), rate 1%, ``free_units_per_events`` 1 and
    ``free_units_per_total_aggregation`` 300; transactions of 100, 1000 and 10000. Lago's
    loop keeps the free amount going while any is left, though the one free event is
    spent: 100 is free (200 left), 1000 pays 1% of 800 = 8, 10000 pays 100 capped at 12:
    20.00, the plan's ``percentage_free: amount_else_events`` (over the file's
    ``amount``). Under ``amount`` the allowance ends with the free event: 0 + 10 + 12 =
    22.00."""
    now = at(2026, 10, 20)
    with open_billing(new_db(), clock=lambda: now) as billing:
        billing.ledger.ingest(
            [
                {
                    "id": f"l{day}",
                    "customer": "lago-co",
                    "type": "pay",
                    "timestamp": f"2026-10-0{day}T12:00:00Z",
                    "properties": {"amount": amount},
                }
                for day, amount in ((5, 100), (6, 1_000), (7, 10_000))
            ]
        )
        billing.apply(LAGO_PER_TRANSACTION % free)
        document = billing.draft("lago-co", now)
    assert lines(document, "usage") == {"payments": D(total)}
    assert str(document.total) == total


LAGO_ZERO_UNITS = """\
meters:
  - {key: payments, event_type: pay, aggregation: sum, property: amount}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: payments, model: percentage, rate: "0.013", fixed_fee: "2",
             free_events: 2}
contracts:
  - {customer: lago-co, plan: p, start: 2026-10-01}
semantics:
  percentage_free: %s
"""


@pytest.mark.parametrize(
    ("free", "total"), [("events", "0.00"), ("amount", "0.00"), ("fixed_fee", "4.00")]
)
def test_lago_charges_no_fixed_amount_when_the_units_are_zero(
    new_db: NewDb, free: str, total: str
) -> None:
    """Lago, a percentage charge with rate 1.3%, fixed amount 2 and
    ``free_units_per_events`` 2; four events whose amounts sum to 0 (getlago/lago-api
    ``spec/services/charges/charge_models/percentage_service_spec.rb``, "when aggregation
    value is 0": 2 free events, 2 paid, fixed fee total 0, amount 0; its
    ``percentage_service.rb``, ``compute_fixed_amount``: ``return 0 if units.zero?``).
    ``events`` and ``amount`` invoice 0.00; meterline's own ``fixed_fee`` charges the
    two events past the free ones their fixed fee: 4.00."""
    now = at(2026, 10, 20)
    with open_billing(new_db(), clock=lambda: now) as billing:
        billing.ledger.ingest(
            [
                {
                    "id": f"z{day}",
                    "customer": "lago-co",
                    "type": "pay",
                    "timestamp": f"2026-10-0{day}T12:00:00Z",
                    "properties": {"amount": 0},
                }
                for day in (5, 6, 7, 8)
            ]
        )
        billing.apply(LAGO_ZERO_UNITS % free)
        document = billing.draft("lago-co", now)
    assert lines(document, "usage") == {"payments": D(total)}
    assert str(document.total) == total


OPENMETER_START = """\
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens}
plans:
  - key: p
    versions:
      - {version: 1, effective_from: 2026-01-01, currency: USD,
         prices: [{meter: tokens, model: per_unit, unit_amount: 1}]}
contracts:
  - customer: om-co
    plan: p
    start: 2026-10-01
    semantics: {grant_start: %s}
    credits:
      overage: bill
      grants:
        - {key: top-up, credit_type: USD, amount: 100, start: "2026-10-05T10:00:30Z"}
"""


@pytest.mark.parametrize(
    ("start", "credit", "total"),
    [("minute_up", "-20", "15.00"), ("exact", "-30", "5.00"), ("minute_down", "-35", "0.00")],
)
def test_openmeter_ceils_a_grants_effective_time_to_the_minute(
    new_db: NewDb, start: str, credit: str, total: str
) -> None:
    """OpenMeter, ``GrantCreateInput.effectiveAt``: "Effective date for grants and anchor
    for recurring grants. Provided value will be ceiled to metering windowSize (minute)"
    (openmeterio/openmeter ``api/spec/src/entitlements/grant.tsp``). A 100 USD grant
    declared effective at 10:00:30; 5 tokens at 10:00:10, 10 at 10:00:40 (the first,
    partial minute) and 20 at 10:01:00, at 1 USD. The contract's ``grant_start:
    minute_up``: the grant starts at 10:01 and pays 20; 15 are invoiced. ``exact``: it
    pays 10 + 20; ``minute_down`` (what OpenMeter's later ``openmeter/credit/grant.go``
    does, truncating): 35."""
    now = at(2026, 10, 20)
    with open_billing(new_db(), clock=lambda: now) as billing:
        billing.ledger.ingest(
            [
                {
                    "id": f"m{second}",
                    "customer": "om-co",
                    "type": "llm",
                    "timestamp": f"2026-10-05T10:{second // 60:02d}:{second % 60:02d}Z",
                    "properties": {"tokens": tokens},
                }
                for second, tokens in ((10, 5), (40, 10), (60, 20))
            ]
        )
        billing.apply(OPENMETER_START % start)
        document = billing.draft("om-co", now)
        assert billing.current().configuration.semantics.grant_start == "exact"
    assert lines(document, "usage") == {"tokens": D(35)}
    assert lines(document, "credit") == {"top-up": D(credit)}
    assert str(document.total) == total

"""Invoices and credit notes as journal entries (core.books): each kind of line earns
revenue by its rule, the bill always equals the invoice, and a void reverses it all."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D
from typing import Any

from meterline.core.books import credit_note_entries, document_entries
from meterline.core.documents import Invoice
from meterline.core.journal import (
    CONTRA_COMMIT_DISCOUNTS,
    CONTRA_DISCOUNTS,
    CONTRA_FREE_CREDITS,
    DEFERRED_BILLED_EARLY,
    DEFERRED_CREDITS,
    DEFERRED_FEES,
    RECEIVABLE,
    REVENUE_MINIMUM,
    REVENUE_SUBSCRIPTION,
    REVENUE_USAGE,
    UNBILLED,
    JournalEntry,
    trial_balance,
    waterfall,
)
from meterline.core.revrec import CreditTerms, Movement, credit_entries
from tests.support.documents import credit_note_of, invoice_of


def _invoice(lines: list[dict[str, Any]], **extra: Any) -> Invoice:
    return invoice_of(
        {
            "number": "INV-000001",
            "period": {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"},
            "lines": lines,
            **extra,
        }
    )


OCTOBER = {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}


def _balance(entries: list[JournalEntry], account: str, through: date | None = None) -> D:
    return trial_balance(entries, through).get((account, "USD"), D(0))


def test_stripe_fee_in_advance_through_an_invoice_line() -> None:
    """Stripe's daily amortization example as an invoice line billed on its first day."""
    document = _invoice(
        [
            {
                "kind": "fee",
                "amount": "120.00",
                "recurrence": "recurring",
                "timing": "advance",
                "service": {"start": "2026-06-15T12:00:00Z", "end": "2026-10-13T12:00:00Z"},
            }
        ]
    )
    entries = document_entries(document, date(2026, 6, 15), "invoice:INV-000001")
    months = {k[0]: v for k, v in waterfall(entries).items() if k[1] == REVENUE_SUBSCRIPTION}
    assert months == {
        "2026-06": D(16),
        "2026-07": D(31),
        "2026-08": D(31),
        "2026-09": D(30),
        "2026-10": D(12),
    }
    assert -_balance(entries, DEFERRED_FEES, date(2026, 6, 30)) == D(104)
    assert _balance(entries, RECEIVABLE) == D("120.00")
    assert _balance(entries, DEFERRED_FEES) == 0
    assert {e.cause for e in entries} == {"invoice:INV-000001/line:1"}


def test_a_fee_billed_after_its_service_began_earns_the_days_before_as_unbilled() -> None:
    """October's fee billed on November 1 (a period invoice): every day was earned before
    the bill, against unbilled receivable, and the bill clears it exactly."""
    document = _invoice(
        [{"kind": "fee", "amount": "500.00", "recurrence": "recurring", "service": OCTOBER}]
    )
    entries = document_entries(document, date(2026, 11, 1), "invoice:INV-000001")
    assert _balance(entries, UNBILLED, date(2026, 10, 31)) == D("500.00")
    assert -_balance(entries, REVENUE_SUBSCRIPTION, date(2026, 10, 31)) == D("500.00")
    assert _balance(entries, UNBILLED) == 0
    assert _balance(entries, DEFERRED_FEES) == 0
    assert _balance(entries, RECEIVABLE) == D("500.00")
    # 500 over 31 days: by the 15th, 500 x 15 / 31 = 241.935... rounded once
    assert _balance(entries, UNBILLED, date(2026, 10, 15)) == D("241.94")


def test_usage_commitment_and_discount_lines_earn_on_the_last_day_of_service() -> None:
    document = _invoice(
        [
            {"kind": "usage", "amount": "80.00", "service": OCTOBER},
            {"kind": "commitment", "amount": "20.00"},
            {"kind": "discount", "amount": "-8.00"},
        ]
    )
    entries = document_entries(document, date(2026, 11, 2), "invoice:INV-000001")
    last = date(2026, 10, 31)
    assert -_balance(entries, REVENUE_USAGE, last) == D("80.00")
    assert -_balance(entries, REVENUE_MINIMUM, last) == D("20.00")
    assert _balance(entries, CONTRA_DISCOUNTS, last) == D("8.00")
    assert -_balance(entries, REVENUE_USAGE, date(2026, 10, 30)) == 0
    assert _balance(entries, UNBILLED) == 0
    assert _balance(entries, RECEIVABLE) == D("92.00")


def test_a_prepaid_commit_in_money_settles_the_usage_it_paid() -> None:
    """A 60 USD commit bought for 54 pays 60 of 100 USD of usage: usage revenue is the
    full 100, 54 comes out of deferred revenue and 6 is contra-revenue (the commit's
    discount); the invoice bills 40 for usage and 54 for the commit, and nothing stays
    unbilled."""
    document = _invoice(
        [
            {"kind": "usage", "amount": "100.00", "service": OCTOBER},
            {"kind": "purchase", "amount": "54.00", "grant": "commit"},
            {"kind": "credit", "amount": "-60.00", "unit": "USD", "grant": "commit"},
        ]
    )
    billed = document_entries(document, date(2026, 11, 1), "invoice:INV-000001")
    grant = CreditTerms("acme/commit", "acme", "USD", D(60), D(54), "USD", date(2026, 10, 1))
    consumed = [Movement(date(2026, 10, 20), "acme/commit", "consume", D(60))]
    credit, accounts = credit_entries([grant], consumed, purchase_account=UNBILLED)
    entries = billed + credit
    assert _balance(entries, RECEIVABLE) == D("94.00")
    assert -_balance(entries, REVENUE_USAGE) == D("100.00")
    assert _balance(entries, CONTRA_COMMIT_DISCOUNTS) == D("6.00")  # paid 54 for 60
    assert _balance(entries, CONTRA_FREE_CREDITS) == 0
    assert _balance(entries, DEFERRED_CREDITS) == 0
    assert _balance(entries, UNBILLED) == 0
    assert accounts["acme/commit"].released == D("54.00")


def test_a_threshold_surplus_is_deferred_until_a_later_invoice_nets_it() -> None:
    """Billed early 12.00 in October (usage revenue that day), October delivers 4.00: its
    invoice nets 4.00 and carries 8.00, which leaves usage revenue for deferred revenue;
    November delivers 5.00 and nets 5.00 of the surplus out of deferred revenue. Revenue
    is what was delivered each month (4.00, 5.00) and 3.00 stays owed as service."""
    threshold = _invoice([{"kind": "threshold", "amount": "12.00"}], number="INV-000001")
    october = _invoice(
        [
            {"kind": "usage", "amount": "4.00", "service": OCTOBER},
            {"kind": "prepaid", "amount": "-4.00", "billed_early": "12.00", "carried": "8.00"},
        ],
        number="INV-000002",
    )
    november = _invoice(
        [
            {"kind": "usage", "amount": "5.00"},
            {
                "kind": "prepaid",
                "amount": "-5.00",
                "billed_early": "8.00",
                "carried": "3.00",
                "from_period": "2026-10-01",
            },
        ],
        number="INV-000003",
        period={"start": "2026-11-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"},
    )
    entries = (
        document_entries(threshold, date(2026, 10, 10), "invoice:INV-000001")
        + document_entries(october, date(2026, 11, 1), "invoice:INV-000002")
        + document_entries(november, date(2026, 12, 1), "invoice:INV-000003")
    )
    months = {
        month: amount for (month, account, _), amount in waterfall(entries).items()
        if account == REVENUE_USAGE
    }  # fmt: skip
    assert months == {"2026-10": D("4.00"), "2026-11": D("5.00")}
    assert -_balance(entries, DEFERRED_BILLED_EARLY, date(2026, 10, 31)) == D("8.00")
    assert -_balance(entries, DEFERRED_BILLED_EARLY) == D("3.00")
    assert _balance(entries, RECEIVABLE) == D("12.00")
    assert _balance(entries, UNBILLED) == 0


def test_usage_paid_by_a_credit_type_earns_credit_revenue_not_usage_revenue() -> None:
    """Usage priced in credits shows its value and the credits applied; the pair nets to
    no usage revenue (the grant's consumption earns credit revenue at its cost basis)."""
    document = _invoice(
        [
            {"kind": "usage", "amount": "79.02", "service": OCTOBER},
            {"kind": "credit", "amount": "-79.02", "unit": "credits", "grant": "pool"},
        ]
    )
    entries = document_entries(document, date(2026, 11, 1), "invoice:INV-000001")
    assert _balance(entries, REVENUE_USAGE) == 0
    assert _balance(entries, RECEIVABLE) == 0
    assert _balance(entries, UNBILLED) == 0


def test_a_void_credit_note_reverses_every_line_on_its_day() -> None:
    document = _invoice(
        [
            {"kind": "fee", "amount": "300.00", "recurrence": "recurring", "service": OCTOBER},
            {"kind": "usage", "amount": "45.55", "service": OCTOBER},
        ]
    )
    entries = document_entries(document, date(2026, 10, 1), "invoice:INV-000001")
    note = credit_note_of({"number": "CN-000001", "void": True, "lines": [{"amount": "-345.55"}]})
    reversed_entries = credit_note_entries(note, document, date(2026, 10, 10))
    everything = entries + reversed_entries
    assert all(e.cause.startswith("credit_note:CN-000001/") for e in reversed_entries)
    for account in (RECEIVABLE, UNBILLED, DEFERRED_FEES, REVENUE_SUBSCRIPTION, REVENUE_USAGE):
        assert _balance(everything, account) == 0, account
    # the days served before the note are reversed too, so no month keeps revenue
    assert all(value == 0 for value in _months(everything).values())


def _months(entries: list[JournalEntry]) -> dict[tuple[str, str], D]:
    totals: dict[tuple[str, str], D] = {}
    for (month, account, _), value in waterfall(entries).items():
        totals[(month, account)] = totals.get((month, account), D(0)) + value
    return totals


def test_a_late_usage_note_is_usage_revenue_on_its_day() -> None:
    document = _invoice([{"kind": "usage", "amount": "10.00", "service": OCTOBER}])
    note = credit_note_of(
        {
            "number": "CN-000002",
            "void": False,
            "lines": [{"number": 1, "kind": "adjustment", "amount": "2.40"}],
        }
    )
    entries = credit_note_entries(note, document, date(2026, 11, 20))
    assert waterfall(entries) == {("2026-11", REVENUE_USAGE, "USD"): D("2.40")}
    assert _balance(entries, RECEIVABLE) == D("2.40")


def test_the_monthly_summary_nets_each_account_per_month_and_balances() -> None:
    """Three daily entries in two months: the summary has one balanced entry per month
    with each account's net movement; its trial balance equals the daily one's."""
    from datetime import date as day
    from decimal import Decimal as Amount

    from meterline.core.journal import entry, monthly_summary, trial_balance

    daily = [
        entry("a", day(2026, 10, 3), "d", "c", "x", "USD", "assets:accounts_receivable",
              "revenue:usage", Amount("10.00")),
        entry("b", day(2026, 10, 30), "d", "c", "x", "USD", "assets:accounts_receivable",
              "revenue:usage", Amount("5.50")),
        entry("c", day(2026, 11, 1), "d", "c", "y", "USD", "assets:cash",
              "assets:accounts_receivable", Amount("15.50")),
    ]  # fmt: skip
    summary = monthly_summary([item for item in daily if item is not None])
    assert [(item.entry_id, item.day) for item in summary] == [
        ("summary:2026-10:USD", day(2026, 10, 31)),
        ("summary:2026-11:USD", day(2026, 11, 30)),
    ]
    october = {p.account: p.amount for p in summary[0].postings}
    assert october == {
        "assets:accounts_receivable": Amount("15.50"),
        "revenue:usage": Amount("-15.50"),
    }
    assert summary[0].description == "Monthly summary of 2 daily entries"
    assert trial_balance(summary) == trial_balance([i for i in daily if i is not None])

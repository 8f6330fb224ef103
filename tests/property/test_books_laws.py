"""Laws of the journal of an invoice (``core.books``) over random invoices:

- every entry balances, per currency;
- from the day it is billed, accounts receivable holds exactly the invoice's total;
- recognized + deferred - unbilled = billed at every date (what is billed is either
  earned, owed as service still to come, or billed ahead of the days it covers);
- once every service day has passed and the bill is out, nothing stays deferred or
  unbilled and the revenue recognized is the invoice's total;
- a void credit note brings every account back to zero.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal as D
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core.books import credit_note_entries, document_entries
from meterline.core.documents import Invoice
from meterline.core.journal import CHART, DEFERRED, RECEIVABLE, UNBILLED, trial_balance
from tests.property.test_revrec_laws import balanced
from tests.support.documents import credit_note_of, invoice_of

PERIOD_START = date(2026, 10, 1)
PERIOD_END = date(2026, 11, 1)
amounts = st.integers(-50_000, 500_000).map(lambda n: D(n).scaleb(-2))


def _stamp(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


@st.composite
def invoices(draw: st.DrawFn) -> tuple[Invoice, date]:
    lines = []
    for number in range(1, draw(st.integers(1, 6)) + 1):
        kind = draw(st.sampled_from(["fee", "usage", "commitment", "discount", "threshold"]))
        first = draw(st.integers(0, 29))
        last = draw(st.integers(first + 1, 31))
        service = {
            "start": _stamp(PERIOD_START + timedelta(days=first)),
            "end": _stamp(PERIOD_START + timedelta(days=last)),
        }
        line: dict[str, Any] = {"number": number, "kind": kind, "amount": str(draw(amounts))}
        if kind in ("fee", "usage"):
            line["service"] = service
        if kind == "fee":
            line["recurrence"] = draw(st.sampled_from(["recurring", "one_off"]))
        lines.append(line)
    total = sum((D(line["amount"]) for line in lines), D(0))
    document = {
        "number": "INV-000001",
        "customer": "acme",
        "currency": "USD",
        "timezone": "UTC",
        "period": {"start": _stamp(PERIOD_START), "end": _stamp(PERIOD_END)},
        "lines": lines,
        "total": str(total),
    }
    billed = PERIOD_START + timedelta(days=draw(st.integers(-10, 45)))
    return invoice_of(document), billed


def _figures(balances: dict[tuple[str, str], D]) -> tuple[D, D, D, D]:
    revenue = -sum(
        (v for (a, _), v in balances.items() if CHART[a] in ("revenue", "contra_revenue")), D(0)
    )
    deferred = -sum((v for (a, _), v in balances.items() if a in DEFERRED), D(0))
    unbilled = balances.get((UNBILLED, "USD"), D(0))
    receivable = balances.get((RECEIVABLE, "USD"), D(0))
    return revenue, deferred, unbilled, receivable


@settings(max_examples=150, deadline=None)
@given(invoices())
def test_an_invoice_journal_keeps_its_laws(invoice: tuple[Invoice, date]) -> None:
    document, billed = invoice
    entries = document_entries(document, billed, "invoice:INV-000001")
    assert balanced(entries)
    total = D(document.total)
    last = max(billed, PERIOD_END)
    day = min(billed, PERIOD_START) - timedelta(days=1)
    while day <= last:
        revenue, deferred, unbilled, receivable = _figures(trial_balance(entries, day))
        assert revenue + deferred - unbilled == receivable
        if day >= billed:
            assert receivable == total
        day += timedelta(days=1)
    revenue, deferred, unbilled, receivable = _figures(trial_balance(entries))
    assert (revenue, deferred, unbilled, receivable) == (total, 0, 0, total)


@settings(max_examples=75, deadline=None)
@given(invoices(), st.integers(0, 60))
def test_a_void_note_brings_every_account_back_to_zero(
    invoice: tuple[Invoice, date], after: int
) -> None:
    document, billed = invoice
    entries = document_entries(document, billed, "invoice:INV-000001")
    note = credit_note_of({"number": "CN-000001", "void": True, "lines": []})
    issued = billed + timedelta(days=after)
    voided = entries + credit_note_entries(note, document, issued)
    assert balanced(voided)
    assert trial_balance(voided) == {}

"""Laws of a month's bridge (``core.revenue_bridge``) over random invoices billed on
random days, with tax and void credit notes among them:

- every month's bridge closes on both bases (billed in the month; billed for the
  invoice's period): the billed figure, taken from the documents, plus the lines is what
  the journal recognized, or ``revenue_bridge`` raises;
- each line names only causes the journal holds, and no line is zero;
- over every month the invoices touch, the invoiced basis bills each invoice once: the
  months' billed figures sum to the documents' totals, and their recognized figures to
  the revenue the journal ever recognized.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core.books import credit_note_entries, document_entries
from meterline.core.documents import Invoice
from meterline.core.journal import CHART, JournalEntry
from meterline.core.revenue_bridge import cause_root, revenue_bridge
from meterline.finance.reports import month_span
from tests.property.test_books_laws import invoices
from tests.support.documents import credit_note_of, invoice_of

MONTHS = (*(f"2026-{month:02d}" for month in range(8, 13)), "2027-01", "2027-02")
"""Every month a generated invoice's service, bill or note can fall in."""


def _with_tax(document: Invoice, tax: D) -> Invoice:
    """``document`` with one more line: exclusive tax of ``tax``."""
    lines = [
        {
            "number": line.number,
            "kind": line.kind,
            "amount": str(line.amount),
            **({"service": {"start": line.service.start, "end": line.service.end}}
               if getattr(line, "service", None) else {}),
            **({"recurrence": line.recurrence} if line.kind == "fee" else {}),
        }
        for line in document.lines
    ]  # fmt: skip
    lines.append({"number": len(lines) + 1, "kind": "tax", "amount": str(tax)})
    total = sum((D(line["amount"]) for line in lines), D(0))
    return invoice_of(
        {
            "number": document.number,
            "customer": "acme",
            "currency": "USD",
            "timezone": "UTC",
            "period": {"start": document.period_span().start, "end": document.period_span().end},
            "lines": lines,
            "total": str(total),
        }
    )


def _recognized(entries: list[JournalEntry]) -> D:
    return -sum(
        (
            posting.amount
            for item in entries
            for posting in item.postings
            if CHART[posting.account] in ("revenue", "contra_revenue")
        ),
        D(0),
    )


@settings(max_examples=100, deadline=None)
@given(
    invoices(),
    st.integers(0, 99_999).map(lambda n: D(n).scaleb(-2)),
    st.one_of(st.none(), st.integers(0, 60)),
)
def test_every_month_bridges_billed_to_recognized(
    invoice: tuple[Invoice, date], tax: D, voided_after: int | None
) -> None:
    generated, billed_on = invoice
    document = _with_tax(generated, tax)
    entries = document_entries(document, billed_on, "invoice:INV-000001")
    billed_on_day = [(billed_on, D(document.total), "invoice:INV-000001")]
    if voided_after is not None:
        note_day = billed_on + timedelta(days=voided_after)
        note = credit_note_of({"number": "CN-000001", "void": True, "lines": []})
        entries += credit_note_entries(note, document, note_day)
        billed_on_day.append((note_day, -D(document.total), "credit_note:CN-000001"))
    kinds = {f"invoice:INV-000001/line:{line.number}": line.kind for line in document.lines}
    causes = {cause_root(item.cause) for item in entries}
    billed_total = recognized_total = D(0)
    for month in MONTHS:
        first, last = month_span(month)
        in_month = sum((amount for day, amount, _ in billed_on_day if first <= day <= last), D(0))
        bridges = revenue_bridge(entries, kinds, {"USD": in_month} if in_month else {}, first, last)
        for bridge in bridges:
            assert bridge.start + sum(line.amount for line in bridge.lines) == bridge.end
            for line in bridge.lines:
                assert line.amount != 0 and set(line.causes) <= causes
            billed_total += bridge.start
            recognized_total += bridge.end
        # the period basis: the invoice (and its note) whenever billed
        period_start = date.fromisoformat(document.period_span().start[:10])
        if first <= period_start <= last:
            documents = {cause for _, _, cause in billed_on_day}
            everything = sum((amount for _, amount, _ in billed_on_day), D(0))
            revenue_bridge(entries, kinds, {"USD": everything}, first, last, documents)
    assert billed_total == sum((amount for _, amount, _ in billed_on_day), D(0))
    assert recognized_total == _recognized(entries)

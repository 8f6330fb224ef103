"""Laws of payments and receivables (core.payments) over random histories of payments,
refunds, write-offs and credit notes: paid + open + written off = billed; nothing open or
paid is ever negative; cash received net of refunds is what is paid plus the credit
balance; every movement balances, and the receivable the movements leave is what is open."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core.payments import (
    NoteChange,
    PaymentError,
    PaymentRecord,
    Receivable,
    decide,
    settle,
)

cents = st.integers(min_value=1, max_value=50_000).map(lambda n: Decimal(n).scaleb(-2))
steps = st.lists(
    st.tuples(
        st.sampled_from(["payment", "overpayment", "refund", "write_off", "note", "void"]),
        cents,
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(total=cents, history=steps)
def test_paid_plus_open_plus_written_off_is_billed(
    total: Decimal, history: list[tuple[str, Decimal]]
) -> None:
    invoice = Receivable("INV-1", "acme", "USD", total, date(2026, 10, 1), 0)
    notes: list[NoteChange] = []
    records: list[PaymentRecord] = []
    for at, (kind, amount) in enumerate(history, start=1):
        if kind in ("note", "void"):
            if kind == "void" and any(note.void for note in notes):
                continue
            signed = -total if kind == "void" else amount
            notes.append(NoteChange(f"CN-{at}", at, signed, kind == "void"))
            continue
        record_kind = "payment" if kind == "overpayment" else kind
        new = PaymentRecord(at, f"p{at}", record_kind, amount, at, kind == "overpayment")  # type: ignore[arg-type]
        try:
            standing, move = decide(invoice, notes, records, new)
        except PaymentError:
            continue
        if new.kind == "write_off":
            new = PaymentRecord(at, new.payment_id, "write_off", standing.written_off, at)
        records.append(new)
        assert move.cash + move.receivable - move.credit_balance + move.bad_debt == 0
    standing, movements = settle(invoice, notes, records)
    if standing.billed >= 0:
        assert standing.paid + standing.open + standing.written_off == standing.billed
    assert min(standing.paid, standing.open, standing.written_off, standing.credit_balance) >= 0
    assert standing.received - standing.refunded == standing.paid + standing.credit_balance
    receivable = standing.billed + sum((m.receivable for m in movements), Decimal(0))
    if standing.billed >= 0:
        assert receivable == standing.open
    cash = sum((m.cash for m in movements), Decimal(0))
    assert cash == standing.received - standing.refunded

"""Payments and receivables, the pure rules (core.payments): states, refunds, write-offs,
overpayment, void notes, movements, aging buckets and the overdue policy."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest

from meterline.core.control_policies import decide as access
from meterline.core.payments import (
    NoteChange,
    OverduePolicy,
    PaymentError,
    PaymentRecord,
    Receivable,
    aging,
    bucket,
    decide,
    overdue,
    overdue_blocks,
    overdue_customers,
    settle,
)

INVOICE = Receivable("INV-000001", "acme", "USD", D("100.00"), date(2026, 10, 1), 0)


def record(number: int, kind: str, amount: str, overpayment: bool = False) -> PaymentRecord:
    return PaymentRecord(number, f"p{number}", kind, D(amount), number * 10, overpayment)  # type: ignore[arg-type]


def test_a_new_invoice_is_open_and_partial_then_full_payments_pay_it() -> None:
    standing, _ = settle(INVOICE, [], [])
    assert (standing.state, standing.open) == ("open", D("100.00"))
    standing, _ = settle(INVOICE, [], [record(1, "payment", "40")])
    assert (standing.state, standing.paid, standing.open) == ("partially_paid", D(40), D(60))
    standing, moves = settle(INVOICE, [], [record(1, "payment", "40"), record(2, "payment", "60")])
    assert (standing.state, standing.open) == ("paid", 0)
    assert [(m.cash, m.receivable) for m in moves] == [(40, -40), (60, -60)]


def test_a_payment_above_the_open_amount_is_refused_unless_declared_an_overpayment() -> None:
    with pytest.raises(PaymentError, match=r"more than the 100\.00 open"):
        decide(INVOICE, [], [], record(1, "payment", "120"))
    standing, move = decide(INVOICE, [], [], record(1, "payment", "120", overpayment=True))
    assert (standing.state, standing.paid, standing.credit_balance) == ("paid", 100, 20)
    assert (move.cash, move.receivable, move.credit_balance) == (120, -100, 20)


def test_a_refund_cannot_exceed_what_was_paid_and_reopens_the_receivable() -> None:
    paid = [record(1, "payment", "100")]
    with pytest.raises(PaymentError, match="more than the 100"):
        decide(INVOICE, [], paid, record(2, "refund", "100.01"))
    standing, move = decide(INVOICE, [], paid, record(2, "refund", "30"))
    assert (standing.state, standing.open, standing.refunded) == ("partially_paid", 30, 30)
    assert (move.cash, move.receivable) == (-30, 30)


def test_a_refund_takes_the_credit_balance_first() -> None:
    paid = [record(1, "payment", "120", overpayment=True)]
    standing, move = decide(INVOICE, [], paid, record(2, "refund", "25"))
    assert (standing.credit_balance, standing.paid, standing.open) == (0, 95, 5)
    assert (move.cash, move.credit_balance, move.receivable) == (-25, -20, 5)


def test_a_write_off_makes_the_invoice_uncollectible_and_closes_it() -> None:
    paid = [record(1, "payment", "30")]
    standing, move = decide(INVOICE, [], paid, record(2, "write_off", "0"))
    assert (standing.state, standing.written_off, standing.open) == ("uncollectible", 70, 0)
    assert (move.receivable, move.bad_debt) == (-70, 70)
    later = [*paid, record(2, "write_off", "70")]
    with pytest.raises(PaymentError, match="uncollectible"):
        decide(INVOICE, [], later, record(3, "payment", "1"))
    with pytest.raises(PaymentError, match="uncollectible already"):
        decide(INVOICE, [], later, record(3, "write_off", "0"))
    with pytest.raises(PaymentError, match="nothing is open"):
        decide(INVOICE, [], [record(1, "payment", "100")], record(2, "write_off", "0"))


def test_a_void_note_moves_what_was_paid_to_the_credit_balance() -> None:
    void = NoteChange("CN-000001", 15, D("-100.00"), True)
    standing, moves = settle(INVOICE, [void], [record(1, "payment", "40")])
    assert (standing.state, standing.billed, standing.paid, standing.credit_balance) == (
        "void",
        0,
        0,
        40,
    )
    assert (moves[-1].kind, moves[-1].receivable, moves[-1].credit_balance) == (
        "reclassify",
        40,
        40,
    )
    with pytest.raises(PaymentError, match="void"):
        decide(INVOICE, [void], [record(1, "payment", "40")], record(2, "payment", "1"))
    refunded, _ = decide(INVOICE, [void], [record(1, "payment", "40")], record(2, "refund", "40"))
    assert refunded.credit_balance == 0


def test_amounts_must_be_positive_and_within_the_minor_unit() -> None:
    for amount in ("0", "-1", "1.001"):
        with pytest.raises(PaymentError) as raised:
            decide(INVOICE, [], [], record(1, "payment", amount))
        assert raised.value.invalid


def test_aging_buckets_by_days_past_due_with_net_terms() -> None:
    assert [bucket(d) for d in (-3, 0, 1, 30, 31, 60, 61, 90, 91)] == [
        "current",
        "current",
        "1-30",
        "1-30",
        "31-60",
        "31-60",
        "61-90",
        "61-90",
        "90+",
    ]
    older = Receivable("INV-000002", "acme", "USD", D("50"), date(2026, 7, 1), 0)
    other = Receivable("INV-000003", "beta", "EUR", D("10"), date(2026, 10, 20), 0)
    standings = [settle(item, [], [])[0] for item in (INVOICE, older, other)]
    rows = aging(standings, date(2026, 11, 15))
    assert [(r.customer, r.currency, r.total) for r in rows] == [
        ("acme", "USD", 150),
        ("beta", "EUR", 10),
    ]
    # net 30: INV-000001 is due 2026-10-31 (15 days past), INV-000002 2026-07-31 (107)
    assert (rows[0].buckets["1-30"], rows[0].buckets["90+"]) == (100, 50)
    assert rows[1].buckets["current"] == 10
    # net 60: INV-000001 is due 2026-11-30 (current), INV-000002 2026-08-30 (77 days)
    net_60 = aging(standings, date(2026, 11, 15), net_days=60)[0].buckets
    assert (net_60["current"], net_60["61-90"]) == (100, 50)


def test_overdue_policy_blocks_only_customers_past_the_limit() -> None:
    older = Receivable("INV-000002", "beta", "USD", D("50"), date(2026, 9, 1), 0)
    standings = [settle(item, [], [])[0] for item in (INVOICE, older)]
    found = overdue(standings, date(2026, 11, 15), days=30)
    assert overdue_customers(found) == ["beta"]
    assert found[0].days_past_due == 45
    policy = OverduePolicy("overdue-30", "block", 30)
    blocks = overdue_blocks(policy, found, 123)
    assert access((blocks["beta"],), None).allowed is False
    assert overdue_blocks(OverduePolicy("warn", "alert", 30), found, 123) == {}
    with pytest.raises(PaymentError):
        OverduePolicy("bad", "pause", 30)  # type: ignore[arg-type]

"""The demo's everyday-billing chapter, after the month is closed: a trial that converted,
a coupon, sales tax, payments (one partial), receivables aging, an overdue customer
denied by its declared ``invoice_overdue`` control until it pays (``dunning_story``), and a
partial credit note; the finance chapter after it
finds them all in the journal and in ``reconcile``.

Everything printed comes from the library calls the CLI makes (``payments record``,
``payments aging``, the access answer, ``invoices credit-note --line``); a rerun on the
same ledger records nothing twice (payment ids are the idempotency keys; the credit note
is issued once).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from rich.console import Console

from meterline.billing.payment_tables import aging_table, standings_table
from meterline.billing.payments import PaymentRequest
from meterline.billing.render import invoice_table
from meterline.billing.service import Billing
from meterline.core import money
from meterline.core.documents import InvoiceLine
from meterline.core.periods import local_date
from meterline.demo.dunning_story import tell_dunning
from meterline.ledger.billing_records import StoredInvoice

TRIAL_CUSTOMER = "wonka-marketing"
COUPON_CUSTOMER = "globex-support"
TAXED_CUSTOMER = "hooli-search"
UNPAID_CUSTOMER = "hooli-search"
PARTIAL_CUSTOMER = "globex-support"
CREDITED_CUSTOMER = "umbrella-health"
AGING_AFTER_DAYS = 45
"""How long after the close the receivables are read: past the net-30 terms."""


def tell_commerce(billing: Billing, console: Console) -> None:
    """The chapter over the month just closed (its period invoices)."""
    invoices = {
        stored.customer: stored for stored in billing.store.invoices() if stored.kind == "period"
    }
    if not invoices:
        return
    _tell_lines(console, invoices)
    _tell_payments(billing, console, invoices)
    _tell_credit_note(billing, console, invoices.get(CREDITED_CUSTOMER))


def _lines_of(stored: StoredInvoice | None, kind: str) -> list[InvoiceLine]:
    if stored is None:
        return []
    return [line for line in stored.record.lines if line.kind == kind]


def _tell_lines(console: Console, invoices: dict[str, StoredInvoice]) -> None:
    console.rule("Trials, coupons and tax: declared, not coded")
    trial = invoices.get(TRIAL_CUSTOMER)
    if trial is not None and _lines_of(trial, "trial"):
        console.print(
            f"{TRIAL_CUSTOMER} started a 14-day trial: its usage in the trial is given back by"
            " trial lines, and the team fee is charged from the conversion instant only."
        )
        console.print(invoice_table(trial.record))
    for line in _lines_of(invoices.get(COUPON_CUSTOMER), "coupon"):
        console.print(
            f"{COUPON_CUSTOMER} redeemed LAUNCH20 (20% for 3 periods) on top of its negotiated"
            f" 10%: {line.description} = {line.amount} USD."
        )
    for line in _lines_of(invoices.get(TAXED_CUSTOMER), "tax"):
        console.print(
            f"{TAXED_CUSTOMER} is taxed in California: {line.description} ="
            f" {line.amount} USD, booked as tax payable, not revenue."
        )


def _tell_payments(billing: Billing, console: Console, invoices: dict[str, StoredInvoice]) -> None:
    console.rule("Payments and receivables")
    for customer, stored in sorted(invoices.items()):
        total = Decimal(stored.record.total)
        if customer == UNPAID_CUSTOMER or total <= 0:
            continue
        amount = total
        if customer == PARTIAL_CUSTOMER:
            amount = money.round_amount(total / 2, "USD")
        request = PaymentRequest(
            stored.invoice_id, f"demo-{stored.invoice_id}", "payment", amount, method="wire"
        )
        billing.record_payment(request)
    console.print(
        f"Payments recorded against the month's invoices: {PARTIAL_CUSTOMER} paid half,"
        f" {UNPAID_CUSTOMER} nothing, the others in full (each payment id recorded once)."
    )
    console.print(standings_table([standing for standing, _ in billing.receivables()]))
    issued = min(local_date("UTC", stored.finalized_at_us) for stored in invoices.values())
    on = issued + timedelta(days=AGING_AFTER_DAYS)
    console.print(aging_table(billing.aging(on), on))
    console.print(
        f"On {on}, {UNPAID_CUSTOMER}'s invoice is {AGING_AFTER_DAYS - 30} days past due (net"
        f" 30); its contract declares a control {{key: dunning, policy: invoice_overdue,"
        " days: 10, actions: \\[block, alert]}, which the live engine evaluates like any other:"
    )
    tell_dunning(billing, console, UNPAID_CUSTOMER, on)


def _tell_credit_note(billing: Billing, console: Console, stored: StoredInvoice | None) -> None:
    if stored is None:
        return
    console.rule("A partial credit note")
    notes = billing.store.credit_notes(stored.invoice_id)
    if not notes:
        usage = _lines_of(stored, "usage")
        if not usage:
            return
        largest = max(usage, key=lambda line: line.amount)
        billing.credit_note(stored.invoice_id, "a disputed batch of jobs", lines=[largest.number])
        notes = billing.store.credit_notes(stored.invoice_id)
    note = notes[-1].record
    console.print(
        f"{note.number} credits line {note.lines[0].credits_line} of"
        f" {stored.invoice_id} ({stored.customer}): {note.total} {note.currency};"
        " the invoice is never edited; the journal reverses that line's revenue and"
        " receivable on the note's day."
    )

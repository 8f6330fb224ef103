"""Unbilled receivable at each period end against the invoices that bill it.

What a period earns before it is invoiced (usage, fees for days served, discounts, what
credits settled, grants bought in it, amounts billed early netted back) sits in unbilled
receivable until the period's invoice is billed, the day it is finalized. So at the end
of a period's last day each customer's unbilled receivable, per currency, must equal what
the invoices of its ended periods that are not billed yet will bill for service up to
then: their lines, less late-usage ``adjustment`` lines (earned the day they are billed),
``tax`` lines (billed to receivable and tax payable) and fees for service starting after
that day. A difference means a movement landed in
the wrong period (the check that finds credit consumption journalled a day late).

A credit note issued after a period's end reverses lines of the period's invoice as of
their service days (``core.books``), so until it is issued it counts too: a void note as
its invoice's lines negated, a note for chosen lines or an amount as its own lines (those
without a service span are earned the day the note is issued).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, localcontext

from meterline.core.books import day_of, last_day
from meterline.core.documents import (
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    line_service,
)
from meterline.core.journal import UNBILLED, JournalEntry, trial_balance
from meterline.core.money import MONEY_CONTEXT

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class PeriodEnd:
    """A customer's unbilled receivable at the end of ``day`` (a period's last day), and
    what the invoices not billed by then say it must be."""

    customer: str
    currency: str
    day: date
    unbilled: Decimal
    invoiced: Decimal

    @property
    def agrees(self) -> bool:
        return self.unbilled == self.invoiced


@dataclass(frozen=True, slots=True)
class IssuedNote:
    """A credit note as the check reads it: the note, its invoice and the day issued."""

    note: CreditNote
    invoice: Invoice
    issued: date


def period_ends(
    entries: Iterable[JournalEntry],
    documents: Iterable[Invoice],
    notes: Sequence[IssuedNote] = (),
) -> list[PeriodEnd]:
    """Every finalized period invoice's last service day, per customer and currency, with
    the unbilled receivable the journal holds then and what the invoices (and the credit
    notes not issued by then) say it holds."""
    periods = [d for d in documents if not d.kind and d.period]
    by_customer: dict[str, list[JournalEntry]] = {}
    for item in entries:
        by_customer.setdefault(item.customer, []).append(item)
    result = []
    for key in sorted({_end_of(d) for d in periods}):
        customer, currency, day = key
        balances = trial_balance(by_customer.get(customer, []), through=day)
        result.append(
            PeriodEnd(
                customer,
                currency,
                day,
                balances.get((UNBILLED, currency), ZERO),
                _invoiced(periods, customer, currency, day)
                + _noted(notes, customer, currency, day),
            )
        )
    return result


def _end_of(document: Invoice) -> tuple[str, str, date]:
    timezone = document.timezone or "UTC"
    return document.customer, document.currency, last_day(document.period_span(), timezone)


def _invoiced(periods: Sequence[Invoice], customer: str, currency: str, day: date) -> Decimal:
    """What the period invoices of ``customer`` in ``currency`` whose period ended by
    ``day`` but that are billed after it bill for service up to ``day``."""
    with localcontext(MONEY_CONTEXT):
        total = ZERO
        for document in periods:
            customer_key, currency_key, ended = _end_of(document)
            if (customer_key, currency_key) != (customer, currency) or ended > day:
                continue
            timezone = document.timezone or "UTC"
            if day_of(str(document.finalized_at), timezone) <= day:
                continue  # billed already: it cleared what it billed
            total += sum((_earned(line, timezone, day) for line in document.lines), ZERO)
        return total


def _noted(notes: Sequence[IssuedNote], customer: str, currency: str, day: date) -> Decimal:
    """What credit notes issued after ``day`` against invoices of periods ended by then
    reverse of service up to ``day``."""
    with localcontext(MONEY_CONTEXT):
        total = ZERO
        for item in notes:
            invoice = item.invoice
            if item.issued <= day or invoice.kind:
                continue
            customer_key, currency_key, ended = _end_of(invoice)
            if (customer_key, currency_key) != (customer, currency) or ended > day:
                continue
            timezone = invoice.timezone or "UTC"
            if item.note.void:
                total -= sum((_earned(line, timezone, day) for line in invoice.lines), ZERO)
            else:
                total += sum(
                    (_earned(line, timezone, day, False) for line in item.note.lines), ZERO
                )
        return total


def _earned(
    line: InvoiceLine | CreditNoteLine, timezone: str, day: date, in_period: bool = True
) -> Decimal:
    """A line's amount if it is earned against unbilled receivable by ``day`` (a line
    without a service span is earned on its period's last day, or, ``in_period`` False,
    the day it is billed)."""
    if line.kind in ("adjustment", "tax"):
        return ZERO  # late usage is earned when billed; tax is owed, never unbilled
    service = line_service(line)
    if service is None and not in_period:
        return ZERO
    if line.kind == "fee" and service and day_of(service.start, timezone) > day:
        return ZERO
    return Decimal(line.amount)

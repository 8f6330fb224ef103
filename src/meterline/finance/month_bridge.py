"""A month's three figures and the bridges between them, over what billing stored (the
shell around ``core.revenue_bridge``).

- **billed**, by ``basis``: ``invoiced``, what the invoices finalized in the month total
  plus the credit notes issued in it (negative), each dated in its invoice's time zone,
  as the journal dates them; ``period``, what the invoices for the month's billing
  periods (a period starting in the month; a purchase invoice by the day it was
  finalized) total, with the credit notes against them, whenever issued;
- **recognized**: what the books (``finance.books``) recognize in the month;
- **list-price charges**: what economics (``finance.economics.usage_slices``) charges
  the month's billing periods at list price, invoiced or drafted.

``month_bridge`` bridges billed to recognized, ``charges_bridge`` list-price charges to
billed (on the ``period`` basis: charges belong to periods); the core files every entry
or line under a reason and checks each bridge closes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, localcontext

from meterline.billing.service import Billing
from meterline.core.books import day_of
from meterline.core.economics import OPEN_PERIOD_INVOICE, UsageSlice
from meterline.core.money import MONEY_CONTEXT
from meterline.core.periods import local_date
from meterline.core.revenue_bridge import (
    DRAFT_PREFIX,
    Bridge,
    charges_bridge,
    revenue_bridge,
)
from meterline.finance.books import Books, build_books
from meterline.finance.reports import month_span

ZERO = Decimal(0)
BASES = ("invoiced", "period")
"""What a bridge's billed figure counts: invoices finalized in the month, or invoices
for its billing periods."""


@dataclass(slots=True)
class Billed:
    """The documents a month's billed figure counts: totals per currency, each line's kind
    and amount by its cause (``invoice:ID/line:N``, ``credit_note:NUMBER/line:N``), and
    every invoice line's kind (for the journal's causes, billed in the month or not)."""

    totals: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    lines: dict[str, dict[str, tuple[str, Decimal]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    line_kinds: dict[str, str] = field(default_factory=dict)
    documents: set[str] = field(default_factory=set)
    numbers: dict[str, str] = field(default_factory=dict)
    """Invoice number -> invoice id (economics names a line's invoice by number)."""


def billed_in(billing: Billing, first: date, last: date, at: int, basis: str) -> Billed:
    """What was billed over [first, last] on ``basis`` (``BASES``), as known at ``at``."""
    if basis not in BASES:
        raise ValueError(f"basis {basis!r} is not one of {', '.join(BASES)}")
    billed = Billed()
    currencies: dict[str, str] = {}
    timezones: dict[str, str] = {}
    with localcontext(MONEY_CONTEXT):
        for stored in billing.store.invoices():
            if stored.finalized_at_us > at:
                continue
            document = stored.record
            cause = f"invoice:{stored.invoice_id}"
            currencies[stored.invoice_id] = document.currency
            timezones[stored.invoice_id] = timezone = document.timezone or "UTC"
            billed.numbers[document.number or stored.invoice_id] = stored.invoice_id
            for line in document.lines:
                billed.line_kinds[f"{cause}/line:{line.number}"] = line.kind
            day = local_date(timezone, stored.finalized_at_us)
            if basis == "period" and document.period:
                day = day_of(document.period.start, timezone)
            if first <= day <= last:
                billed.totals[document.currency] += Decimal(document.total)
                billed.documents.add(cause)
                for line in document.lines:
                    billed.lines[document.currency][f"{cause}/line:{line.number}"] = (
                        line.kind,
                        Decimal(line.amount),
                    )
        for note in billing.store.credit_notes():
            currency = currencies.get(note.invoice_id)
            if note.created_at_us > at or currency is None:
                continue
            if basis == "period":
                counted = f"invoice:{note.invoice_id}" in billed.documents
            else:
                counted = (
                    first <= local_date(timezones[note.invoice_id], note.created_at_us) <= last
                )
            if counted:
                cause = f"credit_note:{note.record.number}"
                billed.totals[currency] += Decimal(note.record.total)
                billed.documents.add(cause)
                for note_line in note.record.lines:
                    billed.lines[currency][f"{cause}/line:{note_line.number}"] = (
                        note_line.kind,
                        Decimal(note_line.amount),
                    )
    return billed


def month_bridge(
    billing: Billing,
    month: str,
    books: Books | None = None,
    at_us: int | None = None,
    basis: str = "invoiced",
) -> list[Bridge]:
    """The bridges (one per currency) from billed to recognized in ``month``
    (``YYYY-MM``) as known at ``at_us`` (now), over ``books`` when given (built as of the
    same instant otherwise), billed on ``basis`` (``BASES``). A month that is not
    ``YYYY-MM``, or an unknown basis, raises ``ValueError``."""
    first, last = month_span(month)
    at = billing.clock() if at_us is None else at_us
    billed = billed_in(billing, first, last, at, basis)
    books = build_books(billing, at) if books is None else books
    documents = billed.documents if basis == "period" else None
    return revenue_bridge(books.entries, billed.line_kinds, billed.totals, first, last, documents)


def charges_bridges(
    billing: Billing, month: str, slices: Iterable[UsageSlice], at_us: int | None = None
) -> list[Bridge]:
    """The bridges (one per currency) from the list-price charges of ``month``'s billing
    periods (``slices``: ``finance.economics.usage_slices`` as of the same instant) to
    what their invoices and credit notes bill (the ``period`` basis)."""
    first, last = month_span(month)
    at = billing.clock() if at_us is None else at_us
    billed = billed_in(billing, first, last, at, "period")
    charges: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    with localcontext(MONEY_CONTEXT):
        for item in slices:
            if not first <= date.fromisoformat(item.period) <= last:
                continue
            if item.invoice == OPEN_PERIOD_INVOICE:
                cause = f"{DRAFT_PREFIX}{item.customer}/{item.period}"
            else:
                invoice = billed.numbers.get(item.invoice, item.invoice)
                cause = f"invoice:{invoice}/line:{item.line}"
            charges[item.currency][cause] += item.list_price_charges
    return [
        charges_bridge(
            charges.get(currency, {}),
            billed.lines.get(currency, {}),
            billed.totals.get(currency, ZERO),
            currency,
            first,
            last,
        )
        for currency in sorted(set(charges) | set(billed.totals))
    ]

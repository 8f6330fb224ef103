"""The lines of a partial credit note: chosen invoice lines, or an amount (pure).

A partial credit note reverses part of a finalized invoice without editing it:

- **by lines**: each chosen line of a charge kind (``CREDITABLE_KINDS``) is credited in
  full, as a line of the same kind with the opposite amount, so the journal reverses the
  very revenue (or contra revenue) account the line booked; what coupons took from it
  (its ``coupons_took``) comes back as a ``coupon`` line, so the note credits what the
  customer paid for the line;
- **by amount**: a pre-tax amount is spread over the invoice's charge lines in proportion
  to their amounts, in whole minor units (``money.allocate``), each share a line of its
  line's kind.

Tax follows: for each of the invoice's tax rates, a ``tax`` line reverses the tax on the
credited amounts with the rate's own rule (exclusive: added back; inclusive: the part
within), rounded as ``core.tax`` rounds. A line is credited at most once, and the notes of
an invoice never credit more than its charges (``CreditNoteError`` names what is left).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from msgspec import UNSET
from msgspec.structs import replace

from meterline.core.documents import (
    CreditNote,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    MeterUsageLine,
    TaxLine,
    TrialLine,
    decimal_text,
)
from meterline.core.errors import MeterlineError
from meterline.core.money import allocate, exact_sum, round_amount
from meterline.core.tax import Taxable, TaxRate, tax_lines

CREDITABLE_KINDS = ("fee", "usage", "trial", "discount", "commitment", "coupon", "adjustment")
"""Invoice lines a partial credit note may reverse: what the service cost."""
ZERO = Decimal(0)


class CreditNoteError(MeterlineError, ValueError):
    """A partial credit note that cannot be issued: a line that is not there or was
    credited already, an amount beyond what is left."""

    code = "invalid_credit_note"
    http_status = 409


def creditable_left(document: Invoice, notes: Sequence[CreditNote]) -> Decimal:
    """What the invoice's charges still hold after its earlier notes' charge lines."""
    charged = exact_sum([line.amount for line in document.lines if _creditable(line.kind)])
    credited = exact_sum(
        [line.amount for note in notes for line in note.lines if _creditable(line.kind)]
    )
    return exact_sum([charged, credited])


def partial_lines(
    document: Invoice,
    notes: Sequence[CreditNote],
    line_numbers: Sequence[int] = (),
    amount: Decimal | None = None,
) -> list[CreditNoteLine]:
    """The credit note's lines (numbered from 1): the credited charges, then the tax they
    carried. Exactly one of ``line_numbers`` and ``amount`` is given."""
    if bool(line_numbers) == (amount is not None):
        raise CreditNoteError("give the lines to credit or an amount, not both or neither")
    if any(note.void for note in notes):
        raise CreditNoteError(f"invoice {document.number} is void")
    currency = document.currency
    credited = _by_lines(document, notes, line_numbers) if line_numbers else []
    if amount is not None:
        credited = _by_amount(document, notes, amount, currency)
    lines = credited + _tax_back(document, credited, currency)
    return [replace(line, number=number) for number, line in enumerate(lines, start=1)]


def _by_lines(
    document: Invoice, notes: Sequence[CreditNote], numbers: Sequence[int]
) -> list[CreditNoteLine]:
    by_number = {line.number: line for line in document.lines}
    done = {
        line.credits_line
        for note in notes
        for line in note.lines
        if isinstance(line.credits_line, int)
    }
    result = []
    for number in sorted(set(numbers)):
        line = by_number.get(number)
        if line is None or not _creditable(line.kind):
            raise CreditNoteError(f"line {number}: the invoice has no charge line {number}")
        if number in done:
            raise CreditNoteError(f"line {number}: credited already")
        result.append(_reversal(line, -line.amount))
        took = round_amount(Decimal(line.coupons_took or 0), document.currency)
        if took:
            result.append(
                CreditNoteLine(
                    number=0,
                    kind="coupon",
                    description=f"Coupons on line {number}, given back with it",
                    amount=decimal_text(took),
                    credits_line=number,
                )
            )
    return result


def _by_amount(
    document: Invoice, notes: Sequence[CreditNote], amount: Decimal, currency: str
) -> list[CreditNoteLine]:
    if amount <= 0 or round_amount(amount, currency) != amount:
        raise CreditNoteError(f"amount: {amount} is not a positive amount of {currency}")
    left = creditable_left(document, notes)
    if amount > left:
        raise CreditNoteError(f"amount: {amount} is more than the {left} left to credit")
    charges = [line for line in document.lines if _creditable(line.kind) and line.amount > 0]
    shares = allocate(amount, [line.amount for line in charges], currency)
    return [_reversal(line, -share) for line, share in zip(charges, shares, strict=True) if share]


def _reversal(line: InvoiceLine, amount: Decimal) -> CreditNoteLine:
    return CreditNoteLine(
        number=0,
        kind=line.kind,
        description=f"Credit of line {line.number}: {line.description}",
        amount=decimal_text(amount),
        credits_line=line.number,
        meter=line.meter if isinstance(line, MeterUsageLine | TrialLine) else UNSET,
    )


def _tax_back(
    document: Invoice, credited: Sequence[CreditNoteLine], currency: str
) -> list[CreditNoteLine]:
    rates = [
        TaxRate(line.tax, Decimal(line.percent), line.inclusive)
        for line in document.lines
        if isinstance(line, TaxLine)
    ]
    taxables = [
        Taxable(index, line.kind, None, None, line.amount) for index, line in enumerate(credited)
    ]
    applying = {taxable.key: rates for taxable in taxables}
    result = []
    for found in tax_lines(taxables, applying, currency):
        result.append(
            CreditNoteLine(
                number=0,
                kind="tax",
                description=f"Tax back: {found.description()}",
                amount=decimal_text(found.amount),
                tax=found.rate.name,
                percent=decimal_text(found.rate.percent),
                inclusive=found.rate.inclusive,
                included=decimal_text(found.included),
            )
        )
    return result


def _creditable(kind: str) -> bool:
    return kind in CREDITABLE_KINDS

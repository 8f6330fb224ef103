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

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

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


def creditable_left(document: Mapping[str, Any], notes: Sequence[Mapping[str, Any]]) -> Decimal:
    """What the invoice's charges still hold after its earlier notes' charge lines."""
    charged = exact_sum([_amount(line) for line in _charges(document["lines"])])
    credited = exact_sum([_amount(line) for note in notes for line in _charges(note["lines"])])
    return exact_sum([charged, credited])


def partial_lines(
    document: Mapping[str, Any],
    notes: Sequence[Mapping[str, Any]],
    line_numbers: Sequence[int] = (),
    amount: Decimal | None = None,
) -> list[dict[str, Any]]:
    """The credit note's lines (numbered from 1): the credited charges, then the tax they
    carried. Exactly one of ``line_numbers`` and ``amount`` is given."""
    if bool(line_numbers) == (amount is not None):
        raise CreditNoteError("give the lines to credit or an amount, not both or neither")
    if any(note.get("void") for note in notes):
        raise CreditNoteError(f"invoice {document['number']} is void")
    currency = str(document["currency"])
    credited = _by_lines(document, notes, line_numbers) if line_numbers else []
    if amount is not None:
        credited = _by_amount(document, notes, amount, currency)
    lines = credited + _tax_back(document, credited, currency)
    return [{**line, "number": number} for number, line in enumerate(lines, start=1)]


def _by_lines(
    document: Mapping[str, Any], notes: Sequence[Mapping[str, Any]], numbers: Sequence[int]
) -> list[dict[str, Any]]:
    by_number = {int(line["number"]): line for line in document["lines"]}
    done = {
        int(line["credits_line"])
        for note in notes
        for line in note["lines"]
        if "credits_line" in line
    }
    result = []
    for number in sorted(set(numbers)):
        line = by_number.get(number)
        if line is None or line["kind"] not in CREDITABLE_KINDS:
            raise CreditNoteError(f"line {number}: the invoice has no charge line {number}")
        if number in done:
            raise CreditNoteError(f"line {number}: credited already")
        result.append(_reversal(line, -_amount(line)))
        took = round_amount(Decimal(str(line.get("coupons_took") or 0)), str(document["currency"]))
        if took:
            result.append(
                {
                    "kind": "coupon",
                    "description": f"Coupons on line {number}, given back with it",
                    "amount": str(took),
                    "credits_line": number,
                }
            )
    return result


def _by_amount(
    document: Mapping[str, Any], notes: Sequence[Mapping[str, Any]], amount: Decimal, currency: str
) -> list[dict[str, Any]]:
    if amount <= 0 or round_amount(amount, currency) != amount:
        raise CreditNoteError(f"amount: {amount} is not a positive amount of {currency}")
    left = creditable_left(document, notes)
    if amount > left:
        raise CreditNoteError(f"amount: {amount} is more than the {left} left to credit")
    charges = [line for line in _charges(document["lines"]) if _amount(line) > 0]
    shares = allocate(amount, [_amount(line) for line in charges], currency)
    return [_reversal(line, -share) for line, share in zip(charges, shares, strict=True) if share]


def _reversal(line: Mapping[str, Any], amount: Decimal) -> dict[str, Any]:
    reversed_line = {
        "kind": line["kind"],
        "description": f"Credit of line {line['number']}: {line['description']}",
        "amount": str(amount),
        "credits_line": int(line["number"]),
    }
    if "meter" in line:
        reversed_line["meter"] = line["meter"]
    return reversed_line


def _tax_back(
    document: Mapping[str, Any], credited: Sequence[Mapping[str, Any]], currency: str
) -> list[dict[str, Any]]:
    rates = [
        TaxRate(str(line["tax"]), Decimal(str(line["percent"])), bool(line.get("inclusive")))
        for line in document["lines"]
        if line["kind"] == "tax"
    ]
    taxables = [
        Taxable(index, str(line["kind"]), None, None, _amount(line))
        for index, line in enumerate(credited)
    ]
    applying = {taxable.key: rates for taxable in taxables}
    result = []
    for found in tax_lines(taxables, applying, currency):
        result.append(
            {
                "kind": "tax",
                "description": f"Tax back: {found.description()}",
                "amount": str(found.amount),
                "tax": found.rate.name,
                "percent": str(found.rate.percent),
                "inclusive": found.rate.inclusive,
                "included": str(found.included),
            }
        )
    return result


def _charges(lines: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [line for line in lines if line["kind"] in CREDITABLE_KINDS]


def _amount(line: Mapping[str, Any]) -> Decimal:
    return Decimal(str(line["amount"]))

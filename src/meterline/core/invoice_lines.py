"""An invoice's lines as the document writes them (pure): numbered from 1, each rounded
once to the currency's minor unit (``money.round_amount``, the plan's rounding mode),
and their total; amounts billed early (``prepaid`` lines, threshold invoices netted) net
no further than the other lines owe (``netted_amounts``), so netting never makes an
invoice negative. A capped ``prepaid`` line shows the ``carried`` surplus, which
``billing.netting`` carries to the customer's next period invoices.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, localcontext
from typing import Any, Protocol

from meterline.core.documents import InvoiceLine, line_of
from meterline.core.money import MONEY_CONTEXT, RoundingMode, round_amount

ZERO = Decimal(0)


class BodyLine(Protocol):
    """What ``numbered_lines`` reads of a line being built (``invoicing._Line``)."""

    @property
    def kind(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def detail(self) -> dict[str, Any]: ...


def numbered_lines(
    body: Sequence[BodyLine], currency: str, rounding: RoundingMode
) -> tuple[list[InvoiceLine], Decimal]:
    """The document's lines, each rounded once and typed as it is numbered, and their
    total. ``prepaid`` lines (amounts billed early) net no more than the other lines owe
    (``netted_amounts``)."""
    rounded = [round_amount(line.amount, currency, rounding) for line in body]
    netted = netted_amounts([line.kind for line in body], rounded)
    lines = []
    total = ZERO
    for number, line in enumerate(body, start=1):
        amount, capped = netted[number - 1], netted[number - 1] != rounded[number - 1]
        with localcontext(MONEY_CONTEXT):
            total += amount
        record: dict[str, Any] = {
            "number": number,
            "kind": line.kind,
            "description": line.description,
            "amount": str(amount),
            "amount_exact": format(amount if capped else line.amount, "f"),
            **line.detail,
        }
        if capped:
            with localcontext(MONEY_CONTEXT):
                record["carried"] = str(amount - rounded[number - 1])
        lines.append(line_of(record))
    return lines, total


def netted_amounts(kinds: Sequence[str], amounts: Sequence[Decimal]) -> list[Decimal]:
    """``amounts`` with each ``prepaid`` one (negative: billed early) capped, in order, at
    what the other lines still owe, so netting never makes an invoice negative (nor more
    negative than its other lines). What a cap leaves (``billed early - netted``) is a
    surplus that carries to the customer's next period invoice (``billing.netting``)."""
    with localcontext(MONEY_CONTEXT):
        owed = sum((a for k, a in zip(kinds, amounts, strict=True) if k != "prepaid"), ZERO)
        result = []
        for kind, amount in zip(kinds, amounts, strict=True):
            if kind == "prepaid":
                amount = -min(-amount, max(ZERO, owed))
                owed += amount
            result.append(amount)
    return result

"""Typed invoices and credit notes from the few fields a test cares about.

Journal and report tests describe an invoice by the fields their rule reads (a line's
kind, amount, service); ``invoice_of`` and ``credit_note_of`` fill the rest of the record
with neutral values (a usage line's service defaults to the invoice's period, which is
what the journal books a line without one against) and type it as the store would.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from meterline.core.documents import CreditNote, Invoice, record_of

NO_LINEAGE = {"events": 0, "first_sequence": None, "last_sequence": None, "merkle_root": ""}
LINE_DEFAULTS: dict[str, dict[str, Any]] = {
    "fee": {"fee": "fee", "plan": "plan@1", "recurrence": "recurring", "timing": "advance"},
    "usage": {"meter": "tokens", "group": {}, "quantity": "0", "price": {}, "lineage": NO_LINEAGE},
    "trial": {"meter": None, "trial_ends": "2026-11-01T00:00:00Z"},
    "discount": {"percent": "0"},
    "commitment": {"minimum": "0", "spent": "0"},
    "coupon": {"coupon": "C", "applies_to": "invoice"},
    "tax": {
        "tax": "tax",
        "percent": "0",
        "inclusive": False,
        "jurisdiction": None,
        "taxable": "0",
        "included": "0",
    },
    "adjustment": {
        "adjusts": {
            "invoice": "INV-000000",
            "from": [0],
            "through": [0],
            "billed_total": "0",
            "rerated_total": "0",
        },
        "lineage": NO_LINEAGE,
    },
    "credit": {"grant": "grant", "unit": "USD", "units": "0", "unit_value": "1"},
    "carried": {"unit": "credits", "units": "0"},
    "overage": {"unit": "credits", "units": "0", "unit_value": "1"},
    "purchase": {"grant": "grant", "unit": "USD"},
    "prepaid": {},
    "threshold": {},
}


def _line(number: int, line: dict[str, Any], period: dict[str, str] | None) -> dict[str, Any]:
    kind = line["kind"]
    filled = {
        "number": number,
        "description": "",
        "amount_exact": line["amount"],
        **LINE_DEFAULTS[kind],
        **line,
    }
    if kind == "usage" and "service" not in line and period is not None:
        filled["service"] = {"start": period["start"], "end": period["end"]}
    if kind == "prepaid" and "billed_early" not in line:
        filled["billed_early"] = str(-Decimal(line["amount"]))
    return filled


def invoice_of(data: dict[str, Any]) -> Invoice:
    """An invoice of ``data`` (lines numbered from 1 unless they say), typed."""
    period = data.get("period")
    if period is not None and "label" not in period:
        period = {**period, "label": period["start"][:10]}
    lines = [_line(line.get("number", n), line, period) for n, line in enumerate(data["lines"], 1)]
    total = sum((Decimal(line["amount"]) for line in lines), Decimal(0))
    filled = {
        "number": "INV-000001",
        "status": "finalized",
        "customer": "acme",
        "currency": "USD",
        "timezone": "UTC",
        "total": str(total),
        "finalized_at": None,
        **data,
        "lines": lines,
    }
    if period is not None:
        filled["period"] = period
    return record_of(filled, Invoice)


def credit_note_of(data: dict[str, Any]) -> CreditNote:
    """A credit note of ``data`` (a line's kind defaults to ``void``), typed."""
    lines = [
        {"number": n, "kind": "void", "description": "", **line}
        for n, line in enumerate(data["lines"], 1)
    ]
    total = sum((Decimal(line["amount"]) for line in lines), Decimal(0))
    filled = {
        "invoice": "INV-000001",
        "customer": "acme",
        "currency": "USD",
        "reason": "",
        "void": False,
        "total": str(total),
        "created_at": "2026-11-01T00:00:00Z",
        **data,
        "lines": lines,
    }
    return record_of(filled, CreditNote)

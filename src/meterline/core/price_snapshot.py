"""A price as plain data, as an invoice line records it so the invoice's hash covers the
very price applied (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from meterline.core.model import Price


def price_snapshot(price: Price) -> dict[str, Any]:
    """The price as plain data (only what is set), so the invoice hash covers it."""
    snapshot: dict[str, Any] = {"meter": price.meter, "model": price.model}
    for name in Price.__slots__:
        value = getattr(price, name)
        if name in ("meter", "model") or value is None or value == () or value == "":
            continue
        if name == "tiers":
            value = [
                {
                    "up_to": None if t.up_to is None else str(t.up_to),
                    "unit_amount": str(t.unit_amount),
                    "flat_amount": str(t.flat_amount),
                }
                for t in value
            ]
        elif name == "matrix":
            value = [["/".join(key), str(amount)] for key, amount in value]
        elif name == "where":
            value = dict(value)
        elif isinstance(value, Decimal):
            if value == 0 and name in ("fixed_fee", "free_units"):
                continue
            value = str(value)
        elif isinstance(value, bool):
            if value:
                continue
        elif isinstance(value, int) and value == 0:
            continue
        snapshot[name] = value
    return snapshot

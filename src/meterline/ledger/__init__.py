"""The event ledger and its persistence.

Owns the append-only, hash-chained record of every accepted usage event. Invariants: no
code path updates or deletes an event; sequences are dense from 1; each record's hash is
``SHA-256(previous hash || canonical bytes)``; an append is atomic and durable (fsync'd)
before it is acknowledged; an event id is stored at most once per customer.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["EventPage", "EventQuery", "Ledger", "LedgerStore", "open_ledger"]

_HOMES = {
    "EventPage": "meterline.ledger.store",
    "EventQuery": "meterline.ledger.store",
    "Ledger": "meterline.ledger.ledger",
    "LedgerStore": "meterline.ledger.store",
    "open_ledger": "meterline.ledger.ledger",
}
"""Where each name lives; loaded on first use (PEP 562), so importing a light module of
this package (``ledger.location``) does not load the stores and their drivers."""


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'meterline.ledger' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from meterline.ledger.ledger import Ledger, open_ledger
    from meterline.ledger.store import EventPage, EventQuery, LedgerStore

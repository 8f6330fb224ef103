"""The event ledger and its persistence.

Owns the append-only, tamper-evident record of every accepted usage event. Invariants: no
code path updates or deletes an event; each partition numbers its events densely from 1;
an event's hash is its RFC 6962 leaf hash, each batch stores the Merkle root of its events
and each partition's batches chain by root (``core.chain``); an append is atomic and
durable before it is acknowledged; an event id is stored at most once per customer.
"""

from typing import TYPE_CHECKING

from meterline.lazy import lazy_exports

__all__ = ["EventPage", "EventQuery", "Ledger", "LedgerStore", "open_ledger"]

_HOMES = {
    "EventPage": "meterline.ledger.store",
    "EventQuery": "meterline.ledger.store",
    "Ledger": "meterline.ledger.event_ledger",
    "LedgerStore": "meterline.ledger.store",
    "open_ledger": "meterline.ledger.event_ledger",
}
"""Where each name lives; loaded on first use (PEP 562), so importing a light module of
this package (``ledger.location``) does not load the stores and their drivers."""


__getattr__ = lazy_exports("meterline.ledger", _HOMES, globals())


if TYPE_CHECKING:
    from meterline.ledger.event_ledger import Ledger, open_ledger
    from meterline.ledger.store import EventPage, EventQuery, LedgerStore

"""The event ledger and its persistence.

Owns the append-only, hash-chained record of every accepted usage event. Invariants: no
code path updates or deletes an event; sequences are dense from 1; each record's hash is
``SHA-256(previous hash || canonical bytes)``; an append is atomic and durable (fsync'd)
before it is acknowledged; an event id is stored at most once per customer.
"""

from meterline.ledger.ledger import Ledger, open_ledger
from meterline.ledger.store import EventPage, EventQuery, LedgerStore

__all__ = ["EventPage", "EventQuery", "Ledger", "LedgerStore", "open_ledger"]

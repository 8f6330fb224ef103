"""The dashboard's derived figures, cached: usage slices, the books and the unbillable
report are derived again only when what they are made of moved (the ledger's cut, the
invoices, credit notes, grants, the pricing revision, or the day: revenue is recognized
by day). Unit economics read the rated-usage buckets (``usage_slices``), but a period
they cannot tell is re-rated from raw events (seconds on a large ledger), so a page load
should not derive them again. The slices take the cached books (one build per version);
the unbillable report extends the last one's ratings with only the new events
(``UnbillableTracker``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meterline.billing.service import Billing
from meterline.billing.unbillable_report import UnbillableTracker
from meterline.core.economics import UsageSlice
from meterline.finance.books import Books, build_books
from meterline.finance.economics import usage_slices
from meterline.ledger.event_ledger import Ledger

CUSTOMER_SLICES_CACHED_MAX = 256
"""Customers whose own slices (``Derived.customer_slices``) are kept at once; past it the
oldest is dropped (a customer's page derives only its own periods, not every customer's)."""


@dataclass
class _Cached:
    version: tuple[Any, ...]
    value: Any


class Derived:
    """Usage slices and the books, derived again only when their inputs moved.

    The caller holds billing's lock for reading (``Billing.lock``); one lock per figure makes
    concurrent page loads wait for one derivation rather than run two.
    """

    def __init__(self, billing: Billing, ledger: Ledger) -> None:
        self.billing = billing
        self.ledger = ledger
        self._slices: _Cached | None = None
        self._customer_slices: dict[str, _Cached] = {}
        self._books: _Cached | None = None
        self._unbillable: _Cached | None = None
        self._unbillable_tracker = UnbillableTracker()  # rates only the events past its cut
        self._slices_lock = threading.Lock()
        self._books_lock = threading.Lock()
        self._unbillable_lock = threading.Lock()

    def version(self) -> tuple[Any, ...]:
        """What the figures are made of: the ledger's cut, the count of invoices, credit
        notes and grants, the pricing revision, and today's date (UTC)."""
        store = self.billing.store
        revision = store.revision()
        return (
            self.ledger.store.cut(),
            len(store.invoices()),
            len(store.credit_notes()),
            len(store.grants()),
            None if revision is None else revision.revision,
            datetime.fromtimestamp(self.billing.clock() / 1e6, UTC).date(),
        )

    def slices(self) -> list[UsageSlice]:
        with self._slices_lock:
            version = self.version()
            if self._slices is None or self._slices.version != version:
                # the cached books: a page showing slices and the journal builds them once
                self._slices = _Cached(version, usage_slices(self.billing, books=self.books()))
            result: list[UsageSlice] = self._slices.value
            return result

    def customer_slices(self, customer: str) -> list[UsageSlice]:
        """``customer``'s slices: taken from every customer's when those are current, else
        derived for this customer alone (its periods, the cached books; equal to its share
        of every customer's: tests/integration/test_economics_batched.py), cached per
        customer under the same version."""
        with self._slices_lock:
            version = self.version()
            if self._slices is not None and self._slices.version == version:
                return [item for item in self._slices.value if item.customer == customer]
            cached = self._customer_slices.pop(customer, None)
            if cached is None or cached.version != version:
                found = usage_slices(self.billing, customer=customer, books=self.books())
                cached = _Cached(version, found)
            self._customer_slices[customer] = cached  # the newest last
            while len(self._customer_slices) > CUSTOMER_SLICES_CACHED_MAX:
                del self._customer_slices[next(iter(self._customer_slices))]
            result: list[UsageSlice] = cached.value
            return result

    def unbillable(self) -> dict[str, Any]:
        """The unbillable usage report of every customer (``billing.unbillable``)."""
        with self._unbillable_lock:
            version = self.version()
            if self._unbillable is None or self._unbillable.version != version:
                report = self._unbillable_tracker.report(self.billing)
                self._unbillable = _Cached(version, report.as_dict())
            result: dict[str, Any] = self._unbillable.value
            return result

    def books(self) -> Books:
        with self._books_lock:
            version = self.version()
            if self._books is None or self._books.version != version:
                self._books = _Cached(version, build_books(self.billing))
            result: Books = self._books.value
            return result

"""The dashboard's derived figures, cached: the books and the unbillable report are
derived again only when what they are made of moved (the ledger's cut, the invoices,
credit notes, grants, the pricing revision, or the day: revenue is recognized by day).
Every customer's unit economics are kept (``finance.kept_economics``: after events
alone, only the customers of the new events are read again; the overview reads lines,
or per-customer summaries by day, not every day slice); a customer's own page derives
only its own slices (``usage_slices`` for one customer, cached per version). Both take
the cached books (one build per version); the unbillable report extends the last one's
ratings with only the new events (``UnbillableTracker``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meterline.billing.service import Billing
from meterline.billing.unbillable_report import UnbillableTracker
from meterline.core.economics import Margin, UsageSlice
from meterline.finance.books import Books, build_books
from meterline.finance.economics import usage_slices
from meterline.finance.kept_economics import KeptEconomics
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
        self.kept = KeptEconomics(billing)
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
        """Every customer's day slices (kept: ``KeptEconomics.slices``)."""
        with self._slices_lock:
            return self.kept.slices(books=self.books())

    def lines(self) -> list[UsageSlice]:
        """Every customer's slices, one per line (kept: ``KeptEconomics.lines``): what any
        summary without ``day`` reads."""
        with self._slices_lock:
            return self.kept.lines(books=self.books())

    def summary(
        self, by: list[str], period: str | None = None, without_meters: frozenset[str] = frozenset()
    ) -> list[Margin]:
        """Every customer's slices summarized (``KeptEconomics.summary``)."""
        with self._slices_lock:
            return self.kept.summary(
                by, books=self.books(), period=period, without_meters=without_meters
            )

    def customer_slices(self, customer: str) -> list[UsageSlice]:
        """``customer``'s slices, derived for this customer alone (its periods, the cached
        books; equal to its share of every customer's:
        tests/integration/test_economics_batched.py), cached per customer under the same
        version."""
        with self._slices_lock:
            version = self.version()
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

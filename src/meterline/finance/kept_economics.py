"""Unit economics kept current in a long-lived process (the dashboard server, ``bench
finance``): each customer's lines (``finance.economics.period_lines``) kept, and read
again only for the customers whose inputs changed.

What a customer's lines (list-price charges, cost, events per day; no revenue) are made
of: its events, the pricing revision, the stored documents (invoices finalized by the
as-of instant, credit notes), the credit records (grants, their voids and adjustments),
and which period is open for each contract at the as-of instant. The rule:

- the revision, the documents, the credit records, the open period set or the as-of day
  (UTC) changed since the last read (``_Inputs``): every customer is read again;
- else, only events were appended (the ledger's cut moved): only the customers of the
  events past the old cut are read again (``ledger.event_reads.customers_between``).

Revenue is not kept with the lines: every read builds (or is given) the books as of its
instant and allocates what they recognized over the kept lines
(``core.economics.lines_with_revenue``), again only for customers whose recognized
amounts or lines changed. Invariant: ``KeptEconomics.lines`` equals
``usage_slices(billing, at, days=False, books=books)`` and ``slices`` equals
``usage_slices(billing, at, books=books)``, the same figures as a fresh full computation
at every read (tests/integration/test_kept_economics.py: random appends, late events, a
price change, a close, reads at advancing clocks). The cut is read before the lines, so
an event appended while they are read is read again next time (never missed).

The caller serializes reads (one lock here; the dashboard holds billing's read lock).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from meterline.billing.context import Loaded, billing_cycle
from meterline.billing.service import Billing
from meterline.core.cuts import Cut
from meterline.core.economics import (
    LineUsage,
    Margin,
    UsageSlice,
    every_day_slice,
    lines_with_revenue,
    merge_margins,
    summarize,
)
from meterline.core.periods import period_containing
from meterline.finance.books import Books, build_books
from meterline.finance.economics import Periods, period_lines, recognized_by_period
from meterline.ledger import event_reads

Recognized = dict[tuple[str, str, str], Decimal]


OpenPeriods = tuple[tuple[str, int], ...]
"""Each contract in force and the start of its period open at an instant."""
_OpenWindow = tuple[int | None, int, int, OpenPeriods]
"""A revision, the instants [from, to) over which the open period set stays the same
under it, and that set."""


def _open_periods(loaded: Loaded | None, at: int) -> _OpenWindow:
    """The open period set at ``at`` and the window of instants it holds over (until a
    period ends or a contract starts)."""
    if loaded is None:
        return (None, at, at + 1, ())
    configuration = loaded.configuration
    found = []
    low, high = -(2**62), 2**62
    for contract in configuration.contracts:
        if contract.start_us > at:
            high = min(high, contract.start_us)
            continue
        period = period_containing(billing_cycle(configuration, contract), at)
        found.append((contract.customer, period.start_us))
        low, high = max(low, period.start_us), min(high, period.end_us)
    return (loaded.revision, low, high, tuple(found))


@dataclass(frozen=True)
class _Inputs:
    """What, besides events, every customer's lines are made of (compared whole)."""

    revision: int | None
    open_periods: OpenPeriods
    invoices: tuple[str, ...]
    credit_notes: tuple[str, ...]
    credit_marks: tuple[int, int]
    day: Any


@dataclass
class _Customer:
    """One customer's kept lines and periods, and what was derived from them since."""

    lines: list[LineUsage]
    periods: Periods
    recognized: Recognized | None = None
    allocated: list[LineUsage] = field(default_factory=list)
    days: list[UsageSlice] | None = None
    summaries: dict[Any, list[Margin]] = field(default_factory=dict)


class KeptEconomics:
    """Every customer's lines of unit economics, kept (see the module)."""

    def __init__(self, billing: Billing) -> None:
        self.billing = billing
        self._inputs: _Inputs | None = None
        self._cut: Cut | None = None
        self._customers: dict[str, _Customer] = {}
        self._credit_marks = (0, 0)
        self._open_window: _OpenWindow | None = None
        self._lock = threading.Lock()
        self.read_customers = 0
        """Customers whose lines the last refresh read (every one on a full read)."""

    def lines(self, at_us: int | None = None, books: Books | None = None) -> list[UsageSlice]:
        """One slice per line with its revenue (``usage_slices(days=False)``'s slices, in
        customer order)."""
        with self._lock:
            customers = self._current(at_us, books)
            return [line.usage for item in customers for line in item.allocated]

    def slices(self, at_us: int | None = None, books: Books | None = None) -> list[UsageSlice]:
        """The day slices with their revenue (``usage_slices``'s, in customer order)."""
        result: list[UsageSlice] = []
        with self._lock:
            for item in self._current(at_us, books):
                if item.days is None:
                    item.days = every_day_slice(item.allocated)
                result += item.days
        return result

    def summary(
        self,
        by: Sequence[str],
        at_us: int | None = None,
        books: Books | None = None,
        period: str | None = None,
        without_meters: Iterable[str] = (),
    ) -> list[Margin]:
        """``summarize(slices, by)`` of the slices of ``period`` (every one when None)
        whose meter is not in ``without_meters``: each customer's summary kept (from its
        lines unless ``by`` has ``day``), added up (``merge_margins``)."""
        skipped = frozenset(without_meters)
        key = (tuple(by), period, skipped)
        parts = []
        with self._lock:
            for item in self._current(at_us, books):
                parts.append(self._summary_of(item, key))
        return merge_margins(parts)

    @staticmethod
    def _summary_of(
        item: _Customer, key: tuple[tuple[str, ...], str | None, frozenset[str]]
    ) -> list[Margin]:
        """``item``'s summary for ``key`` (by, period, meters left out), kept."""
        by, period, skipped = key
        found = item.summaries.get(key)
        if found is None:
            if "day" in by:
                if item.days is None:
                    item.days = every_day_slice(item.allocated)
                chosen = item.days
            else:
                chosen = [line.usage for line in item.allocated]
            found = summarize(
                (
                    one
                    for one in chosen
                    if (period is None or one.period == period) and one.meter not in skipped
                ),
                by,
            )
            item.summaries[key] = found
        return found

    def _current(self, at_us: int | None, books: Books | None) -> list[_Customer]:
        """Every customer's kept lines, current as of ``at_us`` (now), with revenue from
        ``books`` (built as of ``at_us`` when not given), in customer order (the caller
        holds the lock)."""
        at = self.billing.clock() if at_us is None else at_us
        self._refresh(at)
        entries = (books if books is not None else build_books(self.billing, at)).entries
        periods: Periods = {}
        for item in self._customers.values():
            periods.update(item.periods)
        recognized = recognized_by_period(entries, periods)
        customers = [self._customers[name] for name in sorted(self._customers)]
        for item in customers:
            own = {key: recognized[key] for key in item.periods}
            if item.recognized != own:
                item.recognized = own
                item.allocated = lines_with_revenue(item.lines, own)
                item.days = None
                item.summaries = {}
        return customers

    def _refresh(self, at: int) -> None:
        """Read again the lines of every customer whose inputs changed (the module's rule)."""
        cut = self.billing.ledger.store.cut()  # before the lines: nothing appended is missed
        inputs = self._inputs_now(at)
        if inputs != self._inputs or self._cut is None:
            self._customers = {}
            self._read(at, None)
            self.read_customers = len(self._customers)
        elif cut != self._cut:
            changed = event_reads.customers_between(self.billing.context.connection, self._cut, cut)
            for customer in sorted(changed):
                self._customers.pop(customer, None)
                self._read(at, customer)
            self.read_customers = len(changed)
        else:
            self.read_customers = 0
        self._inputs, self._cut = inputs, cut

    def _read(self, at: int, customer: str | None) -> None:
        lines, periods = period_lines(self.billing, at, customer)
        grouped: dict[str, _Customer] = {}
        for key, span in periods.items():
            grouped.setdefault(key[0], _Customer([], {})).periods[key] = span
        for line in lines:
            grouped.setdefault(line.usage.customer, _Customer([], {})).lines.append(line)
        if customer is not None:
            grouped.setdefault(customer, _Customer([], {}))
        self._customers.update(grouped)

    def _inputs_now(self, at: int) -> _Inputs:
        billing = self.billing
        store = billing.store
        loaded = billing.load()
        revision = None if loaded is None else loaded.revision
        window = self._open_window
        if window is None or window[0] != revision or not window[1] <= at < window[2]:
            window = self._open_window = _open_periods(loaded, at)
        open_periods = window[3]
        _, grants, actions = billing.credit_changes_since(*self._credit_marks)
        self._credit_marks = (grants, actions)  # the newest numbers: only new rows next time
        return _Inputs(
            revision,
            open_periods,
            tuple(stored.invoice_id for stored in store.invoices() if stored.finalized_at_us <= at),
            tuple(note.note_id for note in store.credit_notes() if note.created_at_us <= at),
            (grants, actions),
            datetime.fromtimestamp(at / 1e6, UTC).date(),
        )

"""What the ``invoice_overdue`` controls read: each customer's open invoices, and today.

The open invoices of a customer are read from billing (``Billing.receivables``: every
finalized invoice's standing after its payments, refunds, write-offs and credit notes)
when its controls first ask, and kept until something changes them: a payment, refund,
write-off or credit note recorded through this process's billing (its listeners), a
payment recorded by another process (``poll``: the payment records' newest number), or a
new day (``day_turned``: days past due grow, and invoices finalized since are read). The
decision itself stays in ``core.control_policies``; this module only gathers its inputs.

Invariant: an answer is never older than the last change this process heard of, nor
than the day it is asked on (UTC).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from meterline.billing.service import Billing
from meterline.clock import Clock
from meterline.core.control_policies import ControlPolicy, OpenInvoice

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_POLL = 2**62
"""The first poll only learns the newest record (everything older is read when asked)."""


def utc_date(at_us: int) -> date:
    """The UTC date of the instant ``at_us``."""
    return (EPOCH + timedelta(microseconds=at_us)).date()


class Receivables:
    """Each customer's open invoices, cached until they may have changed."""

    def __init__(self, billing: Billing, clock: Clock) -> None:
        self.billing = billing
        self.clock = clock
        self._open: dict[str, tuple[OpenInvoice, ...]] = {}
        self._lock = threading.Lock()
        self._day = utc_date(clock())
        self._payments_seen: int | None = None
        """The newest payment record read (None: not looked yet)."""

    def today(self) -> date:
        return utc_date(self.clock())

    def observed(
        self, customer: str, policies: Iterable[ControlPolicy]
    ) -> tuple[tuple[OpenInvoice, ...], date | None]:
        """(open invoices, today) for ``customer``'s ``invoice_overdue`` controls; nothing
        is read when ``policies`` have none."""
        if not any(policy.kind == "invoice_overdue" for policy in policies):
            return (), None
        return self.open_invoices(customer), self.today()

    def open_invoices(self, customer: str) -> tuple[OpenInvoice, ...]:
        """``customer``'s finalized invoices with an amount open now."""
        with self._lock:
            cached = self._open.get(customer)
        if cached is not None:
            return cached
        found = tuple(
            OpenInvoice(
                standing.receivable.invoice_id,
                standing.receivable.issued,
                standing.open,
                standing.receivable.currency,
            )
            for standing, _ in self.billing.receivables(customer)
            if standing.open > 0 and standing.state not in ("void", "uncollectible")
        )
        with self._lock:
            self._open[customer] = found
        return found

    def forget(self, customer: str | None) -> None:
        """Read ``customer``'s (None: everyone's) open invoices again when next asked."""
        with self._lock:
            if customer is None:
                self._open.clear()
            else:
                self._open.pop(customer, None)

    def day_turned(self) -> bool:
        """True once per new UTC day since this was made: everything is read again."""
        today = self.today()
        with self._lock:
            turned = today != self._day
            self._day = today
        if turned:
            self.forget(None)
        return turned

    def poll(self) -> set[str]:
        """The customers with payment records made since the last poll (by any process);
        their open invoices are read again."""
        first = self._payments_seen is None
        since = FIRST_POLL if self._payments_seen is None else self._payments_seen
        newest, customers = self.billing.payment_records.customers_after(since)
        self._payments_seen = newest
        if first:
            return set()
        for customer in customers:
            self.forget(customer)
        return customers

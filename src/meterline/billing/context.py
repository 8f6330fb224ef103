"""The state every part of billing shares, and the reads they all make of it.

``BillingContext`` holds the ledger, the billing store, the clock, the parsed-revision
cache and the listeners; each responsibility (``revisions``, ``close``, ``drafts``,
``balances``, ``grants``, ``thresholds``, ``late``, ``proofs``, ``credit_notes``, ``audit``)
is a module of functions that take it explicitly, and ``service.Billing`` is the facade.

Invariants: the context reads the clock only through ``clock`` and the events only
through the ledger's reader connection (``connection``) or its store's interface; a
parsed revision is cached under its number and used only while its content hash matches
the stored one. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meterline.billing.errors import BillingError, NotFound
from meterline.billing.locking import ReadersWriterLock
from meterline.billing.unbillable import UnbillableUsage
from meterline.clock import Clock
from meterline.config.schema import parse_configuration
from meterline.core.cuts import Cut
from meterline.core.documents import Invoice
from meterline.core.events import decode_exact
from meterline.core.model import Configuration, Contract
from meterline.core.partitions import partition_of
from meterline.core.periods import BillingCycle, local_date
from meterline.ledger.billing_records import BillingStore, Revision, StoredInvoice
from meterline.ledger.event_ledger import Ledger


@dataclass(frozen=True, slots=True)
class Loaded:
    """A stored revision, parsed."""

    revision: int
    configuration: Configuration
    content_sha256: str


def parse_stored(stored: Revision) -> Loaded:
    """A stored revision, parsed (its content must be a valid configuration)."""
    configuration = parse_configuration(
        decode_exact(stored.content), name=f"revision {stored.revision}"
    )
    return Loaded(stored.revision, configuration, stored.content_sha256.hex())


def billing_cycle(configuration: Configuration, contract: Contract) -> BillingCycle:
    """The contract's cycle: its plan's (at the start), anchored on its local start date."""
    plan = configuration.plan_version(contract.plan, contract.version, contract.start_us)
    if plan is None:
        raise BillingError(f"contract {contract.customer}: plan {contract.plan} not in force")
    return BillingCycle(
        plan.billing.cycle,
        plan.billing.anchor,
        contract.timezone,
        local_date(contract.timezone, contract.start_us),
        plan.billing.every,
    )


def cost_meters(loaded: Loaded | None) -> frozenset[str]:
    """The meters the revision's cost rates read (rated beside the billed ones)."""
    if loaded is None:
        return frozenset()
    return frozenset(rate.meter for rate in loaded.configuration.costs)


def invoice_cut(document: Invoice) -> Cut:
    """The cut an invoice document was rated through (``ledger.through``)."""
    return Cut.from_json(document.through(), "ledger.through")


@dataclass
class BillingContext:
    """What billing's functions share: the ledger, the billing store, the clock, the parsed
    revisions (by number), the listeners and the readers-writer lock."""

    ledger: Ledger
    store: BillingStore
    clock: Clock
    loaded: dict[int, Loaded] = field(default_factory=dict)
    listeners: list[Callable[[str | None], None]] = field(default_factory=list)
    """Told the customer (None: everyone) whose credit or terms just changed."""
    unbillable_listeners: list[Callable[[list[UnbillableUsage]], object]] = field(
        default_factory=list
    )
    """Told the unbillable usage each close met (the server publishes webhooks)."""
    lock: ReadersWriterLock = field(default_factory=ReadersWriterLock)
    """Many readers or one writer of this billing in this process (``billing.locking``)."""
    keeps_buckets: bool = False
    """Whether this billing keeps rated-usage buckets (``billing.buckets.keep_buckets``):
    a revision's buckets are built on first use and when pricing is applied."""

    def changed(self, customer: str | None) -> None:
        for listener in self.listeners:
            listener(customer)

    @property
    def connection(self) -> Any:
        """The ledger's reader connection (rating scans and billing reads)."""
        return self.ledger.store._reader()  # type: ignore[attr-defined]

    def ledger_cut(self) -> Cut:
        """The ledger's current consistent cut: what a close, draft or report reads through."""
        return self.ledger.store.cut()

    def partition(self, customer: str) -> int:
        return partition_of(customer, self.ledger.store.partitions)

    def load(self, revision: int | None = None) -> Loaded | None:
        stored = self.store.revision(revision)
        if stored is None:
            return None
        cached = self.loaded.get(stored.revision)
        if cached is not None and cached.content_sha256 == stored.content_sha256.hex():
            return cached
        loaded = parse_stored(stored)
        self.loaded[stored.revision] = loaded
        return loaded

    def current(self) -> Loaded:
        loaded = self.load()
        if loaded is None:
            raise NotFound("no pricing applied yet (apply a pricing file first)")
        return loaded

    def contract(self, loaded: Loaded, customer: str) -> Contract:
        contract = loaded.configuration.contract(customer)
        if contract is None:
            raise NotFound(f"customer {customer!r} has no contract")
        return contract

    def period_invoices(self, customer: str | None = None) -> list[StoredInvoice]:
        return [i for i in self.store.invoices(customer) if i.kind == "period"]

    def finalized(self, customer: str, period_start_us: int) -> StoredInvoice | None:
        for invoice in self.period_invoices(customer):
            if invoice.period_start_us == period_start_us:
                return invoice
        return None

    def invoice(self, invoice_id: str) -> StoredInvoice:
        stored = self.store.invoice(invoice_id)
        if stored is None:
            raise NotFound(f"no invoice {invoice_id!r}")
        return stored

    def document(self, invoice_id: str) -> Invoice:
        return self.invoice(invoice_id).record

"""Billing: apply pricing, draft and finalize invoices, explain, prove and audit them.

The shell around the pure core: it reads the clock, the ledger and the stored revisions,
asks ``core`` (model, rating, invoicing, lineage) to decide, and stores what it decided.
Every finalized invoice records the configuration revision and the consistent cut of the
ledger it was rated through (``"ledger": {"through": [heads...]}``, ``core.cuts``), so
``audit`` can rebuild it byte for byte from the raw events.

Late events (time in a finalized period, inside a newer cut but outside the cut the
invoice was closed through, in the customer's partition) are never an edit: at the next
close each such period is re-rated through the new cut and
the difference becomes an ``adjustment`` line on the customer's next invoice, its
lineage the late events alone; or, on request, a credit note does the same at once.

Rating one customer never stops another's: ``close`` finalizes every customer it can and
reports each one it could not (``CloseReport.failed``, with the reason), and the events
its ratings could not bill (``CloseReport.unbillable``: see ``billing.unbillable``).

``Billing`` is a facade: each responsibility lives in its own module of functions over
a ``BillingContext`` (``context``): ``revisions`` (apply), ``drafts``, ``close``,
``balances`` (credit books), ``grants``, ``thresholds``, ``late`` (adjustments),
``proofs`` (explain, prove), ``credit_notes``, ``audit``, and ``reads`` (what the live
engine and the API read through billing). Each method here is one delegation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Unpack

from meterline.billing import (
    audit,
    balances,
    buckets,
    close,
    credit_notes,
    drafts,
    grants,
    late,
    payments,
    proofs,
    reads,
    thresholds,
)
from meterline.billing.audit import AuditReport
from meterline.billing.close import CloseReport
from meterline.billing.context import BillingContext, Loaded, billing_cycle, invoice_cut
from meterline.billing.credit_notes import CreditNoteScope
from meterline.billing.credits import CreditInputs
from meterline.billing.documents import CreditPart
from meterline.billing.errors import BillingError, InvalidRequest, NotFound, RatingFailed
from meterline.billing.grants import GrantTerms
from meterline.billing.locking import ReadersWriterLock
from meterline.billing.payments import PaymentRequest, Recorded
from meterline.billing.proofs import Verifier, standalone_verifier
from meterline.billing.revisions import ApplyReport, Change, diff
from meterline.billing.scan import RatingJob
from meterline.billing.unbillable import UnbillableReport, UnbillableUsage
from meterline.clock import Clock, system_clock_us
from meterline.core.credits import Charge, CreditBook
from meterline.core.cuts import Cut
from meterline.core.documents import CREDIT_NOTE_SCHEMA, Invoice
from meterline.core.meters import MeterProblem
from meterline.core.model import Configuration, Contract
from meterline.core.payments import (
    NET_DAYS_DEFAULT,
    AgingRow,
    Movement,
    Overdue,
    OverduePolicy,
    Standing,
)
from meterline.core.periods import BillingPeriod
from meterline.ledger.billing_records import (
    BillingStore,
    CreditAction,
    StoredCreditNote,
    StoredGrant,
    StoredInvoice,
)
from meterline.ledger.event_ledger import Ledger
from meterline.ledger.integrity import inspect_store, open_errors, unreadable
from meterline.ledger.opened_on_use import OpenedOnUse
from meterline.ledger.payment_records import PaymentStore
from meterline.ledger.workspace_records import WorkspaceStore

__all__ = [
    "CREDIT_NOTE_SCHEMA",
    "ApplyReport",
    "AuditReport",
    "Billing",
    "BillingContext",
    "BillingError",
    "Change",
    "CloseReport",
    "CreditPart",
    "InvalidRequest",
    "Loaded",
    "NotFound",
    "RatingFailed",
    "Verifier",
    "audit_ledger",
    "billing_cycle",
    "diff",
    "invoice_cut",
    "open_billing",
    "standalone_verifier",
]


class Billing:
    """Pricing configuration and invoices over one ledger: a facade over the modules of
    ``meterline.billing``, sharing one ``BillingContext``."""

    def __init__(self, ledger: Ledger, store: BillingStore, clock: Clock = system_clock_us):
        self.context = BillingContext(ledger, store, clock)
        self._payments = OpenedOnUse(store.path, PaymentStore)
        self._workspace = OpenedOnUse(store.path, WorkspaceStore)

    @property
    def ledger(self) -> Ledger:
        return self.context.ledger

    @property
    def store(self) -> BillingStore:
        return self.context.store

    @property
    def clock(self) -> Clock:
        return self.context.clock

    @property
    def listeners(self) -> list[Callable[[str | None], None]]:
        """Told the customer (None: everyone) whose credit or terms just changed."""
        return self.context.listeners

    @property
    def unbillable_listeners(self) -> list[Callable[[list[UnbillableUsage]], object]]:
        """Told the unbillable usage each close met (the server publishes webhooks)."""
        return self.context.unbillable_listeners

    @property
    def lock(self) -> ReadersWriterLock:
        """Many readers or one writer in this process (``billing.locking``): callers from
        several threads take ``lock.reading()`` or ``lock.writing()`` around each call."""
        return self.context.lock

    def ledger_cut(self) -> Cut:
        """``BillingContext.ledger_cut``."""
        return self.context.ledger_cut()

    def load(self, revision: int | None = None) -> Loaded | None:
        """``BillingContext.load``."""
        return self.context.load(revision)

    def current(self) -> Loaded:
        """``BillingContext.current``."""
        return self.context.current()

    def apply(
        self,
        text: str,
        name: str = "pricing.yaml",
        dry_run: bool = False,
        allow_retire_all: bool = False,
    ) -> ApplyReport:
        """``buckets.apply_pricing`` (``revisions.apply``, then the revision's buckets)."""
        return buckets.apply_pricing(self.context, text, name, dry_run, allow_retire_all)

    def draft(
        self, customer: str, at_us: int | None = None, from_buckets: bool = False
    ) -> Invoice:
        """``drafts.draft``."""
        return drafts.draft(self.context, customer, at_us, from_buckets)

    def close(self, through_us: int | None = None) -> CloseReport:
        """``close.close`` (the listeners hear of each customer invoiced)."""
        return close.close(self.context, through_us)

    def unbillable(self, customer: str | None = None, at_us: int | None = None) -> UnbillableReport:
        """``close.unbillable``."""
        return close.unbillable(self.context, customer, at_us)

    def credits(self, customer: str, as_of_us: int | None = None) -> dict[str, Any]:
        """``balances.credits``."""
        return balances.credits(self.context, customer, as_of_us)

    def credit_history(self, customer: str, at: int) -> tuple[CreditBook, CreditInputs]:
        """``balances.credit_history``."""
        return balances.credit_history(self.context, customer, at)

    def grant(
        self, customer: str, unit: str, amount: Decimal, reason: str, **terms: Unpack[GrantTerms]
    ) -> tuple[StoredGrant, StoredInvoice | None]:
        """``grants.grant``."""
        return grants.grant(self.context, customer, unit, amount, reason, **terms)

    def void_grant(self, customer: str, grant_id: str, reason: str) -> CreditAction:
        """``grants.void_grant``."""
        return grants.void_grant(self.context, customer, grant_id, reason)

    def adjust_grant(
        self, customer: str, grant_id: str, amount: Decimal, reason: str
    ) -> CreditAction:
        """``grants.adjust_grant``."""
        return grants.adjust_grant(self.context, customer, grant_id, amount, reason)

    def check_thresholds(self, customer: str | None = None) -> list[StoredInvoice]:
        """``thresholds.check_thresholds``."""
        return thresholds.check_thresholds(self.context, customer)

    def true_up(self, customer: str, reason: str, control: str) -> StoredInvoice | None:
        """``thresholds.true_up``."""
        return thresholds.true_up(self.context, customer, reason, control)

    def invoice_cut(self, invoice: StoredInvoice) -> Cut:
        """``late.stored_invoice_cut``."""
        return late.stored_invoice_cut(self.context, invoice)

    def rated_periods(
        self, at_us: int | None = None, customer: str | None = None, from_buckets: bool = False
    ) -> list[tuple[Invoice, RatingJob]]:
        """``drafts.rated_periods``."""
        return drafts.rated_periods(self.context, at_us, customer, from_buckets)

    def event_days(self, customer: str, start_us: int, end_us: int) -> dict[int, int]:
        """``drafts.event_days``."""
        return drafts.event_days(self.context, customer, start_us, end_us)

    def invoice(self, invoice_id: str) -> StoredInvoice:
        """``BillingContext.invoice``."""
        return self.context.invoice(invoice_id)

    def document(self, invoice_id: str) -> Invoice:
        """``BillingContext.document``."""
        return self.context.document(invoice_id)

    def line_events(self, invoice_id: str, line_number: int) -> list[tuple[int, bytes]]:
        """``proofs.line_events``."""
        return proofs.line_events(self.context, invoice_id, line_number)

    def explain(self, invoice_id: str, line_number: int) -> list[dict[str, Any]]:
        """``proofs.explain``."""
        return proofs.explain(self.context, invoice_id, line_number)

    def customer_records(self, customer: str, sequences: list[int]) -> list[dict[str, Any]]:
        """``proofs.customer_records``."""
        return proofs.customer_records(self.context, customer, sequences)

    def proof(self, invoice_id: str, line_number: int, event_id: str) -> dict[str, Any]:
        """``proofs.proof``."""
        return proofs.proof(self.context, invoice_id, line_number, event_id)

    def credit_note(
        self, invoice_id: str, reason: str, **scope: Unpack[CreditNoteScope]
    ) -> StoredCreditNote:
        """``credit_notes.credit_note``."""
        return credit_notes.credit_note(self.context, invoice_id, reason, **scope)

    @property
    def payment_records(self) -> PaymentStore:
        """The payment records beside the invoices (opened on first use)."""
        return self._payments.store()

    def record_payment(self, request: PaymentRequest, customer: str | None = None) -> Recorded:
        """``payments.record``."""
        return payments.record(self.context, self.payment_records, request, customer)

    def invoice_standing(
        self, invoice_id: str, customer: str | None = None, at_us: int | None = None
    ) -> tuple[Standing, list[Movement]]:
        """``payments.standing``."""
        return payments.standing(self.context, self.payment_records, invoice_id, customer, at_us)

    def receivables(
        self, customer: str | None = None, at_us: int | None = None
    ) -> list[tuple[Standing, list[Movement]]]:
        """``payments.standings``."""
        return payments.standings(self.context, self.payment_records, customer, at_us)

    def aging(
        self, on: date, net_days: int = NET_DAYS_DEFAULT, customer: str | None = None
    ) -> list[AgingRow]:
        """``payments.aging_report``."""
        return payments.aging_report(self.context, self.payment_records, on, net_days, customer)

    def overdue(
        self, on: date, days: int, net_days: int = NET_DAYS_DEFAULT, customer: str | None = None
    ) -> list[Overdue]:
        """``payments.overdue_report``."""
        return payments.overdue_report(
            self.context, self.payment_records, on, days, net_days, customer
        )

    def overdue_access(
        self, customer: str, policy: OverduePolicy, on: date, feature: str | None = None
    ) -> dict[str, Any]:
        """``payments.overdue_access``."""
        return payments.overdue_access(
            self.context, self.payment_records, customer, policy, on, feature
        )

    def close_payments(self) -> None:
        """Close the payment records (``ledger.opened_on_use``)."""
        return self._payments.close()

    def close_workspace(self) -> None:
        """Close the workspace records (``ledger.opened_on_use``)."""
        return self._workspace.close()

    @property
    def workspace_records(self) -> WorkspaceStore:
        """The contract workspace's users, proposals and decisions (opened on first use)."""
        return self._workspace.store()

    def audit(self, triggers: bool = True) -> AuditReport:
        """``audit.audit``."""
        return audit.audit(self.context, triggers)

    # -- what the live engine and the API read through billing ------------------------------

    def credit_inputs(
        self,
        configuration: Configuration,
        contract: Contract,
        through_us: int,
        known_at_us: int | None = None,
    ) -> CreditInputs:
        """``balances.credit_inputs``."""
        return balances.credit_inputs(
            self.context, configuration, contract, through_us, known_at_us
        )

    def prior_charges(
        self, configuration: Configuration, contract: Contract, period: BillingPeriod, through: Cut
    ) -> list[Charge]:
        """``balances.prior_charges``."""
        return balances.prior_charges(self.context, configuration, contract, period, through)

    def run_rating_jobs(self, jobs: Iterable[RatingJob]) -> None:
        """``reads.run_rating_jobs``."""
        return reads.run_rating_jobs(self.context, jobs)

    def event_rows_since(
        self, through: Cut, start_us: int
    ) -> Iterator[tuple[int, int, str, str, int, bytes]]:
        """``reads.event_rows_since``."""
        return reads.event_rows_since(self.context, through, start_us)

    def events_stamped_from(self, at_us: int) -> list[tuple[str, int]]:
        """``reads.events_stamped_from``."""
        return reads.events_stamped_from(self.context, at_us)

    def unbillable_records(
        self, partitions: int, found: Iterable[tuple[str, MeterProblem]]
    ) -> list[UnbillableUsage]:
        """``reads.unbillable_records``."""
        return reads.unbillable_records(self.context, partitions, found)

    def credit_changes_since(self, grants: int, actions: int) -> tuple[set[str], int, int]:
        """``reads.credit_changes_since``."""
        return reads.credit_changes_since(self.context, grants, actions)

    def control_firing_counts(self) -> list[tuple[str, str, int]]:
        """``reads.control_firing_counts``."""
        return reads.control_firing_counts(self.context)


@contextmanager
def open_billing(
    path: str | Path, clock: Clock = system_clock_us, create: bool = True
) -> Iterator[Billing]:
    """Billing over the ledger file at ``path`` (created if missing); closes both stores.
    ``create=False`` (the proof tools) leaves an existing schema as found."""
    from meterline.ledger.event_ledger import open_ledger

    ledger = open_ledger(path, clock=clock, create=create)
    store = BillingStore(path, create=create)
    service = Billing(ledger, store, clock)
    if create:
        buckets.keep_buckets_if_wanted(service.context)
    try:
        yield service
    finally:
        service.close_payments()
        service.close_workspace()
        store.close()
        ledger.close()


def audit_ledger(location: str | Path, clock: Clock = system_clock_us) -> AuditReport:
    """Audit the ledger at ``location`` (``Billing.audit``) without raising on what it
    finds. The store and its append-only triggers are looked at first, and the stores are
    opened without touching the schema (``create=False``: a dropped trigger stays dropped
    for the next look); a store that cannot be read is a ``store`` finding and nothing
    else is checked."""
    found = inspect_store(location)
    if any(finding.check == "store" for finding in found):
        return AuditReport(chain_intact=False, findings=found)
    try:
        with open_billing(location, clock, create=False) as billing:
            report = billing.audit(triggers=False)
    except open_errors() as error:
        return AuditReport(chain_intact=False, findings=[*found, unreadable(location, error)])
    report.findings[:0] = found
    return report

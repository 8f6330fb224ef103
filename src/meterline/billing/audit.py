"""Audit: rebuild every finalized invoice and credit note from the raw events and compare
bytes.

Invariants: each invoice is re-derived from the revision and cut it records and from
what the store held when it was finalized; findings name the first bad item; nothing is
written. A revision is read and parsed once per audit (``_Revisions``, never the
context's cache of parsed revisions), then shared by every invoice rated under it: the
parse of a pricing file with 1,000 contracts costs ~0.2 s, once per invoice before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from meterline.billing import balances, documents, late
from meterline.billing.context import BillingContext, Loaded, invoice_cut, parse_stored
from meterline.billing.credits import CreditInputs, stored_grant
from meterline.billing.documents import credit_cuts
from meterline.billing.scan import RatingJob, run_jobs
from meterline.config.source import ConfigurationError
from meterline.core.cuts import Cut
from meterline.core.documents import (
    AdjustmentLine,
    Adjusts,
    Invoice,
    PrepaidLine,
    PurchaseLine,
    document_data,
)
from meterline.core.events import decode_exact
from meterline.core.findings import Finding, describe_error
from meterline.core.invoicing import invoice_bytes
from meterline.core.model import segments
from meterline.core.periods import BillingPeriod
from meterline.ledger.billing_records import Revision, StoredInvoice, revision_problems
from meterline.ledger.database import database_errors
from meterline.ledger.integrity import ledger_findings
from meterline.ledger.location import describe
from meterline.ledger.parallel_verify import verify_chains_parallel

AUDIT_INVOICES_PER_SCAN = 2_000
"""Invoices re-derived per ledger scan: their rating jobs share one scan of the events
(``run_jobs``, spread over processes when large) instead of one scan each; bounds the
raters held at once."""


@dataclass
class AuditReport:
    """What ``Billing.audit`` found: nothing (passed), or findings, first bad item first."""

    invoices: int = 0
    credit_notes: int = 0
    revisions: int = 0
    chain_intact: bool = True
    findings: list[Finding] = field(default_factory=list)
    unhashed_revisions: list[int] = field(default_factory=list)
    """Revisions stored before ``revision_sha256`` existed: their content is checked, their
    source text is covered by no hash."""

    @property
    def mismatches(self) -> list[str]:
        """The findings as lines of text."""
        return [str(finding) for finding in self.findings]

    @property
    def passed(self) -> bool:
        return self.chain_intact and not self.findings

    @property
    def unreadable(self) -> bool:
        """The store could not be read (a damaged file, an unreachable server)."""
        return any(finding.check == "store" for finding in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "invoices": self.invoices,
            "credit_notes": self.credit_notes,
            "revisions": self.revisions,
            "chain_intact": self.chain_intact,
            "mismatches": self.mismatches,
            "findings": [finding.as_dict() for finding in self.findings],
            "unhashed_revisions": self.unhashed_revisions,
        }


def first_difference(stored: dict[str, Any], rebuilt: dict[str, Any]) -> tuple[int | None, str]:
    """Where a stored invoice and its re-derivation first disagree, compared as JSON data
    (``core.documents.document_data``): the line (None for the document's other fields)
    and how, in words."""
    stored_lines, rebuilt_lines = stored.get("lines", []), rebuilt.get("lines", [])
    for index in range(max(len(stored_lines), len(rebuilt_lines))):
        before = stored_lines[index] if index < len(stored_lines) else None
        after = rebuilt_lines[index] if index < len(rebuilt_lines) else None
        if before != after:
            if before is None or after is None:
                side = "the stored invoice" if after is None else "the ledger's re-derivation"
                return index + 1, f"present only in {side}"
            if not isinstance(before, dict):
                return index + 1, "differs from the ledger's re-derivation (not an object)"
            keys = sorted(set(before) | set(after))
            fields = [k for k in keys if before.get(k) != after.get(k)]
            detail = ", ".join(
                f"{k}: stored {before.get(k)!r} vs ledger {after.get(k)!r}" for k in fields[:3]
            )
            return index + 1, f"differs from the ledger's re-derivation ({detail})"
    for key in sorted(set(stored) | set(rebuilt)):
        if stored.get(key) != rebuilt.get(key):
            return None, f"{key} differs: stored {stored.get(key)!r} vs ledger {rebuilt.get(key)!r}"
    return None, "bytes differ"


def audit(context: BillingContext, triggers: bool = True) -> AuditReport:
    """Re-derive every finalized invoice from the raw ledger and its stored revision;
    check the chain (and PostgreSQL's chain heads), the append-only triggers, every
    revision's hashes, every invoice's bytes and hash, every credit note's hash.

    Never raises on what it reads: each problem is a ``Finding`` naming the first bad
    item. ``triggers=False`` leaves the triggers out, for a caller that looked before
    opening the ledger (``audit_ledger``: opening a SQLite file re-creates them)."""
    report = AuditReport()
    try:
        audit_into(context, report, triggers)
    except database_errors() as error:
        report.findings.append(
            Finding(
                "store",
                f"cannot be read ({describe_error(error)})",
                store=describe(context.store.path),
            )
        )
    return report


def audit_into(context: BillingContext, report: AuditReport, triggers: bool) -> None:
    chain = verify_chains_parallel(context.ledger.store)
    report.chain_intact = chain.intact
    report.findings += ledger_findings(context.ledger.store, chain, triggers)
    first_hashed: int | None = None
    for revision in context.store.revisions():
        report.revisions += 1
        problems = revision_problems(revision)
        if revision.revision_sha256 is not None:
            first_hashed = first_hashed or revision.revision
        elif first_hashed is not None:
            problems.append(
                f"has no revision hash, though revision {first_hashed} before it has one"
            )
        else:
            report.unhashed_revisions.append(revision.revision)
        try:
            decode_exact(revision.content)
        except ValueError as error:
            problems.append(f"content is not valid JSON ({describe_error(error)})")
        if problems:
            report.findings.append(
                Finding("revision", "; ".join(problems), revision=revision.revision)
            )
    chunk: list[StoredInvoice] = []
    revisions = _Revisions(context)
    for stored in context.store.invoices():
        report.invoices += 1
        chunk.append(stored)
        if len(chunk) == AUDIT_INVOICES_PER_SCAN:
            report.findings += audit_invoices(context, chunk, revisions)
            chunk = []
    report.findings += audit_invoices(context, chunk, revisions)
    for note in context.store.credit_notes():
        report.credit_notes += 1
        if hashlib.sha256(note.document).digest() != note.document_sha256:
            report.findings.append(
                Finding("credit note", "document does not match its hash", credit_note=note.note_id)
            )


@dataclass
class _InvoiceAudit:
    """One invoice being audited: its hash check, and either its difference (found
    before any rating) or the re-derivation waiting for the shared scan."""

    stored: StoredInvoice
    hashed: bool
    line: int | None = None
    difference: str | None = None
    pending: _Rederivation | None = None


@dataclass
class _Rederivation:
    """A period invoice's re-derivation before and after its jobs are rated."""

    document: Invoice
    revision: Revision
    loaded: Loaded
    job: RatingJob
    inputs: CreditInputs
    adjustment_jobs: list[tuple[StoredInvoice, Adjusts, RatingJob]]

    def jobs(self) -> list[RatingJob]:
        return [self.job, *[job for _, _, job in self.adjustment_jobs]]


class _Revisions:
    """The revisions one audit has read, each parsed once (by number): the stored row,
    and its parsed configuration or the words saying why it does not parse."""

    def __init__(self, context: BillingContext) -> None:
        self._context = context
        self._read: dict[int, tuple[Revision | None, Loaded | str | None]] = {}

    def get(self, number: int) -> tuple[Revision | None, Loaded | str | None]:
        """``(revision, parsed)``: ``(None, None)`` when it is not stored; ``parsed`` a
        sentence when the content no longer parses."""
        known = self._read.get(number)
        if known is None:
            known = self._read[number] = self._parse(number)
        return known

    def _parse(self, number: int) -> tuple[Revision | None, Loaded | str | None]:
        revision = self._context.store.revision(number)
        if revision is None:
            return None, None
        try:
            return revision, parse_stored(revision)
        except ConfigurationError as error:
            return revision, f"revision {number} no longer parses: {error.errors[0]}"
        except ValueError as error:
            return revision, f"revision {number} no longer decodes ({describe_error(error)})"


def audit_invoices(
    context: BillingContext,
    invoices: list[StoredInvoice],
    revisions: _Revisions | None = None,
) -> list[Finding]:
    """Each invoice's finding (or none), in order: its hash, and its re-derivation from
    the ledger (naming the first line that differs). Every period invoice's rating jobs
    share one ledger scan (``run_jobs``, spread over processes when large); if that scan
    fails on something other than the store, each invoice is re-derived alone, so the
    failure is the finding of the invoice it belongs to. ``revisions``: those this audit
    has parsed already (shared across calls)."""
    revisions = _Revisions(context) if revisions is None else revisions
    audits = [_begin(context, stored, revisions) for stored in invoices]
    pending = [item for item in audits if item.pending is not None]
    jobs = [job for item in audits if item.pending is not None for job in item.pending.jobs()]
    if pending:
        try:
            run_jobs(context.connection, jobs)
        except database_errors():
            raise
        except Exception as error:  # a proof tool reports what it cannot re-derive
            if len(invoices) > 1:
                return [
                    found
                    for stored in invoices
                    for found in audit_invoices(context, [stored], revisions)
                ]
            pending[0].pending = None
            pending[0].difference = _underivable(error)
    findings = []
    for item in audits:
        if item.pending is not None:
            try:
                item.line, item.difference = _finish(context, item.stored, item.pending)
            except database_errors():
                raise
            except Exception as error:
                item.line, item.difference = None, _underivable(error)
        if item.hashed and item.difference is None:
            continue
        problems = ([] if item.hashed else ["document does not match its stored hash"]) + (
            [] if item.difference is None else [item.difference]
        )
        findings.append(
            Finding("invoice", "; ".join(problems), invoice=item.stored.invoice_id, line=item.line)
        )
    return findings


def audit_invoice(context: BillingContext, stored: StoredInvoice) -> list[Finding]:
    """One invoice's finding (or none): ``audit_invoices`` of it alone."""
    return audit_invoices(context, [stored])


def _underivable(error: Exception) -> str:
    return f"cannot be re-derived from the ledger ({describe_error(error)})"


def _begin(context: BillingContext, stored: StoredInvoice, revisions: _Revisions) -> _InvoiceAudit:
    """An invoice's hash check, its document decoded, and what needs no rating: an
    off-cycle invoice's check, or the jobs re-deriving a period invoice."""
    item = _InvoiceAudit(stored, hashlib.sha256(stored.document).digest() == stored.document_sha256)
    try:
        document = stored.record
    except msgspec.ValidationError as error:
        item.difference = f"document is not an invoice ({error})"
        return item
    except (msgspec.DecodeError, ValueError) as error:
        item.difference = f"document is not valid JSON ({describe_error(error)})"
        return item
    try:
        if stored.kind != "period":
            item.line, item.difference = audit_off_cycle(context, stored, document)
        else:
            started = _start_rederivation(context, stored, document, revisions)
            if isinstance(started, _Rederivation):
                item.pending = started
            else:
                item.line, item.difference = started
    except database_errors():
        raise
    except Exception as error:  # a proof tool reports what it cannot re-derive
        item.difference = _underivable(error)
    return item


def _start_rederivation(
    context: BillingContext, stored: StoredInvoice, document: Invoice, revisions: _Revisions
) -> _Rederivation | tuple[int | None, str | None]:
    """The jobs rebuilding a period invoice from the events and its revision, or where
    it cannot be rebuilt (the first line that differs, or None, and how)."""
    revision, loaded = revisions.get(stored.revision)
    if revision is None:
        return None, f"configuration revision {stored.revision} is missing"
    if not isinstance(loaded, Loaded):
        return None, str(loaded)
    if not document.configuration or (document.configuration.hash != revision.content_sha256.hex()):
        return None, "rated under a configuration whose content has since changed"
    contract = loaded.configuration.contract(stored.customer)
    if contract is None:
        return None, f"no contract for {stored.customer} in revision {stored.revision}"
    period = BillingPeriod(stored.period_start_us, stored.period_end_us)
    spans = segments(loaded.configuration, contract, period.start_us, period.end_us)
    inputs = balances.credit_inputs(
        context, loaded.configuration, contract, period.end_us - 1, stored.finalized_at_us
    )
    job = RatingJob(
        stored.customer,
        period,
        spans,
        invoice_cut(document),
        loaded.configuration,
        cuts=credit_cuts(inputs, period, contract.timezone),
    )
    adjustment_jobs = []
    for line in document.lines:
        if not isinstance(line, AdjustmentLine):
            continue
        adjusts = line.adjusts
        previous = context.store.invoice(adjusts.invoice)
        if previous is None:
            return line.number, f"adjusts unknown invoice {adjusts.invoice}"
        rerate, _ = late.rerate(
            context, previous, Cut.from_json(adjusts.until(), "adjusts.through")
        )
        adjustment_jobs.append((previous, adjusts, rerate))
    return _Rederivation(document, revision, loaded, job, inputs, adjustment_jobs)


def _finish(
    context: BillingContext, stored: StoredInvoice, rederivation: _Rederivation
) -> tuple[int | None, str | None]:
    """Once its jobs are rated: the rebuilt invoice against the stored bytes (the first
    line that differs, or None, and how; None when the bytes agree)."""
    job, loaded, document = rederivation.job, rederivation.loaded, rederivation.document
    adjustments = []
    for previous, adjusts, rerate in rederivation.adjustment_jobs:
        after = Cut.from_json(adjusts.after(), "adjusts.from")
        pending = [(previous, Decimal(adjusts.billed_total), rerate, after)]
        adjustments.extend(late.late_adjustments(context, pending).get(previous.customer, []))
    finalized_at = stored.finalized_at_us
    credit = None
    if job.cuts is not None:
        prior = balances.charges_stored(context, stored.customer, job.period.start_us)
        credit = balances.credit_part(
            context, job, loaded.configuration, rederivation.inputs, prior, finalized_at
        )
    rebuilt = documents.invoice_document(
        context,
        job,
        loaded.configuration,
        stored.revision,
        rederivation.revision.content_sha256.hex(),
        stored.invoice_id,
        finalized_at,
        adjustments,
        credit,
    )
    if invoice_bytes(rebuilt) == bytes(stored.document):
        return None, None
    return first_difference(document_data(document), document_data(rebuilt))


def audit_off_cycle(
    context: BillingContext, stored: StoredInvoice, document: Invoice
) -> tuple[int | None, str | None]:
    """A purchase invoice must bill its stored grant's price; a threshold invoice must
    be netted by its period's invoice once that is finalized."""
    if stored.kind == "purchase":
        line = document.lines[0]
        if not isinstance(line, PurchaseLine):
            return 1, f"a purchase invoice's line is a {line.kind} line"
        rows = [g for g in context.store.grants(stored.customer) if g.grant_id == line.grant]
        if not rows:
            return 1, f"bills grant {line.grant}, which is not stored"
        paid = stored_grant(rows[0]).paid
        if line.amount_exact != paid:
            return 1, f"bills {document.total} for grant {line.grant}, paid {paid}"
        return None, None
    period = context.finalized(stored.customer, stored.period_start_us)
    if period is None:
        return None, None
    billed_early = [
        line.billed_early
        for line in period.record.lines
        if isinstance(line, PrepaidLine) and line.invoice == stored.invoice_id
    ]
    if billed_early != [document.total]:
        return None, f"not netted exactly once by period invoice {period.invoice_id}"
    return None, None

"""Audit: rebuild every finalized invoice and credit note from the raw events and compare
bytes.

Invariants: each invoice is re-derived from the revision and cut it records and from
what the store held when it was finalized; findings name the first bad item; nothing is
written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from meterline.billing import balances, documents, late
from meterline.billing.context import BillingContext, invoice_cut, parse_stored
from meterline.billing.credits import stored_grant
from meterline.billing.documents import credit_cuts
from meterline.billing.scan import RatingJob, run_jobs
from meterline.config.source import ConfigurationError
from meterline.core.cuts import Cut
from meterline.core.documents import (
    AdjustmentLine,
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
from meterline.ledger.billing_records import StoredInvoice, revision_problems
from meterline.ledger.database import database_errors
from meterline.ledger.integrity import ledger_findings
from meterline.ledger.location import describe


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
    chain = context.ledger.verify()
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
    for stored in context.store.invoices():
        report.invoices += 1
        report.findings.extend(audit_invoice(context, stored))
    for note in context.store.credit_notes():
        report.credit_notes += 1
        if hashlib.sha256(note.document).digest() != note.document_sha256:
            report.findings.append(
                Finding("credit note", "document does not match its hash", credit_note=note.note_id)
            )


def audit_invoice(context: BillingContext, stored: StoredInvoice) -> list[Finding]:
    """One invoice's finding (or none): its hash, and its re-derivation from the ledger
    (naming the first line that differs)."""
    hashed = hashlib.sha256(stored.document).digest() == stored.document_sha256
    line: int | None = None
    try:
        document = stored.record
    except msgspec.ValidationError as error:
        difference: str | None = f"document is not an invoice ({error})"
    except (msgspec.DecodeError, ValueError) as error:
        difference = f"document is not valid JSON ({describe_error(error)})"
    else:
        try:
            if stored.kind != "period":
                line, difference = audit_off_cycle(context, stored, document)
            else:
                line, difference = rederive(context, stored, document)
        except database_errors():
            raise
        except Exception as error:  # a proof tool reports what it cannot re-derive
            difference = f"cannot be re-derived from the ledger ({describe_error(error)})"
    if hashed and difference is None:
        return []
    problems = ([] if hashed else ["document does not match its stored hash"]) + (
        [] if difference is None else [difference]
    )
    return [Finding("invoice", "; ".join(problems), invoice=stored.invoice_id, line=line)]


def rederive(
    context: BillingContext, stored: StoredInvoice, document: Invoice
) -> tuple[int | None, str | None]:
    """Rebuild a period invoice from the events and its revision: the first line that
    differs (or None) and how (None when the bytes agree)."""
    revision = context.store.revision(stored.revision)
    if revision is None:
        return None, f"configuration revision {stored.revision} is missing"
    try:
        loaded = parse_stored(revision)
    except ConfigurationError as error:
        return None, f"revision {stored.revision} no longer parses: {error.errors[0]}"
    except ValueError as error:
        return None, f"revision {stored.revision} no longer decodes ({describe_error(error)})"
    if not document.configuration or (
        document.configuration.hash != revision.content_sha256.hex()
    ):
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
    run_jobs(context.connection, [job, *[j for _, _, j in adjustment_jobs]])
    adjustments = []
    for previous, adjusts, rerate in adjustment_jobs:
        after = Cut.from_json(adjusts.after(), "adjusts.from")
        pending = [(previous, Decimal(adjusts.billed_total), rerate, after)]
        adjustments.extend(late.late_adjustments(context, pending).get(previous.customer, []))
    finalized_at = stored.finalized_at_us
    credit = None
    if job.cuts is not None:
        prior = balances.charges_stored(context, stored.customer, period.start_us)
        credit = balances.credit_part(
            context, job, loaded.configuration, inputs, prior, finalized_at
        )
    rebuilt = documents.invoice_document(
        context,
        job,
        loaded.configuration,
        stored.revision,
        revision.content_sha256.hex(),
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

"""The rows of each exported table, read from the sources of truth as of an instant:
events from the ledger (streamed in ledger order, ``properties`` as the exact hashed
JSON text), invoices, their lines and credit notes from the stored documents, rated
usage from ``finance.economics.usage_slices``, the journal from ``finance.books``, the
workspace's proposals and the configuration revisions from their append-only records
(``billing.workspace``). Each
row is a tuple in its table's column order (instants as integer microseconds, money as
``Decimal`` or its exact text)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import localcontext
from typing import Any

import msgspec

from meterline.billing import workspace
from meterline.billing.service import Billing
from meterline.core.books import instant_us
from meterline.core.documents import (
    AdjustmentLine,
    CarriedLine,
    CreditLine,
    Invoice,
    InvoiceLine,
    MeterUsageLine,
    OverageLine,
    PurchaseLine,
    line_meter,
    line_service,
)
from meterline.core.economics import model_of
from meterline.core.money import MONEY_CONTEXT
from meterline.finance import books
from meterline.finance.economics import usage_slices
from meterline.finance.export_errors import ExportError
from meterline.ledger import event_reads
from meterline.ledger.billing_records import StoredInvoice
from meterline.ledger.database import open_connection


class _Body(msgspec.Struct):
    """The one part of a canonical event body the export needs decoded: ``properties``,
    kept as the exact bytes that were hashed (no re-encoding, no float)."""

    properties: msgspec.Raw = msgspec.Raw(b"{}")


_BODY = msgspec.json.Decoder(_Body)


def _ledger_path(billing: Billing) -> str:
    path = getattr(billing.ledger.store, "path", None)
    if path is None:
        raise ExportError("events: the export reads the events of a SQLite or PostgreSQL ledger")
    return str(path)


def event_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    """Every event received by ``at_us``, in ledger order (partition, then sequence),
    with its hash (``SHA-256(0x00 || body)``, its leaf in its batch's Merkle tree) and its
    partition (a SQLite ledger has one, partition 0)."""
    location = _ledger_path(billing)
    connection = open_connection(location)
    try:
        rows = event_reads.chained_rows(connection, billing.ledger.store.partitions)
        decode = _BODY.decode
        for sequence, event_id, customer, kind, timestamp, received, body, digest, part in rows:
            digest = bytes(digest)
            if received <= at_us:
                properties = bytes(decode(body).properties).decode()
                yield (
                    sequence,
                    event_id,
                    customer,
                    kind,
                    timestamp,
                    received,
                    properties,
                    digest.hex(),
                    part,
                )
    finally:
        connection.close()


def _invoices(billing: Billing, at_us: int) -> Iterator[tuple[StoredInvoice, Invoice]]:
    for stored in billing.store.invoices():
        if stored.finalized_at_us <= at_us:
            yield stored, stored.record


def _optional_us(text: object) -> int | None:
    return None if text is None else instant_us(str(text))


def _ledger_through(document: Invoice) -> str | None:
    """The document's ``ledger.through`` cut as JSON text (None when it records none)."""
    through = document.ledger.through if document.ledger else None
    if through is None or isinstance(through, msgspec.UnsetType):
        return None
    return json.dumps(through, separators=(",", ":"))


def invoice_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for stored, document in _invoices(billing, at_us):
        period = document.period or None
        yield (
            stored.invoice_id,
            stored.kind,
            stored.customer,
            document.currency,
            period.label if period else None,
            _optional_us(period.start if period else None),
            _optional_us(period.end if period else None),
            stored.finalized_at_us,
            str(document.total),
            stored.document_sha256.hex(),
            document.timezone or "UTC",
            _ledger_through(document),
        )


def line_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for stored, document in _invoices(billing, at_us):
        for line in document.lines:
            usage = line if isinstance(line, MeterUsageLine) else None
            service = line_service(line)
            lineage = line.lineage if isinstance(line, MeterUsageLine | AdjustmentLine) else None
            unit, units = _units(line)
            yield (
                stored.invoice_id,
                stored.customer,
                document.currency,
                line.number,
                line.kind,
                line.description,
                line_meter(line),
                model_of(usage.group) if usage else None,
                str(usage.quantity) if usage else None,
                str(line.amount),
                unit,
                units,
                line.grant if isinstance(line, CreditLine | PurchaseLine) else None,
                _optional_us(service.start if service else None),
                _optional_us(service.end if service else None),
                lineage.events if lineage else None,
                lineage.first_sequence if lineage else None,
                lineage.last_sequence if lineage else None,
                lineage.merkle_root if lineage else None,
            )


def _units(line: InvoiceLine) -> tuple[str | None, str | None]:
    """The unit a line counts in (a credit type, a currency) and how many, when it has one."""
    if not isinstance(line, MeterUsageLine | CreditLine | CarriedLine | OverageLine | PurchaseLine):
        return None, None
    unit = line.unit if isinstance(line.unit, str) else None
    return unit, None if isinstance(line.units, msgspec.UnsetType) else str(line.units)


def credit_note_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for note in billing.store.credit_notes():
        if note.created_at_us > at_us:
            continue
        document = note.record
        yield (
            note.note_id,
            note.invoice_id,
            note.customer,
            document.currency,
            note.created_at_us,
            str(document.total),
            document.void,
            document.reason,
        )


def usage_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    with localcontext(MONEY_CONTEXT):
        for item in usage_slices(billing, at_us, recognized=False):
            yield (
                item.customer,
                item.period,
                item.day,
                item.meter,
                item.model,
                item.product,
                item.plan,
                item.currency,
                item.events,
                item.quantity,
                item.list_price_charges,
                item.cost,
                item.list_price_charges - item.cost,
                item.invoice,
                item.line,
            )


_JOURNAL_FIELDS = ("entry_id", "date", "account", "account_kind", *books.POSTING_FIELDS)


def journal_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for row in books.journal_rows(books.build_books(billing, at_us)):
        yield tuple(row[name] for name in _JOURNAL_FIELDS)


def proposal_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    """Each proposal made by ``at_us`` with its decision if taken by then."""
    store = billing.workspace_records
    decisions = store.decisions()
    for stored in store.proposals():
        if stored.created_at_us > at_us:
            continue
        decision = decisions.get(stored.proposal_id)
        if decision is not None and decision.decided_at_us > at_us:
            decision = None
        kind = json.loads(stored.change).get("kind") or "contract"
        yield (
            stored.proposal_id,
            kind,
            stored.customer or None,
            stored.proposer,
            stored.created_at_us,
            stored.reason,
            stored.base_revision,
            stored.change,
            "pending" if decision is None else decision.decision,
            None if decision is None else decision.decider,
            None if decision is None else decision.decided_at_us,
            None if decision is None else decision.reason,
            None if decision is None else decision.revision,
        )


def revision_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    """Each configuration revision applied by ``at_us``, from YAML or the workspace."""
    for origin in workspace.revision_origins(billing.context, billing.workspace_records, at_us):
        stored, proposal, decision = origin.revision, origin.proposal, origin.decision
        yield (
            stored.revision,
            stored.applied_at_us,
            origin.via,
            stored.source_name,
            None if proposal is None else proposal.proposal_id,
            None if proposal is None else proposal.proposer,
            None if decision is None else decision.decider,
            None if proposal is None else proposal.reason,
            None if decision is None else decision.reason,
            stored.content_sha256.hex(),
            None if stored.revision_sha256 is None else stored.revision_sha256.hex(),
        )

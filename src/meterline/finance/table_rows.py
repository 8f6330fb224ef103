"""The rows of each exported table, read from the sources of truth as of an instant:
events from the ledger (streamed in ledger order, ``properties`` as the exact hashed
JSON text), invoices, their lines and credit notes from the stored documents, rated
usage from ``finance.economics.usage_slices``, the journal from ``finance.books``. Each
row is a tuple in its table's column order (instants as integer microseconds, money as
``Decimal`` or its exact text)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import localcontext
from typing import Any

import msgspec

from meterline.billing.service import Billing
from meterline.core.books import instant_us
from meterline.core.economics import model_of
from meterline.core.events import decode_exact
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


def _invoices(billing: Billing, at_us: int) -> Iterator[tuple[StoredInvoice, dict[str, Any]]]:
    for stored in billing.store.invoices():
        if stored.finalized_at_us <= at_us:
            yield stored, decode_exact(stored.document)


def _optional_us(text: object) -> int | None:
    return None if text is None else instant_us(str(text))


def _ledger_through(document: dict[str, Any]) -> str | None:
    """The document's ``ledger.through`` cut as JSON text (None when it records none)."""
    through = (document.get("ledger") or {}).get("through")
    return None if through is None else json.dumps(through, separators=(",", ":"))


def invoice_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for stored, document in _invoices(billing, at_us):
        period = document.get("period") or {}
        yield (
            stored.invoice_id,
            stored.kind,
            stored.customer,
            document["currency"],
            period.get("label"),
            _optional_us(period.get("start")),
            _optional_us(period.get("end")),
            stored.finalized_at_us,
            document["total"],
            stored.document_sha256.hex(),
            document.get("timezone") or "UTC",
            _ledger_through(document),
        )


def line_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for stored, document in _invoices(billing, at_us):
        for line in document["lines"]:
            group = line.get("group")
            service = line.get("service") or {}
            lineage = line.get("lineage") or {}
            yield (
                stored.invoice_id,
                stored.customer,
                document["currency"],
                line["number"],
                line["kind"],
                line.get("description"),
                line.get("meter"),
                model_of(group) if isinstance(group, dict) else None,
                line.get("quantity"),
                line["amount"],
                line.get("unit"),
                line.get("units"),
                line.get("grant"),
                _optional_us(service.get("start")),
                _optional_us(service.get("end")),
                lineage.get("events"),
                lineage.get("first_sequence"),
                lineage.get("last_sequence"),
                lineage.get("merkle_root"),
            )


def credit_note_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for note in billing.store.credit_notes():
        if note.created_at_us > at_us:
            continue
        document = decode_exact(note.document)
        yield (
            note.note_id,
            note.invoice_id,
            note.customer,
            document.get("currency"),
            note.created_at_us,
            document["total"],
            bool(document.get("void")),
            document.get("reason"),
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


_JOURNAL_FIELDS = (
    "entry_id",
    "date",
    "account",
    "account_kind",
    "debit",
    "credit",
    "currency",
    "customer",
    "cause",
    "description",
)


def journal_rows(billing: Billing, at_us: int) -> Iterator[tuple[Any, ...]]:
    for row in books.journal_rows(books.build_books(billing, at_us)):
        yield tuple(row[name] for name in _JOURNAL_FIELDS)

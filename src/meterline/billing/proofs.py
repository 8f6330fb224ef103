"""Explaining and proving invoice lines: the events of a line, their records, and a proof
of an event's inclusion in a line's Merkle root and in the ledger.

Invariants: a line's events are re-derived from the ledger through the invoice's cut;
a proof verifies standalone (``standalone_verifier``) with hashlib alone. Nothing writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from meterline.billing import late
from meterline.billing.context import BillingContext, invoice_cut
from meterline.billing.errors import BillingError, NotFound
from meterline.billing.scan import run_jobs
from meterline.core.cuts import Cut
from meterline.core.documents import AdjustmentLine, Invoice, InvoiceLine, MeterUsageLine
from meterline.core.events import decode_exact, format_timestamp
from meterline.core.lineage import inclusion_path, verify_proof
from meterline.ledger import event_reads

Verifier = Callable[[dict[str, Any]], list[str]]
standalone_verifier: Verifier = verify_proof


def ledger_proof(context: BillingContext, customer: str, event_id: str) -> dict[str, Any] | None:
    """The event's standalone proof against the newest signed checkpoint holding it
    (``meterline.proofs``: event -> batch -> partition -> checkpoint), None when no
    checkpoint holds it yet."""
    from meterline.errors import StoreError
    from meterline.ledger.event_proofs import prove_event

    try:
        proof = prove_event(context.ledger.store, customer, event_id)
    except StoreError:
        return None
    document: dict[str, Any] = json.loads(proof.to_json())
    return document


def invoice_line(context: BillingContext, document: Invoice, line_number: int) -> InvoiceLine:
    lines = document.lines
    if not 1 <= line_number <= len(lines):
        raise NotFound(f"line: invoice {document.number} has lines 1 to {len(lines)}")
    return lines[line_number - 1]


def line_root(line: InvoiceLine) -> str:
    """The Merkle root of the events behind a usage or adjustment line."""
    if not isinstance(line, MeterUsageLine | AdjustmentLine):
        raise BillingError(f"a {line.kind} line has no events")
    return line.lineage.merkle_root


def line_events(
    context: BillingContext, invoice_id: str, line_number: int
) -> list[tuple[int, bytes]]:
    """(sequence, ledger hash) of every event behind a usage or adjustment line: all of
    one customer, so all in its partition."""
    stored = context.invoice(invoice_id)
    document = context.document(invoice_id)
    line = invoice_line(context, document, line_number)
    if isinstance(line, AdjustmentLine):
        adjusts = line.adjusts
        previous = context.invoice(adjusts.invoice)
        return event_reads.customer_event_hashes(
            context.connection,
            previous.customer,
            Cut.from_json(adjusts.after(), "adjusts.from"),
            Cut.from_json(adjusts.until(), "adjusts.through"),
            previous.period_start_us,
            previous.period_end_us,
        )
    if not isinstance(line, MeterUsageLine):
        raise BillingError(f"line {line_number}: a {line.kind} line has no events")
    job, loaded = late.rerate(context, stored, invoice_cut(document), keep_events=True)
    run_jobs(context.connection, [job])
    segment_index = next(
        i
        for i, s in enumerate(job.segments)
        if format_timestamp(s.start_us) == line.service.start
    )
    meter = loaded.configuration.meter(line.meter)
    assert meter is not None
    group = tuple(line.group.get(name) for name in meter.group_by)
    return job.rater.members(segment_index, meter.key, group)


def explain(context: BillingContext, invoice_id: str, line_number: int) -> list[dict[str, Any]]:
    """The events behind a line, as the ledger holds them."""
    members = line_events(context, invoice_id, line_number)
    customer = context.invoice(invoice_id).customer
    return customer_records(context, customer, [sequence for sequence, _ in members])


def customer_records(
    context: BillingContext, customer: str, sequences: list[int]
) -> list[dict[str, Any]]:
    """``customer``'s events at ``sequences`` (within its partition), as the ledger holds
    them, in sequence order."""
    partition = context.partition(customer)
    return records(context, [(partition, sequence) for sequence in sequences])


def records(context: BillingContext, events: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """The named (partition, sequence) events as the ledger holds them, in ledger order."""
    rows = event_reads.records_at(context.connection, context.ledger.store.partitions, events)
    return [
        {
            "partition": partition,
            "sequence": sequence,
            "id": event_id,
            "type": event_type,
            "timestamp": format_timestamp(timestamp_us),
            "properties": decode_exact(body).get("properties", {}),
            "hash": event_hash.hex(),
        }
        for partition, sequence, event_id, event_type, timestamp_us, body, event_hash in rows
    ]


def proof(
    context: BillingContext, invoice_id: str, line_number: int, event_id: str
) -> dict[str, Any]:
    """An inclusion proof that event ``event_id`` is behind line ``line_number``,
    checkable by ``meterline.core.lineage.verify_proof`` alone."""
    stored = context.invoice(invoice_id)
    document = context.document(invoice_id)
    line = invoice_line(context, document, line_number)
    members = line_events(context, invoice_id, line_number)
    found = event_reads.event_by_id(
        context.connection, context.ledger.store.partitions, stored.customer, event_id
    )
    if found is None:
        raise NotFound(f"event {event_id!r}: no such event for {stored.customer}")
    partition, sequence, body, event_hash = found
    hashes = [h for _, h in members]
    positions = [i for i, (s, _) in enumerate(members) if s == sequence]
    if not positions:
        raise NotFound(f"event {event_id!r} is not behind line {line_number}")
    index = positions[0]
    return {
        "event": {
            "partition": partition,
            "sequence": sequence,
            "body": bytes(body).decode(),
            "hash": bytes(event_hash).hex(),
        },
        "ledger_proof": ledger_proof(context, stored.customer, event_id),
        "leaf_index": index,
        "tree_size": len(hashes),
        "path": [h.hex() for h in inclusion_path(hashes, index)],
        "line_root": line_root(line),
        "line_number": line_number,
        "invoice": {
            "id": invoice_id,
            "hash": stored.document_sha256.hex(),
            "document": bytes(stored.document).decode(),
        },
    }

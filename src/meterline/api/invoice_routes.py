"""One finalized invoice over HTTP: its stored bytes, the ledger events behind a line,
an event's inclusion proof, and credit notes.

As ``billing_routes``: thin over ``Billing`` (a dependency), calls in a worker thread
under its lock (a credit note holds it alone). Tenancy: an invoice of another customer
than a bound key's answers exactly as one that does not exist (404).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from meterline.api.answers import ENCODER, HttpError, json_answer, raw_json, stored_bytes
from meterline.api.billing_routes import AUTH
from meterline.api.dependencies import (
    BillingDependency,
    ServicesDependency,
    caller,
    read,
    write,
)
from meterline.api.openapi import Amount, Reason, json_body
from meterline.api.reading import json_body as read_json_body
from meterline.api.services import Services
from meterline.billing.service import Billing, NotFound
from meterline.core.documents import Invoice, InvoiceLine
from meterline.core.money import MoneyError, to_bounded_amount
from meterline.keys import Principal
from meterline.ledger.billing_records import StoredInvoice
from meterline.ledger.store import SEQUENCE_MAX

EXPLAIN_PAGE_MAX = 1000
LINE_NUMBER_MAX = 1_000_000
"""The highest invoice line number the lineage routes accept (lines count from 1); an
invoice is one stored document, far smaller than a million lines."""

_EVENTFUL_KINDS = ("usage", "adjustment")

LineNumber = Annotated[
    int, Path(ge=1, le=LINE_NUMBER_MAX, description="the line's number, counting from 1")
]


class CreditNoteRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A credit note: void the whole invoice, credit chosen lines or an amount (each with
    its tax), or settle its late events now."""

    reason: Reason
    void: Annotated[
        bool, msgspec.Meta(description="Credit the whole total; otherwise settle late events")
    ] = False
    lines: Annotated[
        list[Annotated[int, msgspec.Meta(ge=1, le=LINE_NUMBER_MAX)]],
        msgspec.Meta(description="Credit these lines in full, with their tax", max_length=1000),
    ] = msgspec.field(default_factory=list)
    amount: Annotated[
        Amount | None, msgspec.Meta(description="Credit this pre-tax amount over the charges")
    ] = None


router = APIRouter(tags=["billing"])


# -- work done in a worker thread ---------------------------------------------------------


def _visible_invoice(billing: Billing, principal: Principal, invoice_id: str) -> StoredInvoice:
    """The stored invoice if this key may see it; otherwise 404, the same either way."""
    stored = billing.store.invoice(invoice_id)
    if stored is None or principal.customer not in (None, stored.customer):
        raise NotFound(f"no invoice {invoice_id!r}")
    return stored


def _line(document: Invoice, number: int, field: str = "n") -> InvoiceLine:
    """Line ``number`` of ``document`` if it has events behind it; else 404 (no such line)
    or 422 (a line without events: a fee, a discount)."""
    lines = document.lines
    if not 1 <= number <= len(lines):
        raise NotFound(f"line: invoice {document.number} has lines 1 to {len(lines)}")
    line = lines[number - 1]
    if line.kind not in _EVENTFUL_KINDS:
        raise HttpError(
            422,
            "invalid_parameter",
            f"{field}: line {number} is a {line.kind} line; only usage and adjustment"
            " lines have events",
            field=field,
        )
    return line


def _explain(
    services: Services, principal: Principal, invoice_id: str, number: int, after: int, limit: int
) -> dict[str, Any]:
    billing = services.billing
    stored = _visible_invoice(billing, principal, invoice_id)
    _line(stored.record, number)
    sequences: array[int] = services.line_sequences(invoice_id, number)
    start = bisect_right(sequences, after)
    page = sequences[start : start + limit]
    events = billing.customer_records(stored.customer, page.tolist()) if page else []
    more = start + limit < len(sequences)
    return {
        "invoice": invoice_id,
        "line": number,
        "events_total": len(sequences),
        "events": events,
        "next_after_sequence": page[-1] if more else None,
    }


def _proof(
    billing: Billing, principal: Principal, invoice_id: str, number: int, event_id: str
) -> dict[str, Any]:
    stored = _visible_invoice(billing, principal, invoice_id)
    _line(stored.record, number)
    return billing.proof(invoice_id, number, event_id)


def _credit_note(
    billing: Billing,
    principal: Principal,
    invoice_id: str,
    request: CreditNoteRequest,
    amount: Decimal | None,
) -> tuple[str, bytes, bytes]:
    _visible_invoice(billing, principal, invoice_id)
    note = billing.credit_note(
        invoice_id, request.reason, void=request.void, lines=request.lines, amount=amount
    )
    return note.note_id, note.document, note.document_sha256


# -- routes -------------------------------------------------------------------------------


@router.get(
    "/v1/invoices/{invoice_id}",
    summary="A finalized invoice and the SHA-256 of its canonical bytes",
    responses={
        200: {"description": "{invoice: document, sha256: hex}"},
        **AUTH,
        404: {"description": "No such invoice (or not this key's)"},
    },
)
async def get_invoice(request: Request, billing: BillingDependency, invoice_id: str) -> Response:
    principal = await caller(request, "read", "GET invoice")
    stored = await read(billing, _visible_invoice, billing, principal, invoice_id)
    # The stored canonical bytes, spliced in: exactly what the hash covers.
    return raw_json(
        [
            b'{"invoice":',
            stored_bytes(stored.document),
            b',"sha256":"',
            stored.document_sha256.hex().encode(),
            b'"}',
        ]
    )


@router.get(
    "/v1/invoices/{invoice_id}/lines/{n}/events",
    summary="The ledger events behind an invoice line, paged by sequence",
    responses={
        200: {"description": "{events: [...], next_after_sequence: N | null, ...}"},
        400: {"description": "A bad parameter"},
        **AUTH,
        404: {"description": "No such invoice (or not this key's) or line"},
        422: {"description": "A line without events (fee, discount, ...)"},
    },
)
async def explain(
    request: Request,
    services: ServicesDependency,
    invoice_id: str,
    n: LineNumber,
    limit: Annotated[int, Query(ge=1, le=EXPLAIN_PAGE_MAX)] = 100,
    after_sequence: Annotated[
        int,
        Query(ge=0, le=SEQUENCE_MAX, description="cursor: the last sequence of the previous page"),
    ] = 0,
) -> Response:
    principal = await caller(request, "read", "GET line events")
    page = await read(
        services.billing, _explain, services, principal, invoice_id, n, after_sequence, limit
    )
    return json_answer(page)


@router.get(
    "/v1/invoices/{invoice_id}/lines/{n}/events/{event_id}/proof",
    summary="Inclusion proof: event -> line's Merkle root -> invoice hash",
    responses={
        200: {"description": "A proof `meterline.core.lineage.verify_proof` accepts"},
        400: {"description": "A bad line number"},
        **AUTH,
        404: {"description": "No such invoice (or not this key's), line or event"},
        422: {"description": "A line without events (fee, discount, ...)"},
    },
)
async def proof(
    request: Request, billing: BillingDependency, invoice_id: str, n: LineNumber, event_id: str
) -> Response:
    principal = await caller(request, "read", "GET proof")
    return json_answer(await read(billing, _proof, billing, principal, invoice_id, n, event_id))


@router.post(
    "/v1/invoices/{invoice_id}/credit-notes",
    summary="Issue a credit note: void the invoice, credit lines or an amount, or settle its"
    " late events now",
    status_code=201,
    openapi_extra=json_body(CreditNoteRequest, "The credit note"),
    responses={
        201: {"description": "{id, document, sha256}"},
        400: {"description": "Malformed body or an empty reason"},
        **AUTH,
        404: {"description": "No such invoice (or not this key's)"},
        409: {
            "description": "Already void, no late events to settle, a line credited already"
            " or not a charge, or more than is left to credit"
        },
        413: {"description": "Body over 64 KiB"},
        415: {"description": "Not a JSON body"},
    },
)
async def credit_note(request: Request, billing: BillingDependency, invoice_id: str) -> Response:
    principal = await caller(request, "admin", "POST credit note")
    parsed: CreditNoteRequest = await read_json_body(
        request, CreditNoteRequest, "send the credit note as application/json"
    )
    if not parsed.reason.strip():
        raise HttpError(
            400, "invalid_input", "reason: a credit note needs a reason", field="reason"
        )
    try:
        amount = None if parsed.amount is None else to_bounded_amount(parsed.amount, "amount")
    except MoneyError as error:
        raise HttpError(400, "invalid_input", str(error), field="amount") from None
    note_id, document, digest = await write(
        billing, _credit_note, billing, principal, invoice_id, parsed, amount
    )
    return raw_json(
        [
            b'{"id":',
            ENCODER.encode(note_id),
            b',"document":',
            stored_bytes(document),
            b',"sha256":"',
            digest.hex().encode(),
            b'"}',
        ],
        201,
    )

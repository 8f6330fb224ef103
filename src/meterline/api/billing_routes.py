"""Billing over HTTP: pricing revisions, drafts, invoices, lineage, credit notes, audit.

Thin over ``meterline.billing.service.Billing``: authenticate, check scope and tenancy,
parse, call the service in a worker thread, render. Errors are raised, not returned: the
application renders ``HttpError``, ``NotFound`` (404), ``BillingError`` (409) and
``ConfigurationError`` (422) into the one error shape ``{"error": {"code", "message"}}``.

Tenancy: a key bound to a customer sees only that customer's drafts, invoices, lines,
events, proofs and unbillable usage; anything else answers exactly as if it did not
exist (404). Operations
over every customer (applying pricing, reading the pricing file, closing, auditing) refuse
a bound key (403).

Concurrency: every call runs under the billing service's readers-writer lock
(``Billing.lock``, ``billing.locking``): reads share it, apply, close and credit notes take
it alone.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any, ParamSpec, TypeVar

import msgspec
from anyio import to_thread
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from meterline.api.bodies import check_nesting, check_yaml_nesting, nul_field
from meterline.api.openapi import (
    INSTANT_MAX,
    INSTANT_MIN,
    Reason,
    instant_schema,
    json_body,
)
from meterline.billing.line_cache import LineSequences
from meterline.billing.service import Billing, NotFound
from meterline.config.source import RetireAllRefused
from meterline.core.events import decode_exact, format_timestamp, timestamp_to_us
from meterline.errors import MeterlineError, ScopeError
from meterline.keys import Principal, Scope
from meterline.ledger.billing import StoredInvoice
from meterline.ledger.store import SEQUENCE_MAX

PRICING_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/plain")
PRICING_BYTES_MAX = 1024 * 1024
CREDIT_NOTE_BYTES_MAX = 64 * 1024
EXPLAIN_PAGE_MAX = 1000
LINE_NUMBER_MAX = 1_000_000
"""The highest invoice line number the lineage routes accept (lines count from 1); an
invoice is one stored document, far smaller than a million lines."""

_ENCODER = msgspec.json.Encoder(decimal_format="number")
_JSON = "application/json"
_EVENTFUL_KINDS = ("usage", "adjustment")

P = ParamSpec("P")
T = TypeVar("T")


class HttpError(MeterlineError):
    """An error answer: status, code, message and extra fields of the error object."""

    def __init__(self, status_code: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.http_status = status_code
        self.code = code
        self.message = message
        self.extra = extra


class CreditNoteRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A credit note: void the whole invoice, or settle its late events now."""

    reason: Reason
    void: Annotated[
        bool, msgspec.Meta(description="Credit the whole total; otherwise settle late events")
    ] = False


def _json(payload: Any, status_code: int = 200) -> Response:
    return Response(_ENCODER.encode(payload), status_code, media_type=_JSON)


def _raw_json(parts: list[bytes], status_code: int = 200) -> Response:
    return Response(b"".join(parts), status_code, media_type=_JSON)


def _stored_bytes(value: bytes | str) -> bytes:
    """A stored document as bytes (a row rewritten behind the triggers may hold TEXT)."""
    return value.encode() if isinstance(value, str) else bytes(value)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = HttpError(413, "payload_too_large", f"body exceeds the limit of {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _instant(value: str | None, name: str) -> int | None:
    """A parameter (or body field) as microseconds: RFC 3339 with a zone, from
    ``INSTANT_MIN`` to before ``INSTANT_MAX``; else 400 naming it."""
    if value is None:
        return None
    try:
        moment = msgspec.convert(value, datetime)
    except msgspec.ValidationError:
        raise HttpError(
            400,
            "invalid_parameter",
            f"{name}: {value[:64]!r} is not an RFC 3339 timestamp (e.g. 2026-10-20T00:00:00Z)",
            field=name,
        ) from None
    if moment.tzinfo is None:
        raise HttpError(
            400, "invalid_parameter", f"{name}: needs a time zone (Z or +hh:mm)", field=name
        )
    if not INSTANT_MIN <= moment < INSTANT_MAX:
        raise HttpError(
            400,
            "invalid_parameter",
            f"{name}: must be from {format_timestamp(timestamp_to_us(INSTANT_MIN))} to before"
            f" {format_timestamp(timestamp_to_us(INSTANT_MAX))}",
            field=name,
        )
    return timestamp_to_us(moment)


def _unbound(principal: Principal, action: str) -> None:
    """Refuse a customer-bound key an operation that concerns every customer."""
    if principal.customer is not None:
        raise ScopeError(
            f"key {principal.key_id} is bound to customer {principal.customer!r};"
            f" {action} concerns every customer"
        )


def _no_contract(customer: str) -> NotFound:
    return NotFound(f"customer {customer!r} has no contract")


def _no_invoice(invoice_id: str) -> NotFound:
    return NotFound(f"no invoice {invoice_id!r}")


def _line(document: dict[str, Any], number: int, field: str = "n") -> dict[str, Any]:
    """Line ``number`` of ``document`` if it has events behind it; else 404 (no such line)
    or 422 (a line without events: a fee, a discount)."""
    lines = document["lines"]
    if not 1 <= number <= len(lines):
        raise NotFound(f"line: invoice {document['number']} has lines 1 to {len(lines)}")
    line: dict[str, Any] = lines[number - 1]
    if line["kind"] not in _EVENTFUL_KINDS:
        raise HttpError(
            422,
            "invalid_parameter",
            f"{field}: line {number} is a {line['kind']} line; only usage and adjustment"
            " lines have events",
            field=field,
        )
    return line


_PRICING_BODY: dict[str, Any] = {
    "required": True,
    "description": "The pricing file: YAML text (JSON is YAML too) whose document is a mapping"
    " of meters, credit types, plans and contracts (docs/billing.md); a null document is the"
    " empty mapping. Not UTF-8, or blank: 400; anything that does not validate, a document"
    " that is not a mapping included: 422.",
    "content": {
        media: {"schema": {"type": ["object", "null"], "title": "PricingFile"}}
        for media in PRICING_TYPES
    },
}
LineNumber = Annotated[
    int, Path(ge=1, le=LINE_NUMBER_MAX, description="the line's number, counting from 1")
]
InstantQuery = Annotated[
    str | None,
    Query(json_schema_extra=instant_schema("default now")),
]
"""An optional instant query parameter (``at``, ``as_of``), read by ``_instant``."""

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    403: {"description": "Key lacks the scope, or is bound to a customer"},
}


class BillingRoutes:
    """The billing endpoints over one ``Billing``, as an ``APIRouter`` (``router``)."""

    def __init__(
        self, billing: Billing, principal_of: Callable[[Request], Awaitable[Principal]]
    ) -> None:
        self.billing = billing
        self.principal_of = principal_of
        self._line_sequences = LineSequences(self.billing)
        self.router = APIRouter(tags=["billing"])
        self._add_routes()

    # -- running service calls ----------------------------------------------------------

    def _read_call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self.billing.lock.reading():
            return function(*args, **kwargs)

    def _write_call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self.billing.lock.writing():
            return function(*args, **kwargs)

    async def _read(self, function: Callable[..., T], *args: Any) -> T:
        return await to_thread.run_sync(self._read_call, function, *args)

    async def _write(self, function: Callable[..., T], *args: Any) -> T:
        return await to_thread.run_sync(self._write_call, function, *args)

    async def _caller(
        self, request: Request, needed: Scope, action: str, *, unbound: bool = False
    ) -> Principal:
        principal = await self.principal_of(request)
        principal.require(needed, action)
        if unbound:
            _unbound(principal, action)
        return principal

    # -- work done in a worker thread ---------------------------------------------------

    def _visible_invoice(self, principal: Principal, invoice_id: str) -> StoredInvoice:
        """The stored invoice if this key may see it; otherwise 404, the same either way."""
        stored = self.billing.store.invoice(invoice_id)
        if stored is None or principal.customer not in (None, stored.customer):
            raise _no_invoice(invoice_id)
        return stored

    def _pricing(self) -> dict[str, Any]:
        revision = self.billing.store.revision()
        if revision is None:
            raise NotFound("no pricing applied yet: POST the pricing file to /v1/pricing")
        return {
            "revision": revision.revision,
            "applied_at": format_timestamp(revision.applied_at_us),
            "sha256": revision.content_sha256.hex(),
            "source_name": revision.source_name,
            "source_text": revision.source_text,
        }

    def _draft(self, principal: Principal, customer: str, at_us: int | None) -> dict[str, Any]:
        if principal.customer not in (None, customer):
            raise _no_contract(customer)
        return self.billing.draft(customer, at_us)

    def _invoices(self, principal: Principal, customer: str) -> list[dict[str, Any]]:
        if principal.customer not in (None, customer):
            raise _no_contract(customer)
        result = []
        for stored in self.billing.store.invoices(customer):
            document = decode_exact(stored.document)
            result.append(
                {
                    "id": stored.invoice_id,
                    "kind": stored.kind,
                    "period_start": format_timestamp(stored.period_start_us),
                    "period_end": format_timestamp(stored.period_end_us),
                    "total": document["total"],
                    "currency": document["currency"],
                    "sha256": stored.document_sha256.hex(),
                }
            )
        return result

    def _sequences(self, invoice_id: str, number: int) -> array[int]:
        """The ledger sequences behind a finalized line, ascending (cached: immutable)."""
        return self._line_sequences(invoice_id, number)

    def _explain(
        self, principal: Principal, invoice_id: str, number: int, after: int, limit: int
    ) -> dict[str, Any]:
        stored = self._visible_invoice(principal, invoice_id)
        _line(decode_exact(stored.document), number)
        sequences = self._sequences(invoice_id, number)
        start = bisect_right(sequences, after)
        page = sequences[start : start + limit]
        events = self.billing.customer_records(stored.customer, page.tolist()) if page else []
        more = start + limit < len(sequences)
        return {
            "invoice": invoice_id,
            "line": number,
            "events_total": len(sequences),
            "events": events,
            "next_after_sequence": page[-1] if more else None,
        }

    def _proof(
        self, principal: Principal, invoice_id: str, number: int, event_id: str
    ) -> dict[str, Any]:
        stored = self._visible_invoice(principal, invoice_id)
        _line(decode_exact(stored.document), number)
        return self.billing.proof(invoice_id, number, event_id)

    def _credit_note(
        self, principal: Principal, invoice_id: str, request: CreditNoteRequest
    ) -> tuple[str, bytes, bytes]:
        self._visible_invoice(principal, invoice_id)
        note = self.billing.credit_note(invoice_id, request.reason, void=request.void)
        return note.note_id, note.document, note.document_sha256

    def _unbillable(self, principal: Principal, customer: str | None) -> dict[str, Any]:
        if principal.customer is not None:
            if customer not in (None, principal.customer):
                raise _no_contract(customer or "")
            customer = principal.customer
        return self.billing.unbillable(customer).as_dict()

    def _audit(self) -> dict[str, Any]:
        return self.billing.audit().as_dict()

    # -- routes -------------------------------------------------------------------------

    def _add_routes(self) -> None:
        router = self.router
        billing = self.billing

        @router.post(
            "/v1/pricing",
            summary="Apply a pricing file (or plan it with dry_run)",
            openapi_extra={"requestBody": _PRICING_BODY},
            responses={
                200: {"description": "Changes, customers affected, simulation; the revision"},
                400: {"description": "Empty, non-UTF-8 or nested too deep; or a bad parameter"},
                **_AUTH,
                409: {"description": "The service cannot apply it now"},
                413: {"description": "Pricing file over 1 MiB"},
                415: {"description": "Not a YAML (or plain text) body"},
                422: {
                    "description": "Invalid configuration (every error names file:line: path),"
                    " or a file that would retire every meter, plan and contract"
                    " (retires_everything: never applied over HTTP)"
                },
            },
        )
        async def apply_pricing(
            request: Request,
            dry_run: Annotated[bool, Query(description="plan and simulate; store nothing")] = False,
            name: Annotated[
                str, Query(min_length=1, max_length=256, description="file name in errors")
            ] = "pricing.yaml",
        ) -> Response:
            await self._caller(request, "admin", "POST /v1/pricing", unbound=True)
            if _media_type(request) not in PRICING_TYPES:
                raise HttpError(
                    415,
                    "unsupported_content_type",
                    f"send the pricing file as one of {', '.join(PRICING_TYPES)}",
                    accepted=list(PRICING_TYPES),
                )
            body = await _read_body(request, PRICING_BYTES_MAX)
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as error:
                raise HttpError(
                    400, "invalid_input", f"body: not UTF-8 text (byte {error.start})"
                ) from None
            if not text.strip():
                raise HttpError(
                    400,
                    "invalid_input",
                    "body: empty; send the whole pricing file (an empty one would retire"
                    " every meter, plan and contract)",
                )
            await to_thread.run_sync(check_yaml_nesting, text)
            run = self._read if dry_run else self._write
            try:
                report = await run(partial(billing.apply, text, name=name, dry_run=dry_run))
            except RetireAllRefused as error:
                # never over HTTP: `meterline apply --allow-retire-all` is the deliberate way
                raise HttpError(422, "retires_everything", error.errors[0]) from None
            return _json(report.as_dict())

        @router.get(
            "/v1/pricing",
            summary="The pricing revision in force",
            responses={
                200: {"description": "revision, applied_at, sha256, source_name, source_text"},
                **_AUTH,
                404: {"description": "No pricing applied yet"},
            },
        )
        async def get_pricing(request: Request) -> Response:
            await self._caller(request, "read", "GET /v1/pricing", unbound=True)
            return _json(await self._read(self._pricing))

        @router.get(
            "/v1/customers/{customer}/invoices/draft",
            summary="Draft invoice for the period containing `at`, recomputed from the ledger",
            responses={
                200: {"description": "The invoice document (the finalized one, once closed)"},
                400: {"description": "`at` is not an RFC 3339 timestamp with a zone"},
                **_AUTH,
                404: {"description": "No such customer (or not this key's)"},
                409: {"description": "No pricing applied, or no contract in force then"},
            },
        )
        async def draft(
            request: Request,
            customer: str,
            at: InstantQuery = None,
        ) -> Response:
            principal = await self._caller(request, "read", "GET draft invoice")
            at_us = _instant(at, "at")
            return _json(await self._read(self._draft, principal, customer, at_us))

        @router.get(
            "/v1/customers/{customer}/invoices",
            summary="A customer's finalized invoices",
            responses={
                200: {"description": "{invoices: [{id, period_start, period_end, total, ...}]}"},
                **_AUTH,
                404: {"description": "Not this key's customer"},
            },
        )
        async def list_invoices(request: Request, customer: str) -> Response:
            principal = await self._caller(request, "read", "GET invoices")
            invoices = await self._read(self._invoices, principal, customer)
            return _json({"invoices": invoices})

        @router.post(
            "/v1/invoices/close",
            summary="Finalize every period that ended by `through` (default now)",
            responses={
                200: {
                    "description": "{finalized: [invoice ids], failed: [{customer, reason,"
                    " period}], unbillable: {events, customers}}: a customer that cannot be"
                    " rated is left out and named, the others are closed"
                },
                400: {"description": "`through` is not an RFC 3339 timestamp with a zone"},
                **_AUTH,
                409: {"description": "No pricing applied, or a concurrent close won"},
            },
        )
        async def close(
            request: Request,
            through: Annotated[
                str | None,
                Query(json_schema_extra=instant_schema("default now (never later than now)")),
            ] = None,
        ) -> Response:
            await self._caller(request, "admin", "POST /v1/invoices/close", unbound=True)
            through_us = _instant(through, "through")
            report = await self._write(billing.close, through_us)
            return _json(
                {
                    "finalized": [invoice.invoice_id for invoice in report],
                    "failed": [failure.as_dict() for failure in report.failed],
                    "unbillable": {
                        "events": len({record.sequence for record in report.unbillable}),
                        "customers": sorted({record.customer for record in report.unbillable}),
                    },
                }
            )

        @router.get(
            "/v1/unbillable",
            summary="Usage no invoice can bill, per customer and reason",
            responses={
                200: {
                    "description": "{events, reasons, customers: [{customer, events, reasons,"
                    " usage: [{event_id, sequence, meter, reason, detail, ...}]}], failed}"
                },
                **_AUTH,
                404: {"description": "Not this key's customer"},
            },
        )
        async def unbillable(
            request: Request,
            customer: Annotated[
                str | None, Query(description="Only this customer's (a bound key: its own)")
            ] = None,
        ) -> Response:
            principal = await self._caller(request, "read", "GET /v1/unbillable")
            return _json(await self._read(self._unbillable, principal, customer))

        @router.get(
            "/v1/invoices/{invoice_id}",
            summary="A finalized invoice and the SHA-256 of its canonical bytes",
            responses={
                200: {"description": "{invoice: document, sha256: hex}"},
                **_AUTH,
                404: {"description": "No such invoice (or not this key's)"},
            },
        )
        async def get_invoice(request: Request, invoice_id: str) -> Response:
            principal = await self._caller(request, "read", "GET invoice")
            stored = await self._read(self._visible_invoice, principal, invoice_id)
            # The stored canonical bytes, spliced in: exactly what the hash covers.
            return _raw_json(
                [
                    b'{"invoice":',
                    _stored_bytes(stored.document),
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
                **_AUTH,
                404: {"description": "No such invoice (or not this key's) or line"},
                422: {"description": "A line without events (fee, discount, ...)"},
            },
        )
        async def explain(
            request: Request,
            invoice_id: str,
            n: LineNumber,
            limit: Annotated[int, Query(ge=1, le=EXPLAIN_PAGE_MAX)] = 100,
            after_sequence: Annotated[
                int,
                Query(
                    ge=0,
                    le=SEQUENCE_MAX,
                    description="cursor: the last sequence of the previous page",
                ),
            ] = 0,
        ) -> Response:
            principal = await self._caller(request, "read", "GET line events")
            page = await self._read(self._explain, principal, invoice_id, n, after_sequence, limit)
            return _json(page)

        @router.get(
            "/v1/invoices/{invoice_id}/lines/{n}/events/{event_id}/proof",
            summary="Inclusion proof: event -> line's Merkle root -> invoice hash",
            responses={
                200: {"description": "A proof `meterline.core.lineage.verify_proof` accepts"},
                400: {"description": "A bad line number"},
                **_AUTH,
                404: {"description": "No such invoice (or not this key's), line or event"},
                422: {"description": "A line without events (fee, discount, ...)"},
            },
        )
        async def proof(
            request: Request, invoice_id: str, n: LineNumber, event_id: str
        ) -> Response:
            principal = await self._caller(request, "read", "GET proof")
            return _json(await self._read(self._proof, principal, invoice_id, n, event_id))

        @router.post(
            "/v1/invoices/{invoice_id}/credit-notes",
            summary="Issue a credit note: void the invoice, or settle its late events now",
            status_code=201,
            openapi_extra=json_body(CreditNoteRequest, "The credit note"),
            responses={
                201: {"description": "{id, document, sha256}"},
                400: {"description": "Malformed body or an empty reason"},
                **_AUTH,
                404: {"description": "No such invoice (or not this key's)"},
                409: {"description": "Already void, or no late events to settle"},
                413: {"description": "Body over 64 KiB"},
                415: {"description": "Not a JSON body"},
            },
        )
        async def credit_note(request: Request, invoice_id: str) -> Response:
            principal = await self._caller(request, "admin", "POST credit note")
            media = _media_type(request)
            if media != _JSON and not media.endswith("+json"):
                raise HttpError(
                    415,
                    "unsupported_content_type",
                    "send the credit note as application/json",
                    accepted=[_JSON],
                )
            body = await _read_body(request, CREDIT_NOTE_BYTES_MAX)
            check_nesting(body)
            field = nul_field(body)
            if field is not None:
                raise HttpError(
                    400, "invalid_input", f"{field}: must not contain NUL (U+0000)", field=field
                )
            try:
                parsed = msgspec.json.decode(body, type=CreditNoteRequest)
            except msgspec.ValidationError as error:
                raise HttpError(400, "invalid_input", f"body: {error}") from None
            except msgspec.DecodeError as error:
                raise HttpError(400, "malformed_json", f"body: {error}") from None
            if not parsed.reason.strip():
                raise HttpError(
                    400, "invalid_input", "reason: a credit note needs a reason", field="reason"
                )
            note_id, document, digest = await self._write(
                self._credit_note, principal, invoice_id, parsed
            )
            return _raw_json(
                [
                    b'{"id":',
                    _ENCODER.encode(note_id),
                    b',"document":',
                    _stored_bytes(document),
                    b',"sha256":"',
                    digest.hex().encode(),
                    b'"}',
                ],
                201,
            )

        @router.get(
            "/v1/audit",
            summary="Re-derive every invoice from the ledger; check chain and hashes",
            responses={
                200: {"description": "passed, counts, chain_intact, mismatches"},
                **_AUTH,
            },
        )
        async def audit(request: Request) -> Response:
            await self._caller(request, "admin", "GET /v1/audit", unbound=True)
            return _json(await self._read(self._audit))

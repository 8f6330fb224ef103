"""Billing over HTTP: pricing revisions, drafts, a customer's invoices, close, unbillable
usage and audit (one invoice, its lines' events and proofs, and credit notes are
``invoice_routes``).

Thin over ``meterline.billing.service.Billing`` (a dependency: ``app.state.services``):
authenticate, check scope and tenancy, parse, call the service in a worker thread under
its readers-writer lock (``Billing.lock``: reads share it; apply and close hold it
alone), render. Errors are raised, not returned: ``meterline.api.failures`` renders
``HttpError``, ``NotFound`` (404), ``BillingError`` (409) and ``ConfigurationError``
(422) into the one error shape ``{"error": {"code", "message"}}``.

Tenancy: a key bound to a customer sees only that customer's drafts, invoices, lines,
events, proofs and unbillable usage; anything else answers exactly as if it did not
exist (404). Operations over every customer (applying pricing, reading the pricing file,
closing, auditing) refuse a bound key (403).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from meterline.api.answers import HttpError, json_answer
from meterline.api.bodies import check_yaml_nesting
from meterline.api.dependencies import BillingDependency, caller, own, read, write
from meterline.api.openapi import instant_schema
from meterline.api.reading import instant, media_type, read_body
from meterline.billing.service import Billing, NotFound
from meterline.config.source import RetireAllRefused
from meterline.core.documents import document_data
from meterline.core.events import format_timestamp
from meterline.keys import Principal

PRICING_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/plain")
PRICING_BYTES_MAX = 1024 * 1024

InstantQuery = Annotated[
    str | None,
    Query(json_schema_extra=instant_schema("default now")),
]
"""An optional instant query parameter (``at``, ``as_of``), read by ``reading.instant``."""

AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    403: {"description": "Key lacks the scope, or is bound to a customer"},
}
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

router = APIRouter(tags=["billing"])


# -- work done in a worker thread ---------------------------------------------------------


def _pricing(billing: Billing) -> dict[str, Any]:
    revision = billing.store.revision()
    if revision is None:
        raise NotFound("no pricing applied yet: POST the pricing file to /v1/pricing")
    return {
        "revision": revision.revision,
        "applied_at": format_timestamp(revision.applied_at_us),
        "sha256": revision.content_sha256.hex(),
        "source_name": revision.source_name,
        "source_text": revision.source_text,
    }


def _draft(
    billing: Billing, principal: Principal, customer: str, at_us: int | None
) -> dict[str, Any]:
    own(principal, customer)
    data: dict[str, Any] = document_data(billing.draft(customer, at_us))
    return data


def _invoices(billing: Billing, principal: Principal, customer: str) -> list[dict[str, Any]]:
    own(principal, customer)
    result = []
    for stored in billing.store.invoices(customer):
        document = stored.record
        result.append(
            {
                "id": stored.invoice_id,
                "kind": stored.kind,
                "period_start": format_timestamp(stored.period_start_us),
                "period_end": format_timestamp(stored.period_end_us),
                "total": str(document.total),
                "currency": document.currency,
                "sha256": stored.document_sha256.hex(),
            }
        )
    return result


def _unbillable(billing: Billing, principal: Principal, customer: str | None) -> dict[str, Any]:
    if principal.customer is not None:
        if customer is not None:
            own(principal, customer)
        customer = principal.customer
    return billing.unbillable(customer).as_dict()


def _audit(billing: Billing) -> dict[str, Any]:
    return billing.audit().as_dict()


async def _pricing_text(request: Request) -> str:
    """The pricing file of a request: YAML (or plain) text, UTF-8, not blank."""
    if media_type(request) not in PRICING_TYPES:
        raise HttpError(
            415,
            "unsupported_content_type",
            f"send the pricing file as one of {', '.join(PRICING_TYPES)}",
            accepted=list(PRICING_TYPES),
        )
    body = await read_body(request, PRICING_BYTES_MAX)
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
    return text


# -- routes -------------------------------------------------------------------------------


@router.post(
    "/v1/pricing",
    summary="Apply a pricing file (or plan it with dry_run)",
    openapi_extra={"requestBody": _PRICING_BODY},
    responses={
        200: {"description": "Changes, customers affected, simulation; the revision"},
        400: {"description": "Empty, non-UTF-8 or nested too deep; or a bad parameter"},
        **AUTH,
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
    billing: BillingDependency,
    dry_run: Annotated[bool, Query(description="plan and simulate; store nothing")] = False,
    name: Annotated[
        str, Query(min_length=1, max_length=256, description="file name in errors")
    ] = "pricing.yaml",
) -> Response:
    await caller(request, "admin", "POST /v1/pricing", every_customer=True)
    text = await _pricing_text(request)
    run = read if dry_run else write
    try:
        report = await run(billing, partial(billing.apply, text, name=name, dry_run=dry_run))
    except RetireAllRefused as error:
        # never over HTTP: `meterline apply --allow-retire-all` is the deliberate way
        raise HttpError(422, "retires_everything", error.errors[0]) from None
    return json_answer(report.as_dict())


@router.get(
    "/v1/pricing",
    summary="The pricing revision in force",
    responses={
        200: {"description": "revision, applied_at, sha256, source_name, source_text"},
        **AUTH,
        404: {"description": "No pricing applied yet"},
    },
)
async def get_pricing(request: Request, billing: BillingDependency) -> Response:
    await caller(request, "read", "GET /v1/pricing", every_customer=True)
    return json_answer(await read(billing, _pricing, billing))


@router.get(
    "/v1/customers/{customer}/invoices/draft",
    summary="Draft invoice for the period containing `at`, recomputed from the ledger",
    responses={
        200: {"description": "The invoice document (the finalized one, once closed)"},
        400: {"description": "`at` is not an RFC 3339 timestamp with a zone"},
        **AUTH,
        404: {"description": "No such customer (or not this key's)"},
        409: {"description": "No pricing applied, or no contract in force then"},
    },
)
async def draft(
    request: Request, billing: BillingDependency, customer: str, at: InstantQuery = None
) -> Response:
    principal = await caller(request, "read", "GET draft invoice")
    at_us = instant(at, "at")
    return json_answer(await read(billing, _draft, billing, principal, customer, at_us))


@router.get(
    "/v1/customers/{customer}/invoices",
    summary="A customer's finalized invoices",
    responses={
        200: {"description": "{invoices: [{id, period_start, period_end, total, ...}]}"},
        **AUTH,
        404: {"description": "Not this key's customer"},
    },
)
async def list_invoices(request: Request, billing: BillingDependency, customer: str) -> Response:
    principal = await caller(request, "read", "GET invoices")
    invoices = await read(billing, _invoices, billing, principal, customer)
    return json_answer({"invoices": invoices})


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
        **AUTH,
        409: {"description": "No pricing applied, or a concurrent close won"},
    },
)
async def close(
    request: Request,
    billing: BillingDependency,
    through: Annotated[
        str | None,
        Query(json_schema_extra=instant_schema("default now (never later than now)")),
    ] = None,
) -> Response:
    await caller(request, "admin", "POST /v1/invoices/close", every_customer=True)
    through_us = instant(through, "through")
    report = await write(billing, billing.close, through_us)
    return json_answer(
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
        **AUTH,
        404: {"description": "Not this key's customer"},
    },
)
async def unbillable(
    request: Request,
    billing: BillingDependency,
    customer: Annotated[
        str | None, Query(description="Only this customer's (a bound key: its own)")
    ] = None,
) -> Response:
    principal = await caller(request, "read", "GET /v1/unbillable")
    return json_answer(await read(billing, _unbillable, billing, principal, customer))


@router.get(
    "/v1/audit",
    summary="Re-derive every invoice from the ledger; check chain and hashes",
    responses={
        200: {"description": "passed, counts, chain_intact, mismatches"},
        **AUTH,
    },
)
async def audit(request: Request, billing: BillingDependency) -> Response:
    await caller(request, "admin", "GET /v1/audit", every_customer=True)
    return json_answer(await read(billing, _audit, billing))

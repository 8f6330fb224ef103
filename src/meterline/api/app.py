"""The ASGI application: routes, authentication and error rendering.

Handlers are thin: authenticate, parse, call the ledger (in a worker thread, since an
append waits for fsync), render. The billing routes (pricing, invoices, lineage, credit
notes, audit) live in ``meterline.api.billing_routes``; their errors are rendered here,
in the one error shape (``meterline.api.failures``: unknown routes, wrong methods and
unexpected errors too). OpenAPI is at ``/openapi.json`` (``meterline.api.openapi``
completes FastAPI's document); interactive docs at ``/docs`` are served from vendored
assets, so they work offline. Every path and query parameter is checked for NUL and
repeats before its route runs (``_plain_parameters``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any

import msgspec
from anyio import to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from meterline import __version__
from meterline.api.billing_routes import BillingRoutes, HttpError, _instant
from meterline.api.bodies import ACCEPTED_TYPES, parse_body, prepare_body
from meterline.api.credit_routes import CreditRoutes
from meterline.api.failures import UnexpectedErrors, error_response, http_exception
from meterline.api.live_routes import LiveRoutes
from meterline.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from meterline.api.metrics import Metrics, TimingMiddleware
from meterline.api.openapi import (
    ERROR_REF,
    EVENT_PAGE_SCHEMA,
    HEALTH_SCHEMA,
    batch_outcome_ref,
    ingest_body,
    instant_schema,
    json_content,
)
from meterline.api.openapi import install as install_openapi
from meterline.api.payment_routes import with_payment_routes
from meterline.api.stream_front import StreamFront
from meterline.api.webhook_routes import WebhookRoutes
from meterline.billing.service import Billing, BillingError, InvalidRequest, NotFound
from meterline.billing.unbillable import publish_unbillable
from meterline.config.source import ConfigurationError
from meterline.core.admission import LAG_MAX_MS_DEFAULT, retry_after_header
from meterline.core.events import event_document, format_timestamp
from meterline.core.outcomes import BatchOutcome
from meterline.errors import AuthError, BatchTooLarge, InputError, MalformedJSON
from meterline.keys import Principal, authenticate
from meterline.ledger.billing import BillingConflict, BillingStore
from meterline.ledger.database import DatabaseErrors
from meterline.ledger.ledger import Ledger
from meterline.ledger.store import PAGE_EVENTS_MAX, SEQUENCE_MAX, EventQuery, StoredEvent
from meterline.ledger.webhooks import WebhookStore
from meterline.live.link import LiveLink, WorkerUnavailable
from meterline.live.webhooks import Dispatcher, Webhooks
from meterline.stream.errors import IngestLagging, StreamUnavailable
from meterline.stream.mirror import AccessMirror
from meterline.stream.settings import StreamSettings

_ENCODER = msgspec.json.Encoder(decimal_format="number")
_JSON = "application/json"


def _json(payload: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_ENCODER.encode(payload), status_code, headers, media_type=_JSON)


def _error(status_code: int, code: str, message: str, **extra: Any) -> Response:
    return error_response(status_code, code, message, **extra)


def _plain_parameters(request: Request) -> None:
    """400 naming the first path or query parameter that holds NUL (U+0000: PostgreSQL
    cannot compare text with it, and no name or id the API knows contains it), or a query
    parameter given more than once (each is one value; unknown ones are ignored)."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise HttpError(400, "invalid_parameter", f"{name}: given more than once", field=name)
        seen.add(name)
    named = [*request.path_params.items(), *request.query_params.multi_items()]
    for name, value in named:
        if "\x00" in name or "\x00" in str(value):
            raise HttpError(
                400, "invalid_parameter", f"{name}: must not contain NUL (U+0000)", field=name
            )


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _moment(description: str) -> Any:
    return Query(json_schema_extra=instant_schema(description))


def _ingest_responses(stream: bool) -> dict[int | str, dict[str, Any]]:
    outcome = batch_outcome_ref()
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "Per-event outcomes: accepted, duplicate, conflict, rejected",
            **json_content(outcome),
        },
        400: {
            "description": "Every event rejected (per-event outcomes), or the body refused"
            " whole: malformed JSON, nested too deep (the error shape)",
            **json_content({"oneOf": [outcome, ERROR_REF]}),
        },
        403: {"description": "The key lacks the ingest scope"},
        409: {"description": "Every event conflicts with a stored one", **json_content(outcome)},
        413: {"description": "More events or bytes than the batch limits"},
        415: {"description": "Unsupported content type (`accepted` lists the others)"},
    }
    if stream:
        responses[202] = {
            "description": "Stream mode: the valid events are stored in JetStream",
            **json_content(outcome),
        }
        responses[503] = {"description": "Stream mode: JetStream cannot take the batch now"}
        responses[429] = {
            "description": "Stream mode: a partition the batch touches lags past the ingest"
            " lag bound; nothing was accepted (`retry_after_ms` in the body)"
        }
    return responses


def _batch_status(outcome: BatchOutcome) -> int:
    """200 when anything was stored or already there; otherwise 400 (rejected) or 409."""
    if outcome.accepted or outcome.duplicate or not outcome.results:
        return 200
    return 400 if outcome.rejected else 409


def _render_event(stored: StoredEvent) -> dict[str, Any]:
    document = event_document(stored.record.body)
    document["sequence"] = stored.record.sequence
    document["ingested_at"] = format_timestamp(stored.ingested_at_us)
    document["hash"] = stored.record.hash.hex()
    return document


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BatchTooLarge(f"body is {declared} bytes, the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BatchTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _billing_over(ledger: Ledger) -> Billing:
    """Billing beside the ledger's events (the same SQLite file or PostgreSQL schema), on
    the ledger's clock."""
    return Billing(ledger, BillingStore(ledger.store.path), clock=ledger.clock)


_log = logging.getLogger(__name__)


def _firing_counts(service: Billing) -> list[tuple[str, str, int]]:
    """Control firings per kind and level, from the records every process shares."""
    try:
        return service.control_firing_counts()
    except DatabaseErrors:
        return []  # no live engine ever created the control tables


def create_app(
    ledger: Ledger,
    billing: Billing | None = None,
    live: bool = True,
    stream: StreamSettings | None = None,
    webhooks_allow_private: bool | None = None,
    lag_max_ms: int = LAG_MAX_MS_DEFAULT,
) -> FastAPI:
    """The HTTP API over ``ledger``; ``billing`` defaults to one over the ledger's file
    (whose store the app closes when it shuts down). With ``live``, the live engine
    (projection, controls, access answers, webhooks) runs beside it. With ``stream``
    (stream mode), events are published to JetStream for the workers, which run the live
    engines; access answers come from the access bucket's mirror.
    ``webhooks_allow_private``: let webhooks go to loopback, link-local and private
    addresses (None: as ``METERLINE_WEBHOOKS_ALLOW_PRIVATE`` says; unset, refused).
    ``lag_max_ms``: stream mode's ingest lag bound (``core.admission``; 0: off)."""
    owned = billing is None
    service = _billing_over(ledger) if billing is None else billing
    billing_routes = BillingRoutes(service, principal_of=lambda r: principal_of(r))
    webhooks = (
        Webhooks(
            WebhookStore(service.store.path),
            clock=ledger.clock,
            allow_private=webhooks_allow_private,
        )
        if live
        else None
    )
    dispatcher = Dispatcher(webhooks).start() if webhooks is not None else None
    if webhooks is not None:  # a close's unbillable usage becomes webhooks, once per event
        service.unbillable_listeners.append(partial(publish_unbillable, webhooks.publish))
    link: Any = None
    front: StreamFront | None = None
    if stream is not None:
        link = AccessMirror(str(service.store.path), ledger.clock)
        front = StreamFront(stream, link, lag_max_ms)
    elif dispatcher is not None:
        # the live engine in its worker process, told of every append and billing change
        link = LiveLink(str(service.store.path), ledger.clock, dispatcher.wake).start()
        ledger.listeners.append(link.appended)
        service.listeners.append(link.billing_changed)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if front is not None:
            await front.start()
        try:
            yield
        finally:
            if front is not None:
                await front.stop()
            elif link is not None:
                ledger.listeners.remove(link.appended)
                service.listeners.remove(link.billing_changed)
                link.stop()
            if dispatcher is not None and webhooks is not None:
                dispatcher.stop()
                webhooks.store.close()
            if owned:
                service.store.close()

    app = FastAPIOffline(
        dependencies=[Depends(_plain_parameters)],
        title="meterline",
        version=__version__,
        description="Usage ledger and monetization engine for AI products.",
        lifespan=lifespan,
    )
    app.state.ledger = ledger
    app.state.billing = service
    app.state.live = link
    app.state.stream = front
    metrics = Metrics()
    app.state.metrics = metrics
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(TimingMiddleware, metrics=metrics)
    app.add_exception_handler(HTTPException, http_exception)
    install_openapi(with_payment_routes(app))

    async def principal_of(request: Request) -> Principal:
        return await to_thread.run_sync(authenticate, ledger.store, _bearer(request))

    @app.exception_handler(InputError)
    async def input_error(_: Request, error: InputError) -> Response:
        extra: dict[str, Any] = {}
        if isinstance(error, MalformedJSON):
            extra["position"] = error.position
        if error.code == "unsupported_content_type":
            extra["accepted"] = list(ACCEPTED_TYPES)
        return _error(error.http_status, error.code, str(error), **extra)

    @app.exception_handler(AuthError)
    async def auth_error(_: Request, error: AuthError) -> Response:
        return _error(error.http_status, error.code, str(error))

    @app.exception_handler(HttpError)
    async def http_error(_: Request, error: HttpError) -> Response:
        return _error(error.status_code, error.code, error.message, **error.extra)

    @app.exception_handler(ConfigurationError)
    async def configuration_error(_: Request, error: ConfigurationError) -> Response:
        first = error.errors[0] if error.errors else str(error)
        return _error(422, "invalid_configuration", first, errors=error.errors)

    @app.exception_handler(InvalidRequest)
    async def invalid_request(_: Request, error: InvalidRequest) -> Response:
        field = error.errors[0].split(":", 1)[0]
        return _error(422, "invalid_input", str(error), field=field, errors=error.errors)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, error: NotFound) -> Response:
        return _error(404, "not_found", str(error))

    @app.exception_handler(BillingError)
    @app.exception_handler(BillingConflict)
    async def billing_conflict(_: Request, error: Exception) -> Response:
        return _error(409, "billing_conflict", str(error))

    @app.exception_handler(WorkerUnavailable)
    async def worker_unavailable(_: Request, error: WorkerUnavailable) -> Response:
        response = _error(503, "live_unavailable", str(error))
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(RequestValidationError)
    async def parameter_error(_: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return _error(400, "invalid_parameter", f"{field}: {first.get('msg')}", field=field)

    @app.get(
        "/v1/health",
        tags=["operations"],
        summary="Liveness and ledger head",
        responses={200: {"description": "The ledger head", **json_content(HEALTH_SCHEMA)}},
    )
    async def health() -> Response:
        sequence, head_hash = await to_thread.run_sync(ledger.head)
        cut = await to_thread.run_sync(ledger.store.cut)
        return _json(
            {
                "status": "ok",
                "sequence": sequence,
                "head_hash": head_hash.hex(),
                "through": cut.to_json(),
            }
        )

    @app.post(
        "/v1/events",
        tags=["events"],
        summary="Ingest usage events (native or CloudEvents 1.0)",
        openapi_extra=ingest_body(ledger.limits, ACCEPTED_TYPES),
        responses=_ingest_responses(stream is not None),
    )
    async def ingest(request: Request) -> Response:
        principal = await principal_of(request)
        principal.require("ingest", "POST /v1/events")
        body = await _read_body(request, ledger.limits.batch_bytes_max)
        if front is not None:
            return await _publish(request, body, principal.customer)
        parsed = parse_body(request.headers.get("content-type"), request.headers, body)
        run = ledger.ingest if parsed.shape == "native" else ledger.ingest_cloudevents
        outcome = await to_thread.run_sync(run, parsed.events, principal.customer)
        metrics.count(outcome)
        return _json(outcome, _batch_status(outcome))

    async def _publish(request: Request, body: bytes, only_customer: str | None) -> Response:
        assert front is not None
        prepared = await to_thread.run_sync(
            prepare_body,
            ledger,
            request.headers.get("content-type"),
            request.headers,
            body,
            only_customer,
        )
        try:
            outcome = await front.ingest(ledger, prepared)
        except IngestLagging as error:
            response = _error(
                429,
                "ingest_lagging",
                str(error),
                partition=error.partition,
                lag_ms=round(error.lag_ms, 1),
                bound_ms=error.bound_ms,
                retry_after_ms=error.retry_after_ms,
            )
            response.headers["Retry-After"] = retry_after_header(error.retry_after_ms)
            return response
        except StreamUnavailable as error:
            response = _error(503, "stream_unavailable", f"events not accepted: {error}")
            response.headers["Retry-After"] = "1"
            return response
        metrics.count(outcome)
        return _json(outcome, 202 if outcome.accepted else _batch_status(outcome))

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (aggregates only)",
        response_class=PlainTextResponse,
        responses={200: {"description": "Prometheus text exposition format"}},
    )
    async def prometheus_metrics() -> Response:
        head, _ = await to_thread.run_sync(ledger.head)
        firings = await to_thread.run_sync(_firing_counts, service)
        metrics.set_shared(head, firings)
        if front is not None:
            metrics.set_ingest_lag(front.lag_status())
            try:
                metrics.set_stream(await front.status(ledger.clock()))
            except Exception as error:  # the API's own figures still answer
                _log.warning("stream status unavailable for /metrics", extra={"error": repr(error)})
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    @app.get(
        "/v1/events",
        tags=["events"],
        summary="Read events, paged by ledger sequence",
        responses={
            200: {"description": "A page of events", **json_content(EVENT_PAGE_SCHEMA)},
            400: {"description": "A parameter is invalid (`field` names it)"},
            403: {"description": "The key lacks the read scope, or is bound to another customer"},
        },
    )
    async def list_events(
        request: Request,
        customer: str | None = None,
        type: str | None = None,
        start: Annotated[str | None, _moment("inclusive")] = None,
        end: Annotated[str | None, _moment("exclusive")] = None,
        after: Annotated[
            int, Query(ge=0, le=SEQUENCE_MAX, description="ledger sequence cursor")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=PAGE_EVENTS_MAX)] = 100,
    ) -> Response:
        principal = await principal_of(request)
        principal.require("read", "GET /v1/events")
        if principal.customer is not None:
            if customer not in (None, principal.customer):
                return _error(403, "forbidden", f"this key may only read {principal.customer!r}")
            customer = principal.customer
        start_us, end_us = _instant(start, "start"), _instant(end, "end")
        try:
            query = EventQuery(
                customer=customer,
                type=type,
                start_us=start_us,
                end_us=end_us,
                after_sequence=after,
                limit=limit,
            )
        except ValueError as error:
            return _error(400, "invalid_parameter", str(error))
        page = await to_thread.run_sync(ledger.query, query)
        return _json(
            {
                "events": [_render_event(event) for event in page.events],
                "next_after": page.next_after,
            }
        )

    app.include_router(billing_routes.router)
    app.include_router(CreditRoutes(billing_routes).router)
    if link is not None:
        app.include_router(
            LiveRoutes(
                link,
                principal_of,
                billing_routes._gate.writing,
                lambda request: authenticate(ledger.store, _bearer(request)),
            ).router
        )
    if webhooks is not None:
        app.include_router(WebhookRoutes(webhooks, principal_of).router)
    from meterline.dashboard import mount_dashboard  # the finance pages under /dashboard

    gate = billing_routes._gate
    mount_dashboard(app, service, link, ledger, gate.reading, gate.writing)
    app.state.webhooks = webhooks
    return app

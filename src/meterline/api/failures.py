"""Every error answer in one shape, the ones no handler raised included.

The shape is ``{"error": {"code", "message", ...}}`` (``ERROR_SCHEMA`` in
``meterline.api.openapi``). One handler answers meterline's errors (``meterline_error``):
each carries its code and HTTP status (``meterline.errors``); the families the API
answers for are ``ANSWERED``, and an error of any other family escaping a handler is
unexpected (below). FastAPI's refusal of a parameter is 400 ``invalid_parameter`` naming
it (``parameter_error``). An unknown route is 404 ``not_found`` and a known one asked
with another method 405 ``method_not_allowed`` (with ``Allow``), in that shape. An
exception nothing expected becomes a 500 ``internal_error`` naming an incident id and
nothing of the server's insides, and one log record on ``meterline.api`` (one JSON line
under ``meterline.logs``) with the route, method, error type and message, the incident
id and the traceback.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgspec
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meterline.api.answers import HttpError
from meterline.api.bodies import ACCEPTED_TYPES
from meterline.billing.errors import BillingError, InvalidRequest, RatingFailed
from meterline.config.source import ConfigurationError
from meterline.core.admission import retry_after_header
from meterline.errors import AuthError, InputError, MalformedJSON, MeterlineError
from meterline.ledger.billing_records import BillingConflict
from meterline.live.link import WorkerUnavailable
from meterline.stream.errors import IngestLagging, StreamUnavailable

_ENCODER = msgspec.json.Encoder(decimal_format="number")
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}

log = logging.getLogger("meterline.api")


def error_response(
    status_code: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """An answer in the one error shape (401 always says ``WWW-Authenticate: Bearer``)."""
    headers = dict(headers or {})
    if status_code == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    error = {"code": code, "message": message, **extra}
    try:
        body = _ENCODER.encode({"error": error})
    except UnicodeEncodeError:  # a lone surrogate quoted from the input (YAML allows them)
        body = _ENCODER.encode({"error": _printable(error)})
    return Response(body, status_code, headers, media_type="application/json")


ANSWERED: tuple[type[MeterlineError], ...] = (
    InputError,
    AuthError,
    HttpError,
    ConfigurationError,
    BillingError,
    BillingConflict,
    WorkerUnavailable,
)
"""The error families answered with their own code and status: refused input, keys,
the handlers' own refusals, the pricing file, billing, and the live worker."""


def error_details(error: MeterlineError) -> tuple[int, str, str, dict[str, Any]]:
    """Status, code, message and extra fields of ``error``'s answer (also for routes that
    answer in another shape: OTLP's ``Status``)."""
    status, code, message = error.http_status, error.code, str(error)
    extra: dict[str, Any] = {}
    if isinstance(error, HttpError):
        extra.update(error.extra)
    elif isinstance(error, MalformedJSON):
        extra["position"] = error.position
    elif isinstance(error, InputError) and code == "unsupported_content_type":
        extra["accepted"] = list(ACCEPTED_TYPES)
    elif isinstance(error, ConfigurationError):
        message = error.errors[0] if error.errors else message
        extra["errors"] = error.errors
    elif isinstance(error, InvalidRequest):
        extra.update(field=error.errors[0].split(":", 1)[0], errors=error.errors)
    elif isinstance(error, RatingFailed):
        code = BillingError.code  # over HTTP, one customer not rated is a billing conflict
    return status, code, message, extra


async def meterline_error(_: Request, error: Exception) -> Response:
    """One of meterline's errors in the error shape (``WorkerUnavailable`` says to retry
    in a second); one outside ``ANSWERED`` is raised on, to ``UnexpectedErrors``."""
    if not isinstance(error, ANSWERED):
        raise error
    status, code, message, extra = error_details(error)
    wait = retry_after(error)
    headers = None if wait is None else {"Retry-After": wait}
    return error_response(status, code, message, headers, **extra)


def retry_after(error: MeterlineError) -> str | None:
    """The ``Retry-After`` value (whole seconds) of an error worth retrying, when known:
    the live worker or JetStream unavailable (a second), a partition lagging (its own
    wait); None for the rest."""
    if isinstance(error, IngestLagging):
        return retry_after_header(error.retry_after_ms)
    if isinstance(error, WorkerUnavailable | StreamUnavailable):
        return "1"
    return None


async def parameter_error(_: Request, error: Exception) -> Response:
    """FastAPI's refusal of a path or query parameter: 400 naming the first one."""
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0]
    field = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
    return error_response(400, "invalid_parameter", f"{field}: {first.get('msg')}", field=field)


def _printable(value: Any) -> Any:
    """``value`` with every string made encodable: lone surrogates as ``\\udxxx``."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list | tuple):
        return [_printable(item) for item in value]
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    return value


def _leaf_routes(routes: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every route with its include prefix, routers included by ``include_router`` opened
    (FastAPI keeps them whole and matches them lazily)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            yield from _leaf_routes(inner.routes, prefix + getattr(context, "prefix", ""))
        else:
            yield prefix, route


def allowed_methods(request: Request) -> list[str]:
    """The methods the resource at this request's path answers (Starlette's own ``Allow``
    names those of the first route whose path matched). Where a literal route and a
    templated one both match (``POST /v1/invoices/close``, ``GET /v1/invoices/{id}``),
    the resource is the one with the fewest path parameters."""
    path = request.scope.get("path", "")
    found: dict[str, int] = {}
    for prefix, route in _leaf_routes(request.app.router.routes):
        pattern, methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if pattern is None or not methods or not path.startswith(prefix):
            continue
        if pattern.match(path[len(prefix) :]):
            parameters = len(getattr(route, "param_convertors", {}))
            for method in methods:
                found[method] = min(parameters, found.get(method, parameters))
    if not found:
        return []
    fewest = min(found.values())
    return sorted(method for method, parameters in found.items() if parameters == fewest)


async def http_exception(request: Request, error: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed) in the error shape."""
    assert isinstance(error, HTTPException)
    status = error.status_code
    headers = dict(error.headers or {})
    if status == 404:
        message = f"no route {request.method} {request.url.path}"
    elif status == 405:
        allowed = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
        headers["Allow"] = allowed
        message = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    else:
        message = str(error.detail)
    return error_response(status, _HTTP_CODES.get(status, "http_error"), message, headers)


def route_of(scope: Scope) -> str:
    """The route template a request matched (``/v1/access/{customer}``), or ``unmatched``."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


def _innermost(error: BaseException) -> BaseException:
    """The one exception inside single-member exception groups (anyio wraps some)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


class UnexpectedErrors:
    """ASGI middleware: an exception out of the app becomes one log record and a 500 in
    the error shape. If the answer had already started (a stream), it is cut short: the
    server closes the connection, and the record says so."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as raised:
            error = _innermost(raised)
            incident = secrets.token_hex(6)
            log.error(
                "unexpected error in a request",
                exc_info=error,
                extra={
                    "route": route_of(scope),
                    "method": scope["method"],
                    "error_type": type(error).__name__,
                    "error": str(error),
                    "incident": incident,
                    "answered": "cut short" if started else "500",
                },
            )
            if started:
                return
            response = error_response(
                500, "internal_error", f"unexpected server error; logged as incident {incident}"
            )
            await response(scope, receive, send)

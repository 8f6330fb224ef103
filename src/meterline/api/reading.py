"""What a request carries, read and checked: its media type, a body within a size limit,
a small JSON body decoded into a msgspec struct, instants and amounts in parameters and
bodies, and the parameters every route refuses (NUL, repeats).

Each refusal is an ``HttpError`` naming the field where there is one: 400 for what cannot
be read, 413 for a body over its limit, 415 for a body of another media type.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from fastapi import Request

from meterline.api.answers import JSON, HttpError
from meterline.api.bodies import check_nesting, nul_field
from meterline.api.openapi import DECIMAL, INSTANT_MAX, INSTANT_MIN
from meterline.core.events import format_timestamp, timestamp_to_us
from meterline.core.money import (
    AMOUNT_FRACTION_DIGITS_MAX,
    AMOUNT_INTEGER_DIGITS_MAX,
    to_decimal,
)

JSON_BODY_BYTES_MAX = 64 * 1024
"""The largest small JSON body (a grant, a void, an override, a credit note, a webhook)."""


async def plain_parameters(request: Request) -> None:
    """400 naming the first path or query parameter that holds NUL (U+0000: PostgreSQL
    cannot compare text with it, and no name or id the API knows contains it), or a query
    parameter given more than once (each is one value; unknown ones are ignored).
    ``async`` though it awaits nothing: FastAPI runs a plain ``def`` dependency in a
    worker thread, a thread hop on every request for a few dict reads."""
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


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if there is one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body; 413 ``payload_too_large`` past ``limit`` bytes (declared or sent)."""
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


def refuse_nul(body: bytes) -> None:
    """400 naming the first field of a JSON body whose text holds NUL (U+0000)."""
    field = nul_field(body)
    if field is not None:
        raise HttpError(
            400, "invalid_input", f"{field}: must not contain NUL (U+0000)", field=field
        )


def decode_json(body: bytes, kind: type[Any]) -> Any:
    """``body`` as ``kind``: nesting and NUL checked first; 400 naming what is wrong."""
    check_nesting(body)
    refuse_nul(body)
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise HttpError(400, "invalid_input", f"body: {error}") from None
    except msgspec.DecodeError as error:
        raise HttpError(400, "malformed_json", f"body: {error}") from None


async def json_body(
    request: Request, kind: type[Any], refusal: str = "send application/json"
) -> Any:
    """A small JSON body (``JSON_BODY_BYTES_MAX``) as ``kind``; 415 with ``refusal``
    when it is not JSON."""
    media = media_type(request)
    if media != JSON and not media.endswith("+json"):
        raise HttpError(415, "unsupported_content_type", refusal, accepted=[JSON])
    return decode_json(await read_body(request, JSON_BODY_BYTES_MAX), kind)


def instant(value: str | None, name: str) -> int | None:
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


def amount(value: str, name: str) -> Decimal:
    """A decimal string from a body as an exact amount; else 400 naming the field."""
    if not DECIMAL.fullmatch(value):
        raise HttpError(
            400,
            "invalid_input",
            f"{name}: {value[:64]!r} is not an amount like 12.50 (a decimal string, at most"
            f" {AMOUNT_INTEGER_DIGITS_MAX} digits before the point and"
            f" {AMOUNT_FRACTION_DIGITS_MAX} after)",
            field=name,
        )
    try:
        return to_decimal(value, name)
    except (ValueError, TypeError) as error:
        raise HttpError(400, "invalid_input", str(error), field=name) from None

"""OTLP/HTTP trace bodies decoded with the official ``opentelemetry-proto`` definitions.

A body is ``application/x-protobuf`` (binary protobuf) or ``application/json`` (the
protobuf JSON mapping, with OTLP's exception: trace and span ids are hex, not base64),
optionally ``Content-Encoding: gzip`` (or ``deflate``) as exporters send; the inflated
body is bounded like any batch. The answer is an ``ExportTraceServiceResponse`` in the
request's encoding, with ``partial_success`` when spans were refused or a warning is due;
a refusal (4xx, 5xx) is a ``google.rpc.Status`` in the request's encoding (JSON unless
the request was protobuf), as the OTLP/HTTP specification asks: its ``message`` says
what is wrong, its ``code`` is the gRPC code matching the HTTP status, and one
``google.rpc.ErrorInfo`` detail carries meterline's error code (``reason``, domain
``meterline``) and its text fields (``metadata``, the field named, for one).
Attribute values become plain data: text, booleans, integers, exact decimals (a double's
shortest representation), lists and mappings; bytes become hex.
"""

from __future__ import annotations

import base64
import binascii
import math
import zlib
from decimal import Decimal
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc.error_details_pb2 import ErrorInfo
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from meterline.api.answers import HttpError
from meterline.api.bodies import check_nesting
from meterline.core.otel_spans import Span
from meterline.errors import BatchTooLarge

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
OTLP_TYPES = (PROTOBUF, JSON)
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")
_INFLATE_CHUNK_BYTES = 64 * 1024
_WINDOW_BITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""zlib's window bits for each content encoding: gzip's header, or zlib's (HTTP deflate)."""
GRPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    409: 10,  # ABORTED
    413: 8,  # RESOURCE_EXHAUSTED
    415: 3,  # INVALID_ARGUMENT
    429: 8,  # RESOURCE_EXHAUSTED
    500: 13,  # INTERNAL
    502: 14,  # UNAVAILABLE
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}
"""The gRPC status code of an HTTP status (the usual mapping; 2, UNKNOWN, for others):
OTLP clients do not act on it, they read the HTTP status."""
ERROR_DOMAIN = "meterline"


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` without its content encoding (identity, gzip or deflate), at most
    ``limit`` bytes once inflated (``BatchTooLarge`` past it: a small bomb must not fill memory)."""
    coding = (encoding or "identity").strip().lower()
    if coding == "identity":
        return body
    if coding not in _WINDOW_BITS:
        raise HttpError(
            415,
            "unsupported_content_encoding",
            f"content encoding {coding!r}: use gzip, deflate or none",
        )
    inflater = zlib.decompressobj(wbits=_WINDOW_BITS[coding])
    parts, size, rest = [], 0, body
    try:
        while rest:
            part = inflater.decompress(rest, _INFLATE_CHUNK_BYTES)
            size += len(part)
            if size > limit:
                raise BatchTooLarge(f"the inflated body exceeds the limit of {limit} bytes")
            parts.append(part)
            rest = inflater.unconsumed_tail
            if inflater.eof:
                break
    except zlib.error as error:
        raise HttpError(400, "malformed_body", f"{coding} body: {error}") from None
    if not inflater.eof:
        raise HttpError(400, "malformed_body", f"{coding} body: truncated")
    return b"".join(parts)


def _hex_ids_as_base64(document: Any) -> None:
    """OTLP/JSON writes ids as hex; the protobuf JSON mapping reads bytes as base64."""
    for resource_spans in _list(document, "resourceSpans"):
        for scope_spans in _list(resource_spans, "scopeSpans"):
            for span in _list(scope_spans, "spans"):
                _convert_ids(span)
                for link in _list(span, "links"):
                    _convert_ids(link)


def _list(document: Any, key: str) -> list[Any]:
    value = document.get(key) if isinstance(document, dict) else None
    return value if isinstance(value, list) else []


def _convert_ids(item: Any) -> None:
    if not isinstance(item, dict):
        return
    for key in _ID_FIELDS:
        value = item.get(key)
        if isinstance(value, str) and value:
            try:
                item[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise HttpError(
                    400, "malformed_otlp", f"{key} {value[:40]!r} is not hex", field=key
                ) from None


def decode_request(media_type: str, body: bytes) -> ExportTraceServiceRequest:
    """The export request in ``body``; 400 naming the problem, 415 for another type."""
    request = ExportTraceServiceRequest()
    if media_type == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            raise HttpError(400, "malformed_otlp", f"protobuf body: {error}") from None
        return request
    if media_type != JSON:
        raise HttpError(
            415,
            "unsupported_content_type",
            f"content type {media_type or 'none'!r} is not accepted; use one of"
            f" {', '.join(OTLP_TYPES)}",
            accepted=list(OTLP_TYPES),
        )
    check_nesting(body)
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise HttpError(400, "malformed_json", f"body: {error}") from None
    if type(document) is not dict:
        raise HttpError(400, "malformed_otlp", "body: must be a JSON object (an export request)")
    _hex_ids_as_base64(document)
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, TypeError, ValueError, AttributeError) as error:
        # the JSON mapping's parser raises more than ParseError on some wrong shapes
        raise HttpError(400, "malformed_otlp", f"body: {error}") from None
    return request


def plain_value(value: AnyValue) -> Any:
    """An attribute value as plain data (None when unset)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "double_value":
        double = value.double_value
        return Decimal(repr(double)) if math.isfinite(double) else repr(double)
    if kind == "array_value":
        return [plain_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    """Key-value pairs as a mapping (a repeated key: the last wins, as in the SDKs)."""
    read: dict[str, Any] = {}
    for pair in pairs:
        if isinstance(pair, KeyValue):
            read[pair.key] = plain_value(pair.value)
    return read


def spans_of(request: ExportTraceServiceRequest) -> list[Span]:
    """Every span of the request, in order, with its resource's attributes."""
    spans = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        name=span.name,
                        end_time_unix_nano=span.end_time_unix_nano,
                        attributes=attributes(span.attributes),
                        resource=resource,
                    )
                )
    return spans


def encode_response(media_type: str, rejected_spans: int, message: str) -> bytes:
    """The ``ExportTraceServiceResponse`` in the request's encoding; ``partial_success``
    only when something was refused or there is a warning to give."""
    response = ExportTraceServiceResponse()
    if rejected_spans or message:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = message
    if media_type == PROTOBUF:
        encoded: bytes = response.SerializeToString()
        return encoded
    text: str = json_format.MessageToJson(response, indent=None)
    return text.encode()


def encode_status(
    media_type: str, http_status: int, code: str, message: str, fields: dict[str, Any]
) -> bytes:
    """A refusal as a ``google.rpc.Status`` in the request's encoding (protobuf for a
    protobuf request, else the JSON mapping), with meterline's ``code`` and the text
    ``fields`` in an ``ErrorInfo`` detail."""
    metadata = {key: value for key, value in fields.items() if isinstance(value, str)}
    status = Status(code=GRPC_CODES.get(http_status, 2), message=message)
    status.details.add().Pack(ErrorInfo(reason=code, domain=ERROR_DOMAIN, metadata=metadata))
    if media_type == PROTOBUF:
        encoded: bytes = status.SerializeToString()
        return encoded
    text: str = json_format.MessageToJson(status, indent=None)
    return text.encode()

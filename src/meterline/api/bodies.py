"""Request bodies: content-type negotiation and JSON decoding with clear errors.

Which shape a POST carries is decided by its media type alone (and ``ce-*`` headers for
CloudEvents binary mode, whose body is JSON data when no content type is given); the
decoder keeps every decimal digit; malformed JSON is reported with its byte position,
line and column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from meterline.core.cloudevents import binary_mode_envelope, is_json_content_type
from meterline.core.events import decode_exact
from meterline.errors import MalformedJSON, UnsupportedContentType

Shape = Literal["native", "cloudevents"]
NATIVE_TYPES = ("application/json",)
CLOUDEVENT_TYPE = "application/cloudevents+json"
CLOUDEVENT_BATCH_TYPE = "application/cloudevents-batch+json"
ACCEPTED_TYPES = (*NATIVE_TYPES, CLOUDEVENT_TYPE, CLOUDEVENT_BATCH_TYPE)
_BYTE_POSITION = re.compile(r"\(byte (\d+)\)")


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """A decoded POST body: which shape, and the list of raw events in it."""

    shape: Shape
    events: list[Any]


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_json(body: bytes) -> Any:
    """Decode ``body`` exactly, or raise ``MalformedJSON`` with the position."""
    try:
        return decode_exact(body)
    except msgspec.DecodeError as error:
        message = str(error)
        found = _BYTE_POSITION.search(message)
        # Truncated or empty input names no byte: the problem is at the end of the body.
        position = int(found.group(1)) if found else len(body)
        line = body.count(b"\n", 0, position) + 1
        column = position - (body.rfind(b"\n", 0, position) + 1) + 1
        message = f"{message} at line {line}, column {column}"
        raise MalformedJSON(message, position) from None


def parse_body(content_type: str | None, headers: Mapping[str, str], body: bytes) -> ParsedBody:
    """The events in a POST body, by its content type; raises on a body refused whole."""
    kind = media_type(content_type)
    if "ce-specversion" in headers:
        # No content type reads as JSON (the data's type defaults to JSON); an empty body
        # is an event without data.
        if not is_json_content_type(kind):
            raise UnsupportedContentType(
                f"CloudEvents binary mode needs JSON data, got content type {kind!r}"
            )
        data = decode_json(body) if body.strip() else None
        return ParsedBody("cloudevents", [binary_mode_envelope(headers, data)])
    if kind not in ACCEPTED_TYPES:
        raise UnsupportedContentType(
            f"content type {kind or 'none'!r} is not accepted; "
            f"use one of {', '.join(ACCEPTED_TYPES)}"
        )
    document = decode_json(body)
    if kind == CLOUDEVENT_TYPE:
        return ParsedBody("cloudevents", [document])
    if kind == CLOUDEVENT_BATCH_TYPE:
        if type(document) is not list:
            raise MalformedJSON("a CloudEvents batch must be a JSON array", None)
        return ParsedBody("cloudevents", document)
    return ParsedBody("native", document if type(document) is list else [document])

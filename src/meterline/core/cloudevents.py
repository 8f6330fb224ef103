"""CloudEvents 1.0 envelopes as meterline events (pure).

Maps ``id`` to id, ``subject`` to customer, ``type`` to type, ``time`` to timestamp,
``data`` to properties and keeps ``source``. ``time`` is optional, as in the
specification: without it the event is stamped with the receipt time (the batch's clock
reading, ``now_us``) and its canonical bytes say so (``timestamp_origin: "receipt"``), so
they stay a deterministic function of the event and the clock. Errors name the
CloudEvents attribute the producer sent (``subject``, ``time``, ``data``), not meterline's
internal field, so the sender can find the problem in its own terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from meterline.core.events import (
    FieldError,
    PreparedEvent,
    format_timestamp,
    prepare_event,
    stamp_receipt_time,
)
from meterline.core.limits import DEFAULT_LIMITS, IngestLimits

SPEC_VERSION = "1.0"
_JSON_DATA_TYPES = ("application/json", "text/json")
_NATIVE_TO_CLOUDEVENTS = {
    "customer": "subject",
    "timestamp": "time",
    "properties": "data",
    "id": "id",
    "type": "type",
    "source": "source",
    "event": "event",
}


def is_json_content_type(content_type: object) -> bool:
    """Whether ``content_type`` names JSON data; absent (None or empty) means JSON, as the
    specification's JSON format and HTTP binary mode read it."""
    if content_type is None:
        return True
    if type(content_type) is not str:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return not media_type or media_type in _JSON_DATA_TYPES or media_type.endswith("+json")


def _rename(errors: list[FieldError]) -> list[FieldError]:
    renamed = []
    for error in errors:
        head, dot, rest = error.field.partition(".")
        head = _NATIVE_TO_CLOUDEVENTS.get(head, head)
        renamed.append(FieldError(head + dot + rest, error.reason))
    return renamed


def prepare_cloudevent(
    envelope: object, now_us: int, limits: IngestLimits = DEFAULT_LIMITS
) -> PreparedEvent | list[FieldError]:
    """Validate one structured-mode CloudEvent and return it as a prepared native event."""
    if not isinstance(envelope, Mapping):
        return [FieldError("event", f"must be a JSON object, got {type(envelope).__name__}")]
    errors: list[FieldError] = []
    version = envelope.get("specversion")
    if version != SPEC_VERSION:
        errors.append(FieldError("specversion", f"must be {SPEC_VERSION!r}, got {version!r}"))
    if envelope.get("source") is None:
        errors.append(FieldError("source", "is required by CloudEvents 1.0"))
    if "data_base64" in envelope:
        errors.append(FieldError("data_base64", "binary data cannot be metered; send JSON data"))
    if not is_json_content_type(envelope.get("datacontenttype")):
        errors.append(FieldError("datacontenttype", "must be a JSON media type"))
    time = envelope.get("time")
    native: dict[str, Any] = {
        "id": envelope.get("id"),
        "customer": envelope.get("subject"),
        "type": envelope.get("type"),
        "timestamp": format_timestamp(now_us) if time is None else time,
        "properties": envelope.get("data"),
        "source": envelope.get("source"),
    }
    prepared = prepare_event(native, now_us, limits)
    if isinstance(prepared, list):
        return errors + _rename(prepared)
    if errors:
        return errors
    return prepared if time is not None else _rename_result(stamp_receipt_time(prepared, limits))


def _rename_result(prepared: PreparedEvent | list[FieldError]) -> PreparedEvent | list[FieldError]:
    return _rename(prepared) if isinstance(prepared, list) else prepared


def binary_mode_envelope(headers: Mapping[str, str], data: object) -> dict[str, Any]:
    """A structured envelope from binary-mode ``ce-*`` HTTP headers and the decoded body.

    Header values are percent-decoded, so binary and structured mode give the same event.
    """
    envelope: dict[str, Any] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("ce-"):
            # The HTTP binding percent-encodes header values (CloudEvents HTTP 3.1.3.2).
            envelope[lower[3:]] = unquote(value)
    envelope["data"] = data
    return envelope

"""Receiving meterline webhooks: check the signature, then trust the body.

The header ``Meterline-Signature: t=<unix seconds>,v1=<hex>`` carries HMAC-SHA256, keyed
by the endpoint's secret (``whsec_...``), of ``"<t>." + raw body``; several ``v1`` entries
may appear (secret rotation) and any one matching is enough. ``verify_signature`` checks
it in constant time, refuses a timestamp outside the tolerance (replays), and returns the
envelope with non-integer numbers as ``Decimal``. This module uses only the standard
library, so it can be copied into a product as is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from decimal import Decimal
from typing import Any

from meterline.errors import MeterlineError

SIGNATURE_HEADER = "Meterline-Signature"
EVENT_ID_HEADER = "Meterline-Event-Id"
DEFAULT_TOLERANCE_S = 300
HEADER_LENGTH_MAX = 4096
"""Longer headers are refused before any parsing."""


class WebhookSignatureError(MeterlineError, ValueError):
    """The request is not a genuine, fresh meterline webhook; the message says why."""

    code = "invalid_signature"
    http_status = 400


def _parse(header: str) -> tuple[int, list[str]]:
    """The header's timestamp and its ``v1`` signatures; other schemes are ignored."""
    if not header or not header.strip():
        raise WebhookSignatureError(f"missing {SIGNATURE_HEADER} header")
    if len(header) > HEADER_LENGTH_MAX:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} header longer than {HEADER_LENGTH_MAX}")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        name, equals, value = item.strip().partition("=")
        if not equals or not name:
            raise WebhookSignatureError(
                f"garbled {SIGNATURE_HEADER} header: {item.strip()[:40]!r} is not name=value"
            )
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            signatures.append(value)
    if len(timestamps) != 1:
        raise WebhookSignatureError(
            f"garbled {SIGNATURE_HEADER} header: needs exactly one t=<unix seconds>"
        )
    if not timestamps[0].isascii() or not timestamps[0].isdigit():
        raise WebhookSignatureError(
            f"garbled {SIGNATURE_HEADER} header: t={timestamps[0][:20]!r} is not unix seconds"
        )
    if not signatures:
        raise WebhookSignatureError(f"garbled {SIGNATURE_HEADER} header: no v1=<signature>")
    return int(timestamps[0]), signatures


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now_s: int | None = None,
) -> dict[str, Any]:
    """The webhook envelope ``{id, kind, created, data}`` if ``header`` signs ``body``
    with ``secret`` within ``tolerance_s`` of ``now_s`` (default: the system clock);
    otherwise ``WebhookSignatureError``. Pass the raw body bytes, before any parsing."""
    if not secret:
        raise WebhookSignatureError("no secret given: pass the endpoint's whsec_... secret")
    timestamp_s, signatures = _parse(header)
    expected = hmac.new(
        secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256
    ).hexdigest()
    # Check every entry, so the time taken does not depend on which one matched.
    matched = False
    for signature in signatures:
        matched |= hmac.compare_digest(expected.encode(), signature.strip().lower().encode())
    if not matched:
        raise WebhookSignatureError(
            "signature mismatch: the body was changed, or the secret is not this endpoint's"
        )
    current_s = int(time.time()) if now_s is None else now_s
    if abs(current_s - timestamp_s) > tolerance_s:
        raise WebhookSignatureError(
            f"timestamp {timestamp_s} is {current_s - timestamp_s} s from now; the tolerance"
            f" is {tolerance_s} s (a replay, or a clock out of sync)"
        )
    try:
        envelope = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as error:
        raise WebhookSignatureError(f"signed body is not JSON: {error}") from None
    if not isinstance(envelope, dict) or not {"id", "kind", "data"} <= envelope.keys():
        raise WebhookSignatureError("signed body is not a webhook envelope {id, kind, data}")
    return envelope

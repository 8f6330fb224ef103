"""Webhook endpoints and deliveries as JSON documents, for the API and the CLI (an
endpoint never with its secret; a delivery with its attempt log and its event)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meterline.core.events import decode_exact, format_timestamp
from meterline.ledger.webhook_records import Attempt, Delivery, Endpoint


def endpoint_document(endpoint: Endpoint) -> dict[str, Any]:
    """An endpoint as JSON for the API and the CLI (never its secret)."""
    disabled = endpoint.disabled_at_us
    return {
        "id": endpoint.endpoint_id,
        "url": endpoint.url,
        "kinds": list(endpoint.kinds),
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "created_at": format_timestamp(endpoint.created_at_us),
        "disabled_at": None if disabled is None else format_timestamp(disabled),
    }


def _instant(instant_us: int | None) -> str | None:
    return None if instant_us is None else format_timestamp(instant_us)


def delivery_document(delivery: Delivery, attempts: Sequence[Attempt]) -> dict[str, Any]:
    """A delivery with its attempt log, as JSON for the API and the CLI."""
    return {
        "id": delivery.delivery_id,
        "endpoint": delivery.endpoint_id,
        "kind": delivery.kind,
        "event_id": delivery.event_id,
        "status": delivery.status,
        "created_at": format_timestamp(delivery.created_at_us),
        "next_attempt_at": _instant(delivery.next_attempt_at_us),
        "delivered_at": _instant(delivery.delivered_at_us),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "attempts": [
            {
                "attempt": attempt.attempt_number,
                "at": format_timestamp(attempt.at_us),
                "status_code": attempt.status_code,
                "error": attempt.error,
                "duration_us": attempt.duration_us,
            }
            for attempt in attempts
        ],
        "event": decode_exact(delivery.body),
    }

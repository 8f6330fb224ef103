"""Webhook endpoints and deliveries as typed records (``core.live_documents``), for the API
and the CLI (an endpoint never with its secret; a delivery with its attempt log and its
event)."""

from __future__ import annotations

from collections.abc import Sequence

from meterline.core.events import decode_exact, format_timestamp
from meterline.core.live_documents import DeliveryAttempt, WebhookDelivery, WebhookEndpoint
from meterline.ledger.webhook_records import Attempt, Delivery, Endpoint


def endpoint_document(endpoint: Endpoint) -> WebhookEndpoint:
    """An endpoint for the API and the CLI (never its secret)."""
    return WebhookEndpoint(
        endpoint.endpoint_id,
        endpoint.url,
        tuple(endpoint.kinds),
        endpoint.description,
        endpoint.enabled,
        format_timestamp(endpoint.created_at_us),
        _instant(endpoint.disabled_at_us),
    )


def _instant(instant_us: int | None) -> str | None:
    return None if instant_us is None else format_timestamp(instant_us)


def delivery_document(delivery: Delivery, attempts: Sequence[Attempt]) -> WebhookDelivery:
    """A delivery with its attempt log, for the API and the CLI."""
    return WebhookDelivery(
        delivery.delivery_id,
        delivery.endpoint_id,
        delivery.kind,
        delivery.event_id,
        delivery.status,
        format_timestamp(delivery.created_at_us),
        _instant(delivery.next_attempt_at_us),
        _instant(delivery.delivered_at_us),
        delivery.last_status_code,
        delivery.last_error,
        tuple(
            DeliveryAttempt(
                attempt.attempt_number,
                format_timestamp(attempt.at_us),
                attempt.status_code,
                attempt.error,
                attempt.duration_us,
            )
            for attempt in attempts
        ),
        decode_exact(delivery.body),
    )

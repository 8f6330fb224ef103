"""What the webhook service accepts: the event kinds, the bounds on each input, the
errors it answers with, and the check of each input (a URL's shape, the kinds an endpoint
subscribes to, its description, a published event). Where a URL may point is
``live.webhook_destinations``."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from meterline.core.live_documents import WebhookData
from meterline.errors import MeterlineError

WEBHOOK_KINDS = (
    "control.fired",
    "customer.blocked",
    "customer.unblocked",
    "invoice.finalized",
    "balance.low",
    "usage.unbillable",
    "invoice.overdue",
    "trial.started",
    "trial.ending",
    "trial.converted",
    "trial.cancelled",
    "threshold.reached",
)
ALL_KINDS = "*"
URL_LENGTH_MAX = 2048
DESCRIPTION_LENGTH_MAX = 1024
EVENT_ID_LENGTH_MAX = 256


class WebhookError(MeterlineError, ValueError):
    """Bad input to the webhook service; the message starts with the field it names."""

    code = "invalid_input"
    http_status = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class WebhookNotFound(MeterlineError, LookupError):
    """No endpoint or delivery with the given id."""

    code = "not_found"
    http_status = 404


class EndpointDisabled(MeterlineError, RuntimeError):
    """The delivery's endpoint is disabled, so it cannot be sent again."""

    code = "endpoint_disabled"
    http_status = 409


def check_url(url: object) -> str:
    if not isinstance(url, str):
        raise WebhookError("url", "must be a string")
    if len(url) > URL_LENGTH_MAX:
        raise WebhookError("url", f"longer than {URL_LENGTH_MAX} characters")
    if any(character.isspace() or ord(character) < 32 for character in url):
        raise WebhookError("url", "must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises on a port that is not a number in range
    except ValueError as error:
        raise WebhookError("url", f"{url[:80]!r} is not a URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookError("url", f"must be http:// or https://, got {url[:80]!r}")
    if not parts.hostname:
        raise WebhookError("url", f"has no host: {url[:80]!r}")
    if parts.username is not None or parts.password is not None:
        raise WebhookError("url", "must not carry credentials (the signature authenticates)")
    return url


def check_kinds(kinds: object) -> tuple[str, ...]:
    if isinstance(kinds, str | bytes) or not isinstance(kinds, Sequence):
        raise WebhookError("kinds", "must be a list of event kinds")
    if not kinds:
        raise WebhookError("kinds", f"name at least one of {', '.join(WEBHOOK_KINDS)} or '*'")
    checked: list[str] = []
    for kind in kinds:
        if kind != ALL_KINDS and kind not in WEBHOOK_KINDS:
            raise WebhookError(
                "kinds", f"{str(kind)[:80]!r} is not one of {', '.join(WEBHOOK_KINDS)} or '*'"
            )
        if kind not in checked:
            checked.append(kind)
    return tuple(checked)


def check_description(description: object) -> str:
    if not isinstance(description, str):
        raise WebhookError("description", "must be a string")
    if len(description) > DESCRIPTION_LENGTH_MAX:
        raise WebhookError("description", f"longer than {DESCRIPTION_LENGTH_MAX} characters")
    return description


def check_event(kind: object, event_id: object, data: object) -> None:
    if kind not in WEBHOOK_KINDS:
        raise WebhookError("kind", f"{str(kind)[:80]!r} is not one of {', '.join(WEBHOOK_KINDS)}")
    if not isinstance(event_id, str) or not event_id:
        raise WebhookError("event_id", "must be a non-empty string")
    if len(event_id) > EVENT_ID_LENGTH_MAX:
        raise WebhookError("event_id", f"longer than {EVENT_ID_LENGTH_MAX} characters")
    if not isinstance(data, dict | WebhookData):
        raise WebhookError("data", "must be a JSON object (a dict or a WebhookData record)")

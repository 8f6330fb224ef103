"""Outgoing webhooks: signed, at-least-once, retried with exponential backoff, logged.

``Webhooks.publish`` turns an event into one durable pending delivery per subscribed
endpoint (no network I/O: the live engine calls it); ``Webhooks.deliver_due`` POSTs what
is due and records every attempt; ``Dispatcher`` runs that in a background thread.
Invariants: a delivery's body is fixed when it is published (the bytes signed and sent
on every attempt); an event id reaches an endpoint as one delivery however often it is
published; one endpoint's deliveries go out in creation order (a later one waits while an
earlier one is retrying); nothing is lost on a restart, since the work queue is the
SQLite file. Signatures follow Stripe's scheme (``t=<seconds>,v1=<hex HMAC-SHA256>``).

Where a webhook may go (``live.webhook_destinations``: public addresses only, unless
private ones are allowed) is checked when an endpoint subscribes and again at every
delivery. The inputs and their errors are ``live.webhook_inputs``; signing, retrying and
the ``Dispatcher`` thread ``live.webhook_delivery``; the JSON documents
``live.webhook_documents``. This module re-exports their public names.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from meterline import __version__
from meterline.clock import system_clock_us
from meterline.core.events import encode_canonical, format_timestamp
from meterline.core.live_documents import WebhookData
from meterline.ledger.webhook_records import (
    DELIVERIES_PAGE_MAX,
    DELIVERY_STATUSES,
    Attempt,
    AttemptOutcome,
    Delivery,
    Endpoint,
    WebhookStore,
)
from meterline.live.webhook_delivery import (
    ATTEMPT_HEADER,
    DELIVERY_ID_HEADER,
    ERROR_TEXT_LENGTH_MAX,
    EVENT_ID_HEADER,
    KIND_HEADER,
    PASS_ATTEMPTS_MAX,
    SIGNATURE_HEADER,
    Dispatcher,
    RetryPolicy,
    attempt_outcome,
    error_text,
    sign,
)
from meterline.live.webhook_destinations import (
    ALLOW_PRIVATE_ENV,
    Destination,
    Resolver,
    address_refusal,
    allow_private_from_environment,
    destination,
    resolve_host,
)
from meterline.live.webhook_documents import delivery_document, endpoint_document
from meterline.live.webhook_inputs import (
    EndpointDisabled,
    WebhookError,
    WebhookNotFound,
    check_description,
    check_event,
    check_kinds,
    check_url,
)

__all__ = [
    "ALLOW_PRIVATE_ENV",
    "ATTEMPT_HEADER",
    "DELIVERY_ID_HEADER",
    "EVENT_ID_HEADER",
    "KIND_HEADER",
    "SIGNATURE_HEADER",
    "Dispatcher",
    "EndpointDisabled",
    "RetryPolicy",
    "WebhookError",
    "WebhookNotFound",
    "Webhooks",
    "address_refusal",
    "delivery_document",
    "endpoint_document",
    "resolve_host",
    "sign",
]

ENDPOINTS_CACHE_S = 1.0
"""How long ``publish`` trusts its list of enabled endpoints (see ``_enabled_endpoints``)."""
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
BODY_BYTES_MAX = 256 * 1024
"""Largest envelope ``publish`` accepts (the canonical JSON bytes)."""

_log = logging.getLogger("meterline.webhooks")


def _reason(error: OSError) -> str:
    """An ``OSError``'s own words (``Name or service not known``), not its errno."""
    return str(error.strerror or error)


class Webhooks:
    """Endpoints, publishing, delivery and the delivery log over one ``WebhookStore``."""

    def __init__(
        self,
        store: WebhookStore,
        clock: Callable[[], int] = system_clock_us,
        policy: RetryPolicy = RetryPolicy(),
        allow_private: bool | None = None,
        resolve: Resolver = resolve_host,
    ) -> None:
        """``allow_private``: send to loopback, link-local and private addresses too (None:
        as ``METERLINE_WEBHOOKS_ALLOW_PRIVATE`` says; unset, they are refused).
        ``resolve``: the host lookup (tests give their own)."""
        self.store = store
        self.clock = clock
        self.policy = policy
        self.allow_private = (
            allow_private_from_environment() if allow_private is None else allow_private
        )
        self.resolve = resolve
        self._listeners: list[Callable[[], None]] = []
        self._endpoints_cache: tuple[float, list[Endpoint]] | None = None

    # -- destinations ------------------------------------------------------------------------

    def destination(self, url: str) -> Destination | None:
        """Where a POST to ``url`` may connect: None when private addresses are allowed
        (the URL is used as it is); else the first address the host resolves to, every
        one of them checked. Raises ``WebhookError`` (field ``url``) naming a refused
        address, ``OSError`` when the host does not resolve."""
        if self.allow_private:
            return None
        return destination(url, self.resolve)

    # -- endpoints ---------------------------------------------------------------------------

    def subscribe(
        self, url: str, kinds: Sequence[str], description: str = ""
    ) -> tuple[Endpoint, str]:
        """Add an endpoint; returns it and its signing secret (shown to the caller once).
        Unless private destinations are allowed, the URL's host must resolve, and only
        to public addresses (``WebhookError`` on ``url`` says why not)."""
        endpoint = Endpoint(
            f"we_{secrets.token_hex(8)}",
            check_url(url),
            check_kinds(kinds),
            check_description(description),
            self.clock(),
        )
        try:
            self.destination(endpoint.url)
        except OSError as error:
            host = urlsplit(endpoint.url).hostname
            raise WebhookError("url", f"{host} does not resolve ({_reason(error)})") from None
        secret = SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
        self.store.add_endpoint(endpoint, secret)
        self._endpoints_cache = None
        return endpoint, secret

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint, disabled ones too, in creation order."""
        return self.store.endpoints()

    def endpoint(self, endpoint_id: str) -> Endpoint:
        found = self.store.endpoint(endpoint_id)
        if found is None:
            raise WebhookNotFound(f"no webhook endpoint {endpoint_id!r}")
        return found

    def disable(self, endpoint_id: str) -> Endpoint:
        """Stop sending to an endpoint: it gets no new deliveries, and its pending ones
        fail with ``endpoint disabled``. Idempotent; nothing is deleted."""
        disabled = self.store.disable_endpoint(endpoint_id, self.clock())
        self._endpoints_cache = None
        if disabled is None:
            raise WebhookNotFound(f"no webhook endpoint {endpoint_id!r}")
        return disabled

    # -- publishing --------------------------------------------------------------------------

    def on_due(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (cheap, non-blocking) whenever deliveries become due."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    def publish(self, kind: str, data: WebhookData | dict[str, Any], event_id: str) -> list[str]:
        """Owe the event to every enabled endpoint subscribed to ``kind``: one durable
        pending delivery each, due now. Returns the delivery ids; publishing the same
        ``event_id`` again returns the existing ones and changes nothing (the first
        envelope is the one sent). No network I/O. ``data``: a live record
        (``core.live_documents``), or plain data (billing's ``usage.unbillable``); either
        is written canonical, its keys sorted."""
        check_event(kind, event_id, data)
        if not any(endpoint.subscribes_to(kind) for endpoint in self._enabled_endpoints()):
            return []
        now_us = self.clock()
        envelope = {"id": event_id, "kind": kind, "created": format_timestamp(now_us)}
        try:
            body = encode_canonical({**envelope, "data": data})
        except (TypeError, ValueError) as error:
            raise WebhookError("data", f"cannot be encoded as JSON ({error})") from None
        if len(body) > BODY_BYTES_MAX:
            raise WebhookError("data", f"envelope is {len(body)} bytes; at most {BODY_BYTES_MAX}")
        delivery_ids, created = self.store.add_deliveries(
            kind, event_id, body, now_us, lambda: f"wd_{secrets.token_hex(12)}"
        )
        if created:
            self._notify()
        return delivery_ids

    def _enabled_endpoints(self) -> list[Endpoint]:
        """The enabled endpoints, read at most every ``ENDPOINTS_CACHE_S`` (the live
        engine publishes per firing; an endpoint added by another process is seen within
        that time, one added or disabled here at once)."""
        now = time.monotonic()
        cached = self._endpoints_cache
        if cached is None or now - cached[0] >= ENDPOINTS_CACHE_S:
            cached = self._endpoints_cache = (now, self.store.endpoints(True))
        return cached[1]

    # -- delivering --------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        """An HTTP client for deliveries: the policy's timeout, no redirects followed."""
        return httpx.Client(
            timeout=self.policy.timeout_s,
            follow_redirects=False,
            headers={"User-Agent": f"meterline-webhooks/{__version__}"},
        )

    def deliver_due(self, now_us: int | None = None, client: httpx.Client | None = None) -> int:
        """Attempt every due delivery once (at most ``PASS_ATTEMPTS_MAX``), oldest first per
        endpoint; ``now_us`` fixes the time used (default: the clock at each attempt).
        Returns how many attempts were made."""
        if client is None:
            with self.client() as owned:
                return self._deliver_due(now_us, owned)
        return self._deliver_due(now_us, client)

    def _deliver_due(self, now_us: int | None, client: httpx.Client) -> int:
        current = self.clock if now_us is None else (lambda: now_us)
        made = 0
        while made < PASS_ATTEMPTS_MAX:
            claimed = self.store.claim_due(
                current(), self.policy.lease_us, PASS_ATTEMPTS_MAX - made
            )
            if not claimed:
                break
            for delivery in claimed:
                self._attempt(client, delivery, current())
                made += 1
        return made

    def _attempt(self, client: httpx.Client, delivery: Delivery, at_us: int) -> Delivery:
        number = delivery.attempts + 1
        endpoint = self.store.endpoint(delivery.endpoint_id)
        secret = self.store.secret(delivery.endpoint_id)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret or "", at_us // 1_000_000, delivery.body),
            EVENT_ID_HEADER: delivery.event_id,
            KIND_HEADER: delivery.kind,
            ATTEMPT_HEADER: str(number),
            DELIVERY_ID_HEADER: delivery.delivery_id,
        }
        status_code: int | None = None
        error: str | None = None
        started_ns = time.monotonic_ns()
        try:
            if endpoint is None or secret is None:
                raise WebhookNotFound(f"endpoint {delivery.endpoint_id!r} is gone")
            url, extensions = endpoint.url, {}
            target = self.destination(endpoint.url)  # again: DNS may have changed
            if target is not None:
                url = target.url
                headers["Host"] = target.host_header
                if target.sni_hostname is not None:
                    extensions["sni_hostname"] = target.sni_hostname
                    headers["Connection"] = "close"  # no pooled TLS session for another name
            with client.stream(
                "POST", url, content=delivery.body, headers=headers, extensions=extensions
            ) as response:
                status_code = response.status_code
        except WebhookError as refused:
            # the destination is not allowed: no attempt will change that, so no retries
            duration_us = (time.monotonic_ns() - started_ns) // 1000
            reason = f"refused: {refused}"[:ERROR_TEXT_LENGTH_MAX]
            _log.warning(
                "webhook delivery %s to %s refused: %s",
                delivery.delivery_id,
                delivery.endpoint_id,
                refused,
            )
            attempt = Attempt(delivery.delivery_id, number, at_us, None, reason, duration_us)
            return self.store.record_attempt(AttemptOutcome(attempt, "failed", None))
        except Exception as failure:
            # Whatever stops a send (timeout, refused connection, a name that does not
            # resolve, bad stored URL) is this attempt's outcome: recorded and retried,
            # never raised out of the pass.
            error = error_text(failure)
        duration_us = (time.monotonic_ns() - started_ns) // 1000
        if status_code is not None and not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
        attempt = Attempt(delivery.delivery_id, number, at_us, status_code, error, duration_us)
        return self.store.record_attempt(attempt_outcome(self.policy, delivery, attempt))

    # -- the delivery log --------------------------------------------------------------------

    def deliveries(
        self, endpoint_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[Delivery]:
        """The newest deliveries first, optionally of one endpoint or in one status."""
        if status is not None and status not in DELIVERY_STATUSES:
            raise WebhookError("status", f"must be one of {', '.join(DELIVERY_STATUSES)}")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise WebhookError("limit", "must be an integer")
        if not 1 <= limit <= DELIVERIES_PAGE_MAX:
            raise WebhookError("limit", f"must be 1 to {DELIVERIES_PAGE_MAX}, got {limit}")
        if endpoint_id is not None:
            self.endpoint(endpoint_id)
        return self.store.deliveries(endpoint_id, status, limit)

    def delivery(self, delivery_id: str) -> Delivery:
        found = self.store.delivery(delivery_id)
        if found is None:
            raise WebhookNotFound(f"no webhook delivery {delivery_id!r}")
        return found

    def attempts(self, delivery_id: str) -> list[Attempt]:
        """The delivery's attempts, in the order they were made."""
        return self.store.attempts(delivery_id)

    def redeliver(self, delivery_id: str) -> Delivery:
        """Send a delivery again: it becomes pending and due now, attempt numbers continue
        and the retry schedule starts over."""
        delivery = self.delivery(delivery_id)
        endpoint = self.store.endpoint(delivery.endpoint_id)
        if endpoint is None or not endpoint.enabled:
            raise EndpointDisabled(
                f"endpoint {delivery.endpoint_id!r} is disabled; {delivery_id!r} cannot be sent"
            )
        requeued = self.store.requeue(delivery_id, self.clock())
        if requeued is None:
            raise WebhookNotFound(f"no webhook delivery {delivery_id!r}")
        self._notify()
        return requeued

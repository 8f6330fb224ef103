"""Outgoing webhooks: signed, at-least-once, retried with exponential backoff, logged.

``Webhooks.publish`` turns an event into one durable pending delivery per subscribed
endpoint (no network I/O: the live engine calls it); ``Webhooks.deliver_due`` POSTs what
is due and records every attempt; ``Dispatcher`` runs that in a background thread.
Invariants: a delivery's body is fixed when it is published (the bytes signed and sent
on every attempt); an event id reaches an endpoint as one delivery however often it is
published; one endpoint's deliveries go out in creation order (a later one waits while an
earlier one is retrying); nothing is lost on a restart, since the work queue is the
SQLite file. Signatures follow Stripe's scheme (``t=<seconds>,v1=<hex HMAC-SHA256>``).

Destinations (SSRF defence): a webhook URL names a host anyone with an admin key chose,
and meterline POSTs to it from inside the network. Unless private destinations are
allowed (``allow_private``, default the ``METERLINE_WEBHOOKS_ALLOW_PRIVATE`` environment
variable), ``subscribe`` resolves the host and refuses it if any address is loopback,
link-local (169.254.169.254, the cloud metadata service, is one), private (RFC 1918,
unique local fc00::/7), unspecified, multicast or otherwise not globally routable (an IPv6
address embedding an IPv4 one is judged by it). Every delivery resolves the host again
(DNS can change after a subscription): a refused address fails the delivery at once,
the reason recorded as its error, and a permitted one is the very address connected to
(the URL's host kept in ``Host`` and, over TLS, in SNI and certificate checks), so a
name cannot resolve one way for the check and another for the connection.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from meterline import __version__
from meterline.clock import system_clock_us
from meterline.core.events import decode_exact, encode_canonical, format_timestamp
from meterline.errors import MeterlineError
from meterline.ledger.webhooks import (
    DELIVERIES_PAGE_MAX,
    DELIVERY_STATUSES,
    Attempt,
    AttemptOutcome,
    Delivery,
    Endpoint,
    WebhookStore,
)

WEBHOOK_KINDS = (
    "control.fired",
    "customer.blocked",
    "customer.unblocked",
    "invoice.finalized",
    "balance.low",
    "usage.unbillable",
)
ALL_KINDS = "*"
ENDPOINTS_CACHE_S = 1.0
"""How long ``publish`` trusts its list of enabled endpoints (see ``_enabled_endpoints``)."""
SIGNATURE_HEADER = "Meterline-Signature"
EVENT_ID_HEADER = "Meterline-Event-Id"
KIND_HEADER = "Meterline-Event-Kind"
ATTEMPT_HEADER = "Meterline-Delivery-Attempt"
DELIVERY_ID_HEADER = "Meterline-Delivery-Id"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
URL_LENGTH_MAX = 2048
DESCRIPTION_LENGTH_MAX = 1024
EVENT_ID_LENGTH_MAX = 256
BODY_BYTES_MAX = 256 * 1024
"""Largest envelope ``publish`` accepts (the canonical JSON bytes)."""
PASS_ATTEMPTS_MAX = 100
"""Most attempts one ``deliver_due`` call makes; the rest wait for the next call."""
ERROR_TEXT_LENGTH_MAX = 500
LEASE_MARGIN_US = 60_000_000
"""Added to the worst-case attempt time while a claimed delivery is in flight."""

ALLOW_PRIVATE_ENV = "METERLINE_WEBHOOKS_ALLOW_PRIVATE"
"""Set to 1 (true, yes, on) to let webhooks go to loopback, link-local and private
addresses (a receiver on the same host or network); ``Webhooks(allow_private=...)`` and
``meterline serve --webhooks-allow-private`` say the same explicitly."""
_TRUE = ("1", "true", "yes", "on")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_RFC1918 = tuple(
    ipaddress.ip_network(block) for block in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_ALLOW_HINT = (
    f"webhooks go to public addresses only (allow private ones with {ALLOW_PRIVATE_ENV}=1"
    " or `meterline serve --webhooks-allow-private`)"
)

Resolver = Callable[[str, int], list[str]]
"""``(host, port)`` -> every address the host resolves to (an IP literal: itself);
raises ``OSError`` when it does not resolve."""

_log = logging.getLogger("meterline.webhooks")


def allow_private_from_environment() -> bool:
    """Whether ``METERLINE_WEBHOOKS_ALLOW_PRIVATE`` allows private destinations."""
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in _TRUE


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to for a TCP connection, in the resolver's order;
    ``OSError`` when it does not resolve, or is no host name at all (too long a label)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as error:  # the IDNA codec refuses it before any lookup
        raise OSError(f"not a valid host name ({error})") from error
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def address_refusal(address: str) -> str | None:
    """Why a webhook may not go to ``address`` (``"a loopback address"``), or None for a
    public one. An IPv4-mapped, NAT64, 6to4 or Teredo IPv6 address is judged by the IPv4
    address it carries."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_refusal(str(embedded))
            return None if inner is None else f"{inner}, by the IPv4 address {embedded} in it"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    metadata = " (cloud metadata)" if ip in _METADATA else ""
    if ip.is_link_local:
        return f"a link-local address{metadata}"
    if ip.is_multicast:
        return "a multicast address"
    if any(ip in block for block in _RFC1918):
        return "a private address (RFC 1918)"
    if ip in _UNIQUE_LOCAL:
        return f"a private address (unique local, fc00::/7){metadata}"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "a reserved address (not globally routable)"
    return None


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a delivery connects: ``url`` is the endpoint's URL with its host replaced by
    the address checked; ``host_header`` the original host (and port) for ``Host``;
    ``sni_hostname`` the original host for TLS (None over plain http)."""

    url: str
    host_header: str
    sni_hostname: str | None


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


def sign(secret: str, timestamp_s: int, body: bytes) -> str:
    """The signature header value: ``t=<timestamp_s>,v1=<hex HMAC-SHA256>`` of
    ``"<timestamp_s>." + body`` keyed by the secret (Stripe's scheme)."""
    digest = hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256)
    return f"t={timestamp_s},v1={digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a delivery is tried: ``attempts_max`` attempts in all,
    the n-th failure waiting ``first_delay_ms * factor ** (n - 1)``, at most
    ``max_delay_ms``; each attempt times out after ``timeout_s`` per network phase."""

    attempts_max: int = 8
    first_delay_ms: int = 500
    factor: int = 2
    max_delay_ms: int = 60_000
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        problems = [
            (self.attempts_max < 1, "attempts_max: must be at least 1"),
            (self.first_delay_ms < 0, "first_delay_ms: must not be negative"),
            (self.factor < 1, "factor: must be at least 1"),
            (self.max_delay_ms < self.first_delay_ms, "max_delay_ms: below first_delay_ms"),
            (not self.timeout_s > 0, "timeout_s: must be positive"),
        ]
        for failed, message in problems:
            if failed:
                raise ValueError(message)

    def delay_after(self, attempt_number: int) -> int:
        """Microseconds to wait after failed attempt ``attempt_number`` (1-based)."""
        if attempt_number < 1:
            raise ValueError(f"attempt_number: must be at least 1, got {attempt_number}")
        delay_ms = self.first_delay_ms
        for _ in range(attempt_number - 1):
            if delay_ms >= self.max_delay_ms:
                break
            delay_ms *= self.factor
        return min(delay_ms, self.max_delay_ms) * 1000

    @property
    def lease_us(self) -> int:
        """How long a claimed delivery stays hidden from other senders: four timeouts
        (connect, write, read, pool) and a margin."""
        return int(self.timeout_s * 4 * 1_000_000) + LEASE_MARGIN_US


def _check_url(url: object) -> str:
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


def _check_kinds(kinds: object) -> tuple[str, ...]:
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


def _check_description(description: object) -> str:
    if not isinstance(description, str):
        raise WebhookError("description", "must be a string")
    if len(description) > DESCRIPTION_LENGTH_MAX:
        raise WebhookError("description", f"longer than {DESCRIPTION_LENGTH_MAX} characters")
    return description


def _check_event(kind: object, event_id: object, data: object) -> None:
    if kind not in WEBHOOK_KINDS:
        raise WebhookError("kind", f"{str(kind)[:80]!r} is not one of {', '.join(WEBHOOK_KINDS)}")
    if not isinstance(event_id, str) or not event_id:
        raise WebhookError("event_id", "must be a non-empty string")
    if len(event_id) > EVENT_ID_LENGTH_MAX:
        raise WebhookError("event_id", f"longer than {EVENT_ID_LENGTH_MAX} characters")
    if not isinstance(data, dict):
        raise WebhookError("data", "must be a JSON object (a dict)")


def _reason(error: OSError) -> str:
    """An ``OSError``'s own words (``Name or service not known``), not its errno."""
    return str(error.strerror or error)


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:ERROR_TEXT_LENGTH_MAX]


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
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = self.resolve(host, port)
        if not addresses:
            raise OSError(f"{host} resolves to no address")
        for address in addresses:
            refusal = address_refusal(address)
            if refusal is not None:
                subject = f"{address} is" if address == host else f"{host} resolves to {address},"
                raise WebhookError("url", f"{subject} {refusal}; {_ALLOW_HINT}")
        chosen = addresses[0].split("%", 1)[0]
        literal = f"[{chosen}]" if ":" in chosen else chosen
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        return Destination(
            parts._replace(netloc=netloc).geturl(),
            parts.netloc,
            host if parts.scheme == "https" else None,
        )

    # -- endpoints ---------------------------------------------------------------------------

    def subscribe(
        self, url: str, kinds: Sequence[str], description: str = ""
    ) -> tuple[Endpoint, str]:
        """Add an endpoint; returns it and its signing secret (shown to the caller once).
        Unless private destinations are allowed, the URL's host must resolve, and only
        to public addresses (``WebhookError`` on ``url`` says why not)."""
        endpoint = Endpoint(
            f"we_{secrets.token_hex(8)}",
            _check_url(url),
            _check_kinds(kinds),
            _check_description(description),
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

    def publish(self, kind: str, data: dict[str, Any], event_id: str) -> list[str]:
        """Owe the event to every enabled endpoint subscribed to ``kind``: one durable
        pending delivery each, due now. Returns the delivery ids; publishing the same
        ``event_id`` again returns the existing ones and changes nothing (the first
        envelope is the one sent). No network I/O."""
        _check_event(kind, event_id, data)
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
            error = _error_text(failure)
        duration_us = (time.monotonic_ns() - started_ns) // 1000
        if status_code is not None and not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
        attempt = Attempt(delivery.delivery_id, number, at_us, status_code, error, duration_us)
        return self.store.record_attempt(self._outcome(delivery, attempt))

    def _outcome(self, delivery: Delivery, attempt: Attempt) -> AttemptOutcome:
        if attempt.error is None:
            return AttemptOutcome(attempt, "delivered", None)
        in_series = attempt.attempt_number - delivery.attempts_at_requeue
        if in_series >= self.policy.attempts_max:
            _log.warning(
                "webhook delivery %s to %s failed after %d attempts: %s",
                delivery.delivery_id,
                delivery.endpoint_id,
                in_series,
                attempt.error,
            )
            return AttemptOutcome(attempt, "failed", None)
        next_at = attempt.at_us + self.policy.delay_after(in_series)
        _log.info(
            "webhook delivery %s attempt %d failed (%s); next attempt at %s",
            delivery.delivery_id,
            attempt.attempt_number,
            attempt.error,
            format_timestamp(next_at),
        )
        return AttemptOutcome(attempt, "pending", next_at)

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


class Dispatcher:
    """A daemon thread that delivers what is due, every ``poll_s`` or when woken."""

    def __init__(self, webhooks: Webhooks, poll_s: float = 0.2) -> None:
        self.webhooks = webhooks
        self.poll_s = poll_s
        self._woken = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Dispatcher:
        if self._thread is not None:
            raise RuntimeError("dispatcher already started")
        self._thread = threading.Thread(target=self._run, name="meterline-webhooks", daemon=True)
        self.webhooks.on_due(self.wake)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Deliver now rather than at the next poll (after a publish)."""
        self._woken.set()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop after the attempt in flight; True if the thread ended within ``timeout``."""
        self._stopping.set()
        self._woken.set()
        self.webhooks.remove_listener(self.wake)
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> Dispatcher:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        with self.webhooks.client() as client:
            while not self._stopping.is_set():
                self._woken.clear()
                made = 0
                try:
                    made = self.webhooks.deliver_due(client=client)
                except Exception:
                    # The store itself failed (disk, lock timeout): log it and poll again.
                    _log.exception("webhook delivery pass failed")
                if made < PASS_ATTEMPTS_MAX:
                    self._woken.wait(self.poll_s)

"""Sending webhooks: the headers and Stripe-style signature of each attempt
(``t=<seconds>,v1=<hex HMAC-SHA256>``), the retry policy (exponential backoff, a lease
while an attempt is in flight), what an attempt leaves its delivery, and ``Dispatcher``,
the background thread that delivers what is due (``Webhooks.deliver_due``)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from meterline.core.events import format_timestamp
from meterline.ledger.webhook_records import Attempt, AttemptOutcome, Delivery

SIGNATURE_HEADER = "Meterline-Signature"
EVENT_ID_HEADER = "Meterline-Event-Id"
KIND_HEADER = "Meterline-Event-Kind"
ATTEMPT_HEADER = "Meterline-Delivery-Attempt"
DELIVERY_ID_HEADER = "Meterline-Delivery-Id"
PASS_ATTEMPTS_MAX = 100
"""Most attempts one ``deliver_due`` call makes; the rest wait for the next call."""
ERROR_TEXT_LENGTH_MAX = 500
LEASE_MARGIN_US = 60_000_000
"""Added to the worst-case attempt time while a claimed delivery is in flight."""

_log = logging.getLogger("meterline.webhooks")


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


def error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:ERROR_TEXT_LENGTH_MAX]


def attempt_outcome(policy: RetryPolicy, delivery: Delivery, attempt: Attempt) -> AttemptOutcome:
    """What an attempt leaves its delivery: delivered, failed after the policy's last
    attempt of its series, or pending until the backoff has passed."""
    if attempt.error is None:
        return AttemptOutcome(attempt, "delivered", None)
    in_series = attempt.attempt_number - delivery.attempts_at_requeue
    if in_series >= policy.attempts_max:
        _log.warning(
            "webhook delivery %s to %s failed after %d attempts: %s",
            delivery.delivery_id,
            delivery.endpoint_id,
            in_series,
            attempt.error,
        )
        return AttemptOutcome(attempt, "failed", None)
    next_at = attempt.at_us + policy.delay_after(in_series)
    _log.info(
        "webhook delivery %s attempt %d failed (%s); next attempt at %s",
        delivery.delivery_id,
        attempt.attempt_number,
        attempt.error,
        format_timestamp(next_at),
    )
    return AttemptOutcome(attempt, "pending", next_at)


class DueDeliveries(Protocol):
    """What a ``Dispatcher`` drives (``live.webhook_service.Webhooks``)."""

    def client(self) -> httpx.Client: ...

    def deliver_due(self, now_us: int | None = None, client: httpx.Client | None = None) -> int: ...

    def on_due(self, listener: Callable[[], None]) -> None: ...

    def remove_listener(self, listener: Callable[[], None]) -> None: ...


class Dispatcher:
    """A daemon thread that delivers what is due, every ``poll_s`` or when woken."""

    def __init__(self, webhooks: DueDeliveries, poll_s: float = 0.2) -> None:
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

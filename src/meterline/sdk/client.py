"""``meterline.Client``: send usage from a product without slowing it down.

``track()`` builds the event (id and timestamp fixed at call time, so a retry resends the
very same event) and puts it on a bounded queue; it never waits longer than
``enqueue_timeout_s`` and raises ``QueueFull`` rather than drop silently. A background
thread sends batches of up to ``batch_events_max``, retrying with capped exponential
backoff and jitter on connection errors, 408, 429 and 5xx; idempotency on the server makes
a resend safe. ``flush()`` waits for the queue to drain; ``close()`` (also at interpreter
exit) flushes and stops the thread.
"""

from __future__ import annotations

import atexit
import queue
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from meterline.core.outcomes import BatchOutcome
from meterline.errors import MeterlineError

if TYPE_CHECKING:
    import httpx

_ENCODER = msgspec.json.Encoder(decimal_format="number")
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class QueueFull(MeterlineError):
    """The client's bounded queue stayed full for the whole enqueue timeout."""

    code = "queue_full"
    http_status = 503


@dataclass
class DeliveryReport:
    """What the client has delivered so far, counted per outcome."""

    accepted: int = 0
    duplicate: int = 0
    conflict: int = 0
    rejected: int = 0
    retries: int = 0
    undelivered: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)


def _close_at_exit(reference: weakref.ref[Client]) -> None:
    client = reference()
    if client is not None:
        client.close()


class Client:
    """A batching, retrying client for ``POST /v1/events``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        batch_events_max: int = 500,
        flush_interval_s: float = 0.5,
        queue_events_max: int = 100_000,
        enqueue_timeout_s: float = 0.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        request_timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        on_rejected: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if not 1 <= batch_events_max <= 10_000:
            raise ValueError("batch_events_max must be between 1 and 10000")
        if queue_events_max < batch_events_max:
            raise ValueError("queue_events_max must be at least batch_events_max")
        self.batch_events_max = batch_events_max
        self.flush_interval_s = flush_interval_s
        self.enqueue_timeout_s = enqueue_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.report = DeliveryReport()
        self._on_rejected = on_rejected
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(queue_events_max)
        import httpx  # here, not at the top: importing the SDK stays light

        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            timeout=request_timeout_s,
            transport=transport,
        )
        self._closing = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._sender = threading.Thread(target=self._run, name="meterline-sender", daemon=True)
        self._sender.start()
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- the caller's side ---------------------------------------------------------------

    def track(
        self,
        customer: str,
        type: str,
        properties: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        timestamp: datetime | None = None,
    ) -> str:
        """Queue one event; returns its id. Raises ``QueueFull`` past the enqueue timeout."""
        if self._closing.is_set():
            raise RuntimeError("client is closed")
        event_id = id or uuid.uuid4().hex
        moment = timestamp or datetime.now(UTC)
        event = {
            "id": event_id,
            "customer": customer,
            "type": type,
            "timestamp": moment.isoformat(),
            "properties": dict(properties or {}),
        }
        with self._idle:
            self._in_flight += 1
        try:
            if self.enqueue_timeout_s > 0:
                self._queue.put(event, timeout=self.enqueue_timeout_s)
            else:
                self._queue.put_nowait(event)
        except queue.Full:
            self._done(1)
            raise QueueFull(
                f"{self._queue.maxsize} events are waiting to be sent; the server may be down"
            ) from None
        return event_id

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued event was answered; False if ``timeout_s`` ran out."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._idle:
            while self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining if remaining is not None else 0.5)
        return True

    def close(self, timeout_s: float = 30.0) -> DeliveryReport:
        """Flush (up to ``timeout_s``), stop the sender and report what was delivered."""
        if not self._closing.is_set():
            self.flush(timeout_s)
            self._closing.set()
            self._sender.join(timeout=timeout_s)
            self._http.close()
            # Events still queued when the sender stopped were never attempted.
            self.report.undelivered += self._queue.qsize()
        return self.report

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the sender's side ---------------------------------------------------------------

    def _done(self, count: int) -> None:
        with self._idle:
            self._in_flight -= count
            if not self._in_flight:
                self._idle.notify_all()

    def _next_batch(self) -> list[dict[str, Any]]:
        try:
            batch = [self._queue.get(timeout=self.flush_interval_s)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.flush_interval_s
        while len(batch) < self.batch_events_max:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not (self._closing.is_set() and self._queue.empty()):
            batch = self._next_batch()
            if batch:
                self._deliver(batch)

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        answer = self._post_until_answered(_ENCODER.encode(batch))
        if answer is None:
            self.report.undelivered += len(batch)
        else:
            self._record(batch, *answer)
        self._done(len(batch))

    def _post_until_answered(self, body: bytes) -> tuple[int, bytes] | None:
        """POST ``body`` until the server answers it for good; None if closing gave up."""
        import httpx

        delay = self.backoff_initial_s
        while True:
            try:
                response = self._http.post("/v1/events", content=body)
                if response.status_code not in _RETRYABLE_STATUS:
                    return response.status_code, response.content
            except httpx.TransportError:
                pass
            if self._closing.is_set():
                return None
            self.report.retries += 1
            time.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.backoff_max_s)

    def _reject(self, detail: dict[str, Any]) -> None:
        self.report.rejections.append(detail)
        if self._on_rejected:
            self._on_rejected(detail)

    def _record(self, batch: list[dict[str, Any]], status: int, content: bytes) -> None:
        report = self.report
        try:
            outcome = msgspec.json.decode(content, type=BatchOutcome)
        except msgspec.DecodeError:
            # Refused whole (401, 403, 413, 415): the server stored none of it.
            report.rejected += len(batch)
            error = msgspec.json.decode(content) if content.startswith(b"{") else {}
            self._reject({"status": status, "events": len(batch), "error": error.get("error")})
            return
        report.accepted += outcome.accepted
        report.duplicate += outcome.duplicate
        report.conflict += outcome.conflict
        report.rejected += outcome.rejected
        for result in outcome.results:
            if result.status in ("rejected", "conflict"):
                self._reject(msgspec.to_builtins(result))

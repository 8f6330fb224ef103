"""``meterline.sdk.gate.Gate``: answer "may this customer use this feature now?" locally.

The gate owns a local copy of the server's access decisions, kept fresh by the server's
push stream (``GET /v1/access/stream``, Server-Sent Events), and the answers drawn from
it. A daemon thread connects, applies ``snapshot`` and ``change`` events and watches for
the stream going quiet; the caller's thread only reads.

The hot path, ``allowed()``, is one attribute load, one dict lookup and at most one
identity test and one frozenset membership test: no lock, no allocation. It reads a map
from each *blocked* customer to either ``_ALL`` (everything denied) or the frozenset of
denied features; a customer absent from that map is allowed. While the stream is not live
that map is replaced by ``None`` and every answer is the configured fail mode.

The stream counts as lost on a connection error, a non-200 answer, end of stream, a
malformed event, or no bytes at all (heartbeats included) for ``heartbeat_timeout_s``
(enforced by the HTTP read timeout, so a server that holds the connection open silently
is caught too). The gate then reconnects with capped exponential backoff; the next
snapshot replaces the local copy entirely.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    import httpx

__all__ = ["Decision", "Gate"]

_log = logging.getLogger(__name__)

STREAM_PATH = "/v1/access/stream"
"""Where the server publishes access decisions."""

CONNECT_TIMEOUT_S = 5.0
"""Upper bound on opening a connection (lowered to the heartbeat timeout if that is less)."""

CLOSE_JOIN_TIMEOUT_S = 5.0
"""How long ``close()`` waits for the gate's thread to stop."""

ERROR_BODY_BYTES_MAX = 512
"""How much of a non-200 answer's body is kept in ``last_error``."""

_NO_REMAINING: Mapping[str, Decimal] = MappingProxyType({})


def _no_remaining() -> Mapping[str, Decimal]:
    return _NO_REMAINING


GateStatus = Literal["connecting", "live", "lost", "closed"]
DecisionSource = Literal["stream", "fail-open", "fail-closed"]
FailMode = Literal["open", "closed"]


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer of the gate, with why it was given and where it came from."""

    allowed: bool
    reason: str
    source: DecisionSource
    policy: str | None = None
    remaining: Mapping[str, Decimal] = field(default_factory=_no_remaining, hash=False)
    threshold: Mapping[str, str] | None = field(default=None, hash=False)
    """Progress to the next progressive threshold (``so_far``, ``next``, ``of``), if any."""


class _All:
    """The marker for a customer denied every feature."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "_ALL"


_ALL = _All()

# -- the wire format ------------------------------------------------------------------------


class _WireDecision(msgspec.Struct, frozen=True):
    blocked: bool
    features: tuple[str, ...] = ()
    reason: str = ""
    policy: str | None = None
    remaining: dict[str, Decimal] = {}
    threshold: dict[str, str] | None = None


class _Snapshot(msgspec.Struct, frozen=True):
    version: int
    decisions: dict[str, _WireDecision]


class _Change(msgspec.Struct, frozen=True):
    version: int
    customer: str
    decision: _WireDecision


class _Heartbeat(msgspec.Struct, frozen=True):
    version: int


_SNAPSHOT_DECODER = msgspec.json.Decoder(_Snapshot)
_CHANGE_DECODER = msgspec.json.Decoder(_Change)
_HEARTBEAT_DECODER = msgspec.json.Decoder(_Heartbeat)


class _StreamBroken(Exception):
    """The stream said something the protocol does not allow, or answered other than 200."""


# -- decisions precomputed per customer -----------------------------------------------------

_NO_RESTRICTION = Decision(allowed=True, reason="no restriction", source="stream")


@dataclass(frozen=True, slots=True)
class _Entry:
    """One customer's decision as the server sent it, with both answers precomputed."""

    wire: _WireDecision
    denied: _All | frozenset[str] | None
    when_denied: Decision
    when_allowed: Decision

    @classmethod
    def of(cls, wire: _WireDecision) -> _Entry:
        remaining: Mapping[str, Decimal] = (
            MappingProxyType(dict(wire.remaining)) if wire.remaining else _NO_REMAINING
        )
        threshold = None if wire.threshold is None else MappingProxyType(dict(wire.threshold))
        denied: _All | frozenset[str] | None
        if not wire.blocked:
            denied = None
            allowed_reason = wire.reason or "not blocked"
        elif not wire.features:
            denied = _ALL
            allowed_reason = ""  # never used: every check is denied
        else:
            denied = frozenset(wire.features)
            blocked_list = ", ".join(sorted(denied))
            allowed_reason = f"only {blocked_list} blocked" + (
                f": {wire.reason}" if wire.reason else ""
            )
        return cls(
            wire=wire,
            denied=denied,
            when_denied=Decision(
                allowed=False,
                reason=wire.reason or "blocked",
                source="stream",
                policy=wire.policy,
                remaining=remaining,
                threshold=threshold,
            ),
            when_allowed=Decision(
                allowed=True,
                reason=allowed_reason,
                source="stream",
                policy=wire.policy,
                remaining=remaining,
                threshold=threshold,
            ),
        )

    def decide(self, feature: str | None) -> Decision:
        denied = self.denied
        if denied is None:
            return self.when_allowed
        if denied is _ALL or (feature is not None and feature in denied):  # type: ignore[operator]
            return self.when_denied
        return self.when_allowed


def _decision_for(entry: _Entry | None) -> Decision:
    """The customer-level answer (no feature named) reported to ``on_change`` callbacks."""
    return _NO_RESTRICTION if entry is None else entry.decide(None)


# -- the gate -------------------------------------------------------------------------------


class Gate:
    """An in-process access gate fed by ``GET /v1/access/stream``."""

    __slots__ = (
        "_blocked",
        "_callbacks",
        "_entries",
        "_fail_open",
        "_failing_phrase",
        "_first_snapshot",
        "_http",
        "_last_error",
        "_lost_since",
        "_response",
        "_status",
        "_stopping",
        "_thread",
        "_version",
        "fail_mode",
        "heartbeat_timeout_s",
        "reconnect_delay_max_s",
        "reconnect_delay_s",
    )

    def __init__(
        self,
        base_url: str,
        token: str,
        fail_mode: FailMode = "closed",
        heartbeat_timeout_s: float = 15.0,
        reconnect_delay_s: float = 0.5,
        reconnect_delay_max_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if fail_mode not in ("open", "closed"):
            raise ValueError("fail_mode must be 'open' or 'closed'")
        if heartbeat_timeout_s <= 0:
            raise ValueError("heartbeat_timeout_s must be positive")
        if reconnect_delay_s <= 0 or reconnect_delay_max_s < reconnect_delay_s:
            raise ValueError("need 0 < reconnect_delay_s <= reconnect_delay_max_s")
        self.fail_mode: FailMode = fail_mode
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.reconnect_delay_s = reconnect_delay_s
        self.reconnect_delay_max_s = reconnect_delay_max_s
        self._fail_open = fail_mode == "open"
        self._failing_phrase = "failing open" if self._fail_open else "failing closed"
        # Read by the hot path: blocked customer -> _ALL | frozenset of denied features,
        # or None while the stream is not live.
        self._blocked: dict[str, _All | frozenset[str]] | None = None
        self._entries: dict[str, _Entry] = {}
        self._status: GateStatus = "connecting"
        self._lost_since: float | None = None
        self._version = 0
        self._last_error: str | None = None
        self._callbacks: tuple[Callable[[str, Decision], None], ...] = ()
        self._first_snapshot = threading.Event()
        self._stopping = threading.Event()
        self._response: httpx.Response | None = None
        self._thread: threading.Thread | None = None
        import httpx  # here, not at the top: importing the SDK stays light

        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "text/event-stream",
                "Cache-Control": "no-cache",
            },
            timeout=httpx.Timeout(
                connect=min(CONNECT_TIMEOUT_S, heartbeat_timeout_s),
                read=heartbeat_timeout_s,
                write=CONNECT_TIMEOUT_S,
                pool=CONNECT_TIMEOUT_S,
            ),
            transport=transport,
        )

    # -- the caller's side ------------------------------------------------------------------

    def start(self, wait_s: float | None = 5.0) -> Gate:
        """Start the stream thread; wait up to ``wait_s`` (None: no limit) for a snapshot.

        Returns the gate either way; if no snapshot came in time, ``status`` is not "live"
        and answers follow the fail mode until one does.
        """
        if self._stopping.is_set():
            raise RuntimeError("gate is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="meterline-gate", daemon=True)
            self._thread.start()
        if wait_s is None or wait_s > 0:
            self._first_snapshot.wait(wait_s)
        return self

    def allowed(self, customer: str, feature: str | None = None) -> bool:
        """May ``customer`` use ``feature`` (or anything, when None) now? The hot path."""
        blocked = self._blocked
        if blocked is None:
            return self._fail_open
        denied = blocked.get(customer)
        if denied is None:
            return True
        if denied is _ALL:
            return False
        return feature not in denied  # type: ignore[operator]

    def check(self, customer: str, feature: str | None = None) -> Decision:
        """The same answer as ``allowed()``, with reason, policy, remaining and source."""
        if self._blocked is None:
            return self._fail_decision()
        entry = self._entries.get(customer)
        if entry is None:
            return _NO_RESTRICTION
        return entry.decide(feature)

    def on_change(self, callback: Callable[[str, Decision], None]) -> None:
        """Call ``callback(customer, decision)`` from the gate's thread on every change.

        Fired for each applied ``change`` event and, after a snapshot, for each customer
        whose decision differs from the local copy it replaced. ``decision`` is the
        customer-level answer (no feature named). Exceptions are logged and ignored.
        """
        self._callbacks = (*self._callbacks, callback)

    @property
    def status(self) -> GateStatus:
        """connecting (no snapshot yet), live, lost (was live; reconnecting) or closed."""
        return self._status

    @property
    def lost_since(self) -> float | None:
        """``time.monotonic()`` when the stream was lost; None while live or never live."""
        return self._lost_since

    @property
    def version(self) -> int:
        """The version of the last applied snapshot or change (0 before the first)."""
        return self._version

    @property
    def last_error(self) -> str | None:
        """Why the stream was last lost or refused; None if it never was."""
        return self._last_error

    def close(self) -> None:
        """Stop the stream thread promptly; afterwards every answer is the fail mode."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._mark_closed()
        self._first_snapshot.set()
        self._interrupt_read()
        thread = self._thread
        if thread is None:
            self._http.close()  # otherwise the thread closes it on its way out
        elif thread is not threading.current_thread():
            thread.join(CLOSE_JOIN_TIMEOUT_S)
            # The thread may have applied one last event between the flag and the join.
            self._mark_closed()

    def _mark_closed(self) -> None:
        self._blocked = None
        self._status = "closed"

    def __enter__(self) -> Gate:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fail_decision(self) -> Decision:
        source: DecisionSource = "fail-open" if self._fail_open else "fail-closed"
        lost_since = self._lost_since
        if self._status == "closed":
            reason = "access gate closed"
        elif lost_since is None:
            reason = "access stream not connected yet"
        else:
            reason = f"access stream lost {time.monotonic() - lost_since:.1f} s ago"
        return Decision(
            allowed=self._fail_open,
            reason=f"{reason}; {self._failing_phrase}",
            source=source,
        )

    def _interrupt_read(self) -> None:
        """Wake the gate's thread out of a blocking read on the stream.

        Closing a socket does not wake a thread blocked in ``recv`` on it (Linux), so the
        socket under the response is shut down instead; the reader then sees end of stream
        and closes the response itself. A transport without a socket is closed directly.
        """
        response = self._response
        if response is None:
            return
        network_stream = response.extensions.get("network_stream")
        raw_socket = network_stream.get_extra_info("socket") if network_stream else None
        if isinstance(raw_socket, socket.socket):
            # OSError: already closed or never connected, so nothing is left to wake.
            with contextlib.suppress(OSError):
                raw_socket.shutdown(socket.SHUT_RDWR)
            return
        try:
            response.close()
        except Exception:  # a foreign transport failing to close must not stop close()
            _log.debug("closing the access stream response failed", exc_info=True)

    # -- the gate's thread ------------------------------------------------------------------

    def _run(self) -> None:
        import httpx

        delay = self.reconnect_delay_s
        try:
            while not self._stopping.is_set():
                try:
                    self._follow_stream()
                    error = "access stream ended"
                except _StreamBroken as broken:
                    error = str(broken)
                except (httpx.HTTPError, httpx.StreamError, OSError) as failure:
                    error = f"{type(failure).__name__}: {failure}".rstrip(": ")
                except Exception as failure:  # never let a surprise kill the gate
                    _log.exception("access stream failed unexpectedly")
                    error = f"{type(failure).__name__}: {failure}".rstrip(": ")
                if self._stopping.is_set():
                    break
                if self._status == "live":
                    delay = self.reconnect_delay_s
                self._mark_lost(error)
                _log.warning("access stream lost (%s); reconnecting", error)
                if self._stopping.wait(random.uniform(delay / 2, delay)):
                    break
                delay = min(delay * 2, self.reconnect_delay_max_s)
        finally:
            self._http.close()

    def _follow_stream(self) -> None:
        """Connect, then apply events until the stream ends or breaks (which raises)."""
        with self._http.stream("GET", STREAM_PATH) as response:
            self._response = response
            try:
                if self._stopping.is_set():
                    return
                if response.status_code != 200:
                    raise _StreamBroken(_refusal(response))
                media_type = response.headers.get("content-type", "").split(";")[0].strip()
                if media_type != "text/event-stream":
                    raise _StreamBroken(f"access stream answered {media_type or 'no'} content")
                for event_type, data in _events(response.iter_lines()):
                    if self._stopping.is_set():
                        return
                    self._apply(event_type, data)
            finally:
                self._response = None

    def _apply(self, event_type: str, data: str) -> None:
        try:
            if event_type == "snapshot":
                self._apply_snapshot(_SNAPSHOT_DECODER.decode(data))
            elif self._status != "live":
                raise _StreamBroken(f"access stream sent {event_type!r} before its snapshot")
            elif event_type == "change":
                self._apply_change(_CHANGE_DECODER.decode(data))
            elif event_type == "heartbeat":
                _HEARTBEAT_DECODER.decode(data)
            else:
                _log.debug("ignoring access stream event %r", event_type)
        except msgspec.DecodeError as malformed:
            _log.warning("malformed %s event on the access stream: %s", event_type, malformed)
            raise _StreamBroken(f"malformed {event_type} event: {malformed}") from None

    def _apply_snapshot(self, snapshot: _Snapshot) -> None:
        entries = {customer: _Entry.of(wire) for customer, wire in snapshot.decisions.items()}
        blocked = {
            customer: entry.denied
            for customer, entry in entries.items()
            if entry.denied is not None
        }
        previous = self._entries
        self._entries = entries
        self._version = snapshot.version
        self._blocked = blocked
        self._status = "live"
        self._lost_since = None
        self._first_snapshot.set()
        if self._callbacks:
            for customer in previous.keys() | entries.keys():
                before, after = previous.get(customer), entries.get(customer)
                before_wire = None if before is None else before.wire
                after_wire = None if after is None else after.wire
                if before_wire != after_wire:
                    self._notify(customer, _decision_for(after))

    def _apply_change(self, change: _Change) -> None:
        if change.version <= self._version:
            _log.debug("ignoring access change %d at version %d", change.version, self._version)
            return
        entry = _Entry.of(change.decision)
        customer = change.customer
        self._entries[customer] = entry
        blocked = self._blocked
        if blocked is not None:
            if entry.denied is None:
                blocked.pop(customer, None)
            else:
                blocked[customer] = entry.denied
        self._version = change.version
        self._notify(customer, _decision_for(entry))

    def _notify(self, customer: str, decision: Decision) -> None:
        for callback in self._callbacks:
            try:
                callback(customer, decision)
            except Exception:
                _log.exception("access gate on_change callback failed for %r", customer)

    def _mark_lost(self, error: str) -> None:
        self._last_error = error
        if self._status == "live":
            self._blocked = None
            self._lost_since = time.monotonic()
            self._status = "lost"


def _refusal(response: httpx.Response) -> str:
    """``last_error`` for a non-200 answer: the status and the start of the body."""
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) >= ERROR_BODY_BYTES_MAX:
            break
    text = body[:ERROR_BODY_BYTES_MAX].decode("utf-8", "replace").strip()
    return f"access stream answered {response.status_code}" + (f": {text}" if text else "")


def _events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """Server-Sent Events framing: (event type, data) per blank-line-terminated block."""
    event_type = ""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event_type or "message", "\n".join(data)
            event_type, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data.append(value)
        # "id" and "retry" are not used by this protocol; unknown fields are ignored (SSE).

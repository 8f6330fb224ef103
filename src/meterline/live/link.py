"""The HTTP server's side of the live worker process (``meterline.live.worker``).

Why a process: the live engine feeds, rates and evaluates every event. On the server's
interpreter it shares one core with ingest (the GIL); in a process of its own it runs on
the second core, and ingest keeps its throughput (``meterline bench controls``).

``LiveLink`` starts the worker, tells it of every append (one small message per batch:
it reads the events from the ledger file) and of billing changes, and keeps a mirror of
what the worker pushes: each customer's blocks, remaining balances and access decision.
The access answer and the push stream read the mirror in this process (a dict read, no
hop); figures and overrides are calls to the worker. Control records are read from the
file directly.

If the worker dies, the link starts another (it rebuilds from the ledger and the control
records, like a restart); until it is ready the mirror keeps the last answers it had.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from multiprocessing.connection import Connection
from typing import Any

from meterline.billing.service import BillingError, InvalidRequest, NotFound
from meterline.clock import Clock, system_clock_us
from meterline.core.control_policies import Block
from meterline.core.live_documents import AccessAnswer, AccessSnapshot, LiveFigures
from meterline.errors import MeterlineError
from meterline.ledger.control_records import ControlStore, StoredOverride
from meterline.live.control_documents import (
    PushedDecision,
    access_document,
    snapshot_document,
    threshold_of,
    trial_end_of,
    trial_state,
)
from meterline.live.control_engine import AccessListener
from meterline.live.control_overrides import Override, OverrideError

_log = logging.getLogger(__name__)

WORKER_START_TIMEOUT_S = 300.0
"""How long the worker may take to rebuild from the ledger before the server gives up."""
CALL_TIMEOUT_S = 60.0
"""A call to the worker (figures, an override) not answered in this long fails."""
CLOCK_TOLERANCE_US = 100_000
"""The server's clock moving this far against the system clock is passed on to the
worker (two reads of the same clocks differ by microseconds)."""
RESTART_PAUSE_S = 1.0
"""After the worker died, wait this long before starting another."""

_ERRORS: dict[str, Any] = {
    "OverrideError": OverrideError,
    "NotFound": NotFound,
    "BillingError": BillingError,
    "RatingFailed": BillingError,  # one customer cannot be rated: 409, naming it and why
    "InvalidRequest": lambda message: InvalidRequest([message]),
}
"""The worker's errors a caller here handles, rebuilt from their message (their own
constructors differ, so they do not all survive pickling)."""


class WorkerUnavailable(MeterlineError, RuntimeError):
    """The live worker did not answer (starting, restarting or gone)."""

    code = "live_unavailable"
    http_status = 503


class MirroredAccess:
    """Access decisions taken by a live engine in another process, mirrored here: each
    customer's blocks, remaining balances and decision document, the customers with a
    contract, and a version bumped on every change. Answers are reads of the mirror; ``lock``
    guards the mirror while it changes, and ``listeners`` hear every decision."""

    def __init__(self, db: str, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.store = ControlStore(db)
        self.lock = threading.RLock()
        self.listeners: list[AccessListener] = []
        self.version = 0
        self.customers: frozenset[str] = frozenset()
        self.states: dict[str, tuple[tuple[Block, ...], dict[str, str]]] = {}
        self.decisions: dict[str, PushedDecision] = {}

    def _changed(self, customer: str) -> None:
        """Bump the version and push the customer's decision (under ``lock``)."""
        self.version += 1
        decision = self.decisions.get(customer)
        if decision is None:
            return
        for listener in list(self.listeners):
            try:
                listener(self.version, customer, decision)
            except Exception:
                _log.exception("access listener failed")

    def access(self, customer: str, feature: str | None = None) -> AccessAnswer:
        """May ``customer`` use ``feature`` now? (A read of the mirror in this process.)"""
        blocks, remaining = self.states.get(customer, ((), {}))
        decision = self.decisions.get(customer)
        trial_end = trial_end_of(decision)
        trial = None if trial_end is None else trial_state(trial_end, self.clock())
        threshold = threshold_of(decision)
        return access_document(
            customer,
            feature,
            blocks,
            remaining,
            customer in self.customers,
            self.version,
            trial,
            threshold,
        )

    def snapshot(self, customer: str | None = None) -> AccessSnapshot:
        with self.lock:
            return snapshot_document(self.decisions, self.version, customer)


class LiveLink(MirroredAccess):
    """Access answers mirrored from the live worker, and calls to it."""

    def __init__(self, db: str, clock: Clock = system_clock_us, on_due: Any = None) -> None:
        # ``clock`` is the server's: the worker runs on the same (its offset from the
        # system clock is passed on whenever it moves, e.g. a test's shifted clock)
        super().__init__(db, clock)
        self._offset = self._clock_offset()
        self.on_due = on_due
        """Called when the worker queued a webhook delivery (the dispatcher's wake)."""
        self.restarts = 0
        self._numbers = itertools.count(1)
        self._pending: dict[int, Future[Any]] = {}
        self._send_lock = threading.Lock()
        self._connection: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> LiveLink:
        """Start the worker and wait until it has rebuilt (its first mirror is here)."""
        self._spawn()
        self._reader = threading.Thread(target=self._read, name="meterline-link", daemon=True)
        self._reader.start()
        return self

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "meterline.live.worker",
                    str(theirs.fileno()),
                    str(self._offset),
                ],
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        connection = Connection(ours.detach())
        # the store's location goes on the connection, never on the command line: a
        # PostgreSQL URL may hold a password, and every user of the machine sees arguments
        connection.send(("open", self.db))
        if not connection.poll(WORKER_START_TIMEOUT_S):
            self._process.kill()
            raise WorkerUnavailable("the live worker did not become ready")
        kind, state = self._ready(connection)
        assert kind == "ready", kind
        with self.lock:
            self._connection = connection
            self.customers = state["customers"]
            changed = set(self.states) | set(state["state"])
            self.states = {}
            for customer, (decision, blocks, remaining) in state["state"].items():
                self.states[customer] = (blocks, remaining)
                self.decisions[customer] = decision
            for customer in changed - set(state["state"]):
                self.decisions.pop(customer, None)
            for customer in sorted(changed):
                self._changed(customer)

    def _ready(self, connection: Connection) -> tuple[str, Any]:
        """The worker's ``ready`` message; a ``due`` before it (the engine's start may
        publish webhooks: a trial's notice, an alert) is passed on after it."""
        assert self._process is not None
        due = False
        while True:
            try:
                message = connection.recv()
            except EOFError:
                raise WorkerUnavailable(
                    f"the live worker exited while starting (status {self._process.wait()})"
                ) from None
            if message[0] != "due":
                break
            due = True
        if due and self.on_due is not None:
            self.on_due()
        return message[0], message[1]

    def stop(self) -> None:
        self._stopping = True
        self._tell(("stop",))
        if self._process is not None:
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self._connection is not None:
            self._connection.close()
        self.store.close()

    # -- what the server tells the worker -------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            if self._connection is None:
                raise WorkerUnavailable("the live worker is not running")
            try:
                self._connection.send(message)
            except OSError as error:
                raise WorkerUnavailable(f"the live worker is gone: {error}") from None

    def _clock_offset(self) -> int:
        return self.clock() - system_clock_us()

    def _follow_clock(self) -> None:
        """Tell the worker when the server's clock moved against the system clock."""
        offset = self._clock_offset()
        if abs(offset - self._offset) > CLOCK_TOLERANCE_US:
            self._offset = offset
            self._tell(("clock", offset))

    def _tell(self, message: tuple[Any, ...]) -> None:
        """Send what a worker started later needs no telling of (it reads everything
        from the ledger when it starts)."""
        with contextlib.suppress(WorkerUnavailable):
            self._send(message)

    def appended(self, _appended: object = None) -> None:
        """The ledger's listener: a batch was appended (the worker reads it from the file)."""
        self._follow_clock()
        self._tell(("appended",))

    def billing_changed(self, customer: str | None) -> None:
        """The billing service's listener: a grant, void, adjustment or new pricing."""
        self._follow_clock()
        self._tell(("stale", customer))

    def _call(self, name: str, *arguments: Any) -> Any:
        self._follow_clock()
        number = next(self._numbers)
        future: Future[Any] = Future()
        self._pending[number] = future
        try:
            self._send(("call", number, name, arguments))
            return future.result(timeout=CALL_TIMEOUT_S)
        except TimeoutError:
            raise WorkerUnavailable(f"the live worker did not answer {name}") from None
        finally:
            self._pending.pop(number, None)

    # -- what the worker tells the server -------------------------------------------------------

    def _read(self) -> None:
        while not self._stopping:
            connection = self._connection
            assert connection is not None
            try:
                message = connection.recv()
            except (EOFError, OSError):
                if self._stopping:
                    return
                self._restart()
                continue
            self._handle(message)

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "access":
            _, customer, decision, blocks, remaining = message
            with self.lock:
                self.states[customer] = (blocks, remaining)
                self.decisions[customer] = decision
                self._changed(customer)
        elif kind == "customers":
            with self.lock:
                self.customers = message[1]
        elif kind == "reply":
            _, number, ok, value = message
            future = self._pending.get(number)
            if future is None:
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(_error(*value))
        elif kind == "due" and self.on_due is not None:
            self.on_due()

    def _restart(self) -> None:
        status = None if self._process is None else self._process.wait()
        _log.error("the live worker exited (status %s); starting another", status)
        with self._send_lock:
            if self._connection is not None:
                self._connection.close()
            self._connection = None
        for future in list(self._pending.values()):
            future.set_exception(WorkerUnavailable("the live worker exited"))
        while not self._stopping:
            time.sleep(RESTART_PAUSE_S)
            try:
                self._spawn()
            except Exception:
                _log.exception("the live worker could not start again")
                continue
            self.restarts += 1
            return

    # -- answers --------------------------------------------------------------------------------

    def figures(self, customer: str) -> LiveFigures | None:
        """The customer's live figures (with its access answer), or None."""
        return self._call("figures", customer)  # type: ignore[no-any-return]

    def figures_of(self, customers: list[str]) -> dict[str, LiveFigures | None]:
        """``figures`` of each customer, in one call to the worker; None for a customer
        without figures or that cannot be rated now (``figures`` raises ``BillingError``)."""
        return self._call("figures_of", list(customers))  # type: ignore[no-any-return]

    def status(self) -> dict[str, Any]:
        """The worker's progress (``LiveEngine.status``), whether it runs, its process id
        and how many times it was started again."""
        try:
            status: dict[str, Any] = self._call("status")
            status["worker_running"] = True
        except WorkerUnavailable:
            status = {"worker_running": False}
        status["worker_restarts"] = self.restarts
        status["worker_pid"] = self.pid
        return status

    def override(self, request: Override) -> StoredOverride:
        """``Controls.override``, run by the worker (its errors are raised here as the
        same kind: ``OverrideError``, the billing errors)."""
        return self._call("override", request)  # type: ignore[no-any-return]

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid


def _error(name: str, message: str) -> Exception:
    """The worker's error as this process raises it (``_ERRORS``; otherwise a
    ``RuntimeError`` naming its kind)."""
    rebuild = _ERRORS.get(name)
    return RuntimeError(f"live worker: {name}: {message}") if rebuild is None else rebuild(message)

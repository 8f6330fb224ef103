"""The live engine in a process of its own: ``python -m meterline.live.worker FD OFFSET``.

The HTTP server (``meterline.live.link.LiveLink``) starts it with one end of a socket pair
as file descriptor ``FD``; messages both ways are pickled tuples on that connection
(``multiprocessing.connection``). The engine runs here on the second core, so its feed,
rating and controls never hold the server's interpreter: ingest keeps its throughput.

From the server:
- ``("open", location)``: first, the store to open (not an argument of the command: a
  PostgreSQL URL may hold a password, and every user of the machine sees arguments).
- ``("appended",)``: the server appended a batch; the next cycle reads it from the ledger.
- ``("stale", customer)``: a grant, void, adjustment or new pricing (None: everyone).
- ``("clock", offset_us)``: the server's clock is now the system clock + this.
- ``("call", number, name, arguments)``: ``figures``, ``override`` or ``status``;
  answered with ``("reply", number, ok, value)`` (value: the result, or the error's
  class name and message); figures are a ``core.live_documents.LiveFigures``, pickled.
- ``("stop",)``.

To the server:
- ``("ready", state)`` once rebuilt, with every customer's access state (``_state``).
- ``("access", customer, decision, blocks, remaining)`` on every access change.
- ``("customers", names)`` when the set of customers with a contract changes.
- ``("due",)`` when a webhook delivery became due (the server's dispatcher sends it).

When the server's end closes (it stopped or died), the worker stops.
"""

from __future__ import annotations

import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from meterline.billing.service import BillingError, open_billing
from meterline.clock import system_clock_us
from meterline.core.live_documents import AccessState
from meterline.live.control_documents import PushedDecision
from meterline.live.service import LiveEngine
from meterline.live.stack import live_stack

_log = logging.getLogger(__name__)

CALL_THREADS = 2
"""Calls (figures, overrides) run beside the message loop, so a slow grant never delays
a wake-up."""


class _Worker:
    def __init__(self, engine: LiveEngine, connection: Connection, clock: OffsetClock) -> None:
        self.engine = engine
        self.clock = clock
        self.connection = connection
        self._send_lock = threading.Lock()
        self._customers: frozenset[str] = frozenset()
        self._calls = ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="meterline-calls")

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.connection.send(message)

    # -- what the server mirrors ----------------------------------------------------------------

    def _state(self, customer: str) -> tuple[AccessState, tuple[Any, ...], dict[str, str]]:
        controls = self.engine.controls
        state = controls.state.get(customer)
        blocks = tuple((state.blocks or {}).values()) if state else ()
        remaining = {u: str(v) for u, v in sorted(((state and state.remaining) or {}).items())}
        return controls.decision_document(customer), blocks, remaining

    def on_access(self, _version: int, customer: str, _decision: PushedDecision) -> None:
        # called under the controls' lock: the state read here is the one decided
        self.send(("access", customer, *self._state(customer)))

    def after_cycle(self, engine: LiveEngine) -> None:
        customers = engine.projection.customers
        if customers.keys() != self._customers:
            self._customers = frozenset(customers)
            self.send(("customers", self._customers))

    def ready(self) -> None:
        controls = self.engine.controls
        with controls.lock:
            self._customers = frozenset(self.engine.projection.customers)
            state = {name: self._state(name) for name in controls.state}
            controls.listeners.append(self.on_access)
        self.send(("ready", {"customers": self._customers, "state": state}))
        self.engine.cycle_listeners.append(self.after_cycle)

    # -- calls ------------------------------------------------------------------------------------

    def _answer(self, number: int, name: str, arguments: tuple[Any, ...]) -> None:
        try:
            value = self._call(name, arguments)
        except Exception as error:  # the caller gets its kind and message
            self.send(("reply", number, False, (type(error).__name__, str(error))))
        else:
            self.send(("reply", number, True, value))

    def _call(self, name: str, arguments: tuple[Any, ...]) -> Any:
        engine = self.engine
        if name == "figures":
            (customer,) = arguments
            figures = engine.projection.figures(customer)
            if figures is None:
                return None
            return figures.document(engine.controls.access(customer))
        if name == "figures_of":  # many customers' in one call (the customers page)
            (customers,) = arguments
            return {customer: self._figures_or_none(customer) for customer in customers}
        if name == "override":
            (request,) = arguments
            engine.settle()  # a pricing told before this call is applied first
            return engine.controls.override(request)
        if name == "status":
            return engine.status()
        raise ValueError(f"name: no call {name!r}")

    def _figures_or_none(self, customer: str) -> Any:
        """``figures`` of one customer, None when it cannot be rated now (a billing
        error: what a call of ``figures`` alone reports, and the page shows as none)."""
        try:
            return self._call("figures", (customer,))
        except BillingError:
            return None

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        engine = self.engine
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):
                return  # the server is gone
            kind = message[0]
            if kind == "appended":
                engine.on_append([])
            elif kind == "stale":
                engine.on_billing_change(message[1])
            elif kind == "clock":
                self.clock.offset_us = message[1]
            elif kind == "call":
                _, number, name, arguments = message
                self._calls.submit(self._answer, number, name, arguments)
            elif kind == "stop":
                return

    def close(self) -> None:
        self._calls.shutdown(wait=True)


class OffsetClock:
    """The system clock shifted by ``offset_us`` (the server's clock, as it says)."""

    def __init__(self, offset_us: int) -> None:
        self.offset_us = offset_us

    def __call__(self) -> int:
        return system_clock_us() + self.offset_us


def run_worker(db: str, connection: Connection, offset_us: int = 0) -> None:
    """Run the live engine over the ledger at ``db`` until ``connection`` says stop or
    closes, on the system clock shifted by ``offset_us`` (the server's)."""
    clock = OffsetClock(offset_us)
    with open_billing(db, clock=clock) as billing:
        stack = live_stack(billing)
        engine = stack.engine(pause_share=0.0)
        worker = _Worker(engine, connection, clock)
        stack.webhooks.on_due(lambda: worker.send(("due",)))
        try:
            engine.start()
            worker.ready()
            worker.run()
        finally:
            engine.stop()
            worker.close()
            stack.close()
            connection.close()


def main(argv: list[str]) -> None:
    descriptor, offset_us = argv
    logging.basicConfig(level=logging.WARNING, format="meterline-live: %(message)s")
    connection = Connection(int(descriptor))
    kind, db = connection.recv()  # ("open", location): first, from the server
    if kind != "open":
        raise SystemExit(f"meterline-live: expected the store's location, got {kind!r}")
    run_worker(db, connection, int(offset_us))


if __name__ == "__main__":
    main(sys.argv[1:])

"""The live engine in a process: the ledger's appends -> projection -> controls, on one
controller thread.

The ledger calls ``on_append`` after each durable append, with the accepted events; that
costs the ingest path one list append per batch. The controller thread drains what
arrived, feeds the projection (reading from the ledger any sequence it did not hear
about: another process's appends, or two batches whose listeners ran out of order),
rebuilds stale customers, evaluates the controls of the customers touched, and publishes
the unbillable usage the batch met (``usage.unbillable`` webhooks, once per event). When
batches arrive faster than a cycle, the next cycle takes them all at once (coalescing):
the controls' cost grows with the customers touched per cycle, not with events.

``CYCLE_PAUSE_SHARE`` bounds the share of the CPU the controller may take under load:
after a cycle of t seconds of CPU it waits ``t x share`` (at most ``CYCLE_PAUSE_MAX_S``) before
the next one, so ingest keeps most of the interpreter while blocks still land within
milliseconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import msgspec

from meterline.billing.scan import BODY_DECODER
from meterline.billing.service import Billing
from meterline.billing.unbillable import publish_unbillable
from meterline.core.cuts import Cut
from meterline.core.events import PreparedEvent
from meterline.core.partitions import PartitionMap
from meterline.ledger.control_records import ControlStore
from meterline.live.control_engine import Controls, Publisher
from meterline.live.customer_period import LiveEvent
from meterline.live.notices import Notices
from meterline.live.projection import LiveProjection

_log = logging.getLogger(__name__)
_PARTITION_SEQUENCE = itemgetter(0, 1)

CYCLE_PAUSE_SHARE = 3.0
"""After a busy cycle of t seconds, wait t x this before the next (controller <= 1/4 CPU)."""
CYCLE_PAUSE_MAX_S = 0.02
IDLE_WAKE_S = 1.0
"""With nothing arriving, the controller still wakes this often (period ends, config)."""
SETTLE_TIMEOUT_S = 10.0
"""Longest ``settle`` waits for the controller to apply what it was told."""


class LiveEngine:
    """Projection + controls, fed by a ledger's appends on a controller thread."""

    def __init__(
        self,
        billing: Billing,
        publish: Publisher | None = None,
        pause_share: float = CYCLE_PAUSE_SHARE,
        partitions: list[int] | None = None,
    ) -> None:
        self.billing = billing
        self.partitions = partitions
        """The ledger partitions whose customers this engine keeps (None: every one)."""
        self.pause_share = pause_share
        """After a busy cycle, pause its CPU time x this (0 in a worker process of its own,
        where the controller takes nothing from ingest's interpreter)."""
        self.cycle_listeners: list[Callable[[LiveEngine], None]] = []
        """Called on the controller thread after every cycle (the worker's mirror)."""
        owns = None
        if partitions is not None:
            owned, partition = frozenset(partitions), PartitionMap(billing.ledger.store.partitions)
            owns = lambda customer: partition(customer) in owned  # noqa: E731
        self.projection = LiveProjection(billing, owns)
        self.store = ControlStore(billing.store.path)
        self.controls = Controls(self.projection, self.store, publish)
        self.notices = Notices(self.projection, self.controls)
        """Trial notices, threshold levels reached, threshold progress (``live.notices``)."""
        self._arrived: list[list[tuple[int, PreparedEvent]]] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.applied = Cut.empty(billing.ledger.store.partitions)
        """Every event inside this cut (of the partitions this engine owns) has been fed
        and its customers' controls evaluated."""
        self.cycles = 0
        self._applied = threading.Condition()
        self._pending_customers: set[str | None] = set()
        self._polled = 0.0
        self.unbillable_found = 0
        """Unbillable usage records met by the batches applied (since the start)."""
        self.acting = True
        """Whether this engine tells (``start(act=False)``: a read-only look sends no
        trial or threshold webhook)."""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, thread: bool = True, act: bool = True) -> LiveEngine:
        """Rebuild from the ledger, load the control records, listen to appends. Without
        ``act`` (a read-only look, e.g. ``meterline live show``) nothing is evaluated or
        acted on: the access answers are the recorded ones."""
        self.acting = act
        self.billing.ledger.listeners.append(self.on_append)
        self.billing.listeners.append(self.on_billing_change)
        self.projection.rebuild()
        self.controls.load(act)
        self.applied = self.projection.cut
        if act:
            self.controls.evaluate(set(self.projection.customers), self.applied)
            self.notices.thresholds(set(self.projection.customers))
            self.notices.trials()
        if thread:
            self._thread = threading.Thread(target=self._run, name="meterline-live", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self.on_append in self.billing.ledger.listeners:
            self.billing.ledger.listeners.remove(self.on_append)
        if self.on_billing_change in self.billing.listeners:
            self.billing.listeners.remove(self.on_billing_change)
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.controls.close()
        self.store.close()

    def on_append(self, appended: list[tuple[int, PreparedEvent]]) -> None:
        with self._wake:
            self._arrived.append(appended)
            self._wake.notify()

    def on_billing_change(self, customer: str | None) -> None:
        """A grant, void, adjustment or new pricing: rebuild from the ledger next cycle."""
        self.projection.mark_stale(customer)
        self.controls.receivables.forget(customer)  # a payment or credit note, perhaps
        self._pending_customers.add(customer)
        with self._wake:
            self._arrived.append([])
            self._wake.notify()

    # -- the controller -------------------------------------------------------------------------

    def _run(self) -> None:
        pause = 0.0
        ended = time.perf_counter()
        while True:
            with self._wake:
                if not self._arrived and not self._stopping:
                    self._wake.wait(IDLE_WAKE_S)
                if self._stopping:
                    return
            # The pause counts from the end of the last cycle: a batch reaching an engine
            # that was idle meanwhile is taken at once.
            left = pause - (time.perf_counter() - ended)
            if left > 0:
                time.sleep(left)
            started = time.thread_time()
            try:
                busy = self.cycle()
            except Exception:
                _log.exception("live cycle failed; rebuilding from the ledger")
                busy = True
                try:
                    self.projection.rebuild()
                except Exception:
                    _log.exception("rebuild failed")
            ended = time.perf_counter()
            # the cycle's CPU time, not its wall time: a commit's fsync or a wait for the
            # interpreter takes nothing from ingest
            used = time.thread_time() - started
            pause = min(CYCLE_PAUSE_MAX_S, used * self.pause_share) if busy else 0.0

    def cycle(self) -> bool:
        """One controller step; True when there was work."""
        with self._wake:
            batches, self._arrived = self._arrived, []
        pairs = [pair for batch in batches for pair in batch]
        applied = self.applied
        events, through = self._events(pairs)
        touched = self.projection.feed(events)
        if through is not None:
            # every event of this engine's partitions inside ``through`` was read; the
            # partitions of other engines are not this one's to advance
            self.projection.advance(through, self.partitions)
        rebuilt = self.projection.refresh()
        for name in rebuilt:
            # read again from the ledger (a grant, void or adjustment, a late event, a new
            # period or pricing): the last exact balance no longer bounds the new one
            self.controls.books.pop(name, None)
        touched |= rebuilt
        changed, self._pending_customers = self._pending_customers, set()
        if None in changed:
            touched |= set(self.projection.customers)
        touched |= {name for name in changed if name in self.projection.customers}
        if time.monotonic() - self._polled >= IDLE_WAKE_S:
            # overrides recorded by another process (the CLI) reach this one within a second
            self._polled = time.monotonic()
            touched |= self.controls.poll_overrides()
            touched |= self._owing_changed()
            if self.acting:
                self.notices.trials()
        head = self.projection.cut.union(self.applied)
        if not events and self.controls.stale_books:
            touched |= self.controls.stale_books  # idle: exact balances again
            self.controls.books.clear()
        if touched:
            self.controls.evaluate(touched, head)
            if self.acting:
                self.notices.thresholds(touched)
        if events or rebuilt:
            self._unbillable(applied, touched)
        self.cycles += 1
        with self._applied:
            self.applied = head
            self._applied.notify_all()
        for listener in self.cycle_listeners:
            listener(self)
        return bool(events) or bool(touched)

    def _owing_changed(self) -> set[str]:
        """The customers whose ``invoice_overdue`` controls may answer otherwise now: a
        payment another process recorded for them, or (all of them) a new day."""
        overdue = {
            name
            for name, live in self.projection.customers.items()
            if any(policy.kind == "invoice_overdue" for policy in live.policies)
        }
        if not overdue:
            return set()
        receivables = self.controls.receivables
        changed = receivables.poll()
        if receivables.day_turned():
            changed |= overdue
        return changed & overdue

    def _unbillable(self, after: Cut, customers: set[str]) -> None:
        """Publish the unbillable usage of the events applied outside the cut ``after`` (the
        webhook event id names the ledger event, so a close finding it again, or a second
        engine, sends nothing more)."""
        found = self.projection.unbillable_after(after, customers)
        if not found:
            return
        self.unbillable_found += len(found)
        publish = self.controls.publish
        if publish is None:
            return
        try:
            records = self.billing.unbillable_records(self.projection.partitions, found)
        except Exception:
            _log.exception("unbillable usage of this cycle could not be read")
            return
        publish_unbillable(publish, records)

    def _events(self, pairs: list[tuple[int, PreparedEvent]]) -> tuple[list[LiveEvent], Cut | None]:
        """The events past the projection's cut, and the cut they cover up to (None:
        nothing new). Appended pairs are taken as they are when each partition's pairs
        continue its head without a gap; otherwise this engine's partitions are read from
        the ledger, past the projection's cut and inside the ledger's current cut."""
        fed = self.projection.cut
        partition_of_customer = self.projection.partition
        placed = sorted(
            ((partition_of_customer(event.customer), sequence, event) for sequence, event in pairs),
            key=_PARTITION_SEQUENCE,
        )
        heads = list(fed.heads)
        events = []
        decode = BODY_DECODER.decode
        for partition, sequence, event in placed:
            if sequence != heads[partition] + 1:
                return self._read_events(fed)
            heads[partition] = sequence
            # ``LiveEvent.decoded``, inlined (once per event)
            try:
                properties: dict[str, Any] | None = decode(event.body).properties
            except msgspec.MsgspecError:
                properties = None
            events.append(
                LiveEvent(
                    sequence, event.customer, event.type, event.timestamp_us, properties, partition
                )
            )
        if not events:
            return self._read_events(fed)
        return events, Cut(tuple(heads))

    def _read_events(self, fed: Cut) -> tuple[list[LiveEvent], Cut | None]:
        """This engine's partitions' events past ``fed`` and inside the ledger's cut."""
        head = self.billing.ledger_cut()
        mine = range(head.partitions) if self.partitions is None else self.partitions
        if all(head.heads[p] <= fed.heads[p] for p in mine):
            return [], None
        events = [
            LiveEvent.decoded(r.sequence, r.customer, r.type, r.timestamp_us, r.body, r.partition)
            for r in self.billing.ledger.store.records(fed, self.partitions)
            if head.covers(r.partition, r.sequence)
        ]
        return events, head

    def wait_applied(self, through: Cut, timeout_s: float = 10.0) -> bool:
        """Wait until the controller has applied every event inside ``through`` of the
        partitions this engine owns (tests, the benchmark)."""
        mine = range(through.partitions) if self.partitions is None else self.partitions
        deadline = time.monotonic() + timeout_s
        with self._applied:
            while any(self.applied.heads[p] < through.heads[p] for p in mine):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._applied.wait(left)
        return True

    def settle(self, timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
        """Wait until a controller cycle that began after this call has ended, so every
        append and billing change this engine was told of before it is applied (the
        worker answers a call after the messages that came before it: an override right
        after a new pricing sees the pricing's customers). False after ``timeout_s``."""
        if self._thread is None:
            self.catch_up()
            return True
        deadline = time.monotonic() + timeout_s
        target = self.cycles + 2  # the cycle running now may have begun before the call
        while self.cycles < target:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            seen = self.cycles
            with self._wake:
                self._arrived.append([])
                self._wake.notify()
            with self._applied:
                self._applied.wait_for(self._cycled_past(seen), left)
        return True

    def _cycled_past(self, seen: int) -> Callable[[], bool]:
        return lambda: self.cycles > seen

    def catch_up(self) -> None:
        """Apply everything in the ledger now, in this thread (the CLI, without a server)."""
        with self._wake:
            self._arrived.append([])
        self.cycle()

    def status(self) -> dict[str, Any]:
        return {
            "applied": self.applied.to_json(),
            "customers": len(self.projection.customers),
            "cycles": self.cycles,
            "access_version": self.controls.version,
            "unbillable_found": self.unbillable_found,
            "failed": [
                {"customer": customer, "reason": reason}
                for customer, reason in sorted(self.projection.failures.items())
            ],
        }

"""An API replica's view of the live engines that run in the workers (stream mode).

In stream mode no live engine runs beside the API: each worker keeps its partitions'
customers and publishes their access documents to the access bucket. ``AccessMirror``
follows that bucket (through an ``AccessBoard``) and answers what the API and the
dashboard ask a ``LiveLink``: the access answer and the push stream (dict reads here,
the same on every replica), the blocks of each customer, the control records (read from
the shared store). An unblock is recorded in the store, where the owning worker applies
it within its override poll (about a second) and publishes the new decision; figures,
extensions and grants need the engine and are refused with where to ask instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from meterline.clock import Clock, system_clock_us
from meterline.core.control_policies import Block
from meterline.ledger.control_records import StoredOverride
from meterline.live.control_overrides import Override, OverrideError
from meterline.live.link import MirroredAccess, WorkerUnavailable

_log = logging.getLogger(__name__)


def blocks_of(document: dict[str, Any]) -> tuple[Block, ...]:
    return tuple(
        Block(
            str(block["policy"]),
            tuple(str(feature) for feature in block.get("features", [])),
            str(block.get("reason", "")),
            int(block.get("since_us", 0)),
        )
        for block in document.get("blocks", [])
    )


class AccessMirror(MirroredAccess):
    """What the workers decided, mirrored from the access bucket (answers what the API and
    the dashboard ask of a ``LiveLink``)."""

    def __init__(self, db: str, clock: Clock = system_clock_us) -> None:
        super().__init__(db, clock)
        self.workers: dict[str, str] = {}
        """customer -> the worker that last decided it."""
        self.ask_figures: Callable[[str], dict[str, Any] | None] | None = None
        """Asks the owning worker for a customer's figures (set by the stream front)."""

    def load(self, documents: dict[str, dict[str, Any]]) -> None:
        for customer, document in list(documents.items()):
            self.apply(customer, document)

    def apply(self, customer: str, document: dict[str, Any] | None) -> None:
        """An access document changed in the bucket (None: removed)."""
        with self.lock:
            if document is None:
                self.states.pop(customer, None)
                self.decisions.pop(customer, None)
                self.customers = self.customers - {customer}
            else:
                self.states[customer] = (blocks_of(document), dict(document.get("remaining", {})))
                self.decisions[customer] = dict(document.get("decision", {}))
                self.workers[customer] = str(document.get("worker", ""))
                if document.get("known") and customer not in self.customers:
                    self.customers = self.customers | {customer}
                elif not document.get("known") and customer in self.customers:
                    self.customers = self.customers - {customer}
            self._changed(customer)

    # -- answers --------------------------------------------------------------------------------

    def figures(self, customer: str) -> dict[str, Any] | None:
        """The customer's live figures, asked of the worker that owns its partition."""
        if self.ask_figures is None:
            raise WorkerUnavailable("stream mode: not connected to the stream yet")
        return self.ask_figures(customer)

    def status(self) -> dict[str, Any]:
        return {
            "mode": "stream",
            "worker_running": bool(self.workers),
            "customers": len(self.customers),
            "access_version": self.version,
            "workers": sorted(set(self.workers.values())),
        }

    def override(self, request: Override) -> StoredOverride:
        """Record an unblock for the owning worker to apply (within about a second)."""
        customer, kind, policy = request.customer, request.kind, request.policy
        if kind != "unblock":
            raise OverrideError(
                f"kind: stream mode records unblocks here; {kind} needs the customer's"
                f" engine: `meterline controls {kind} {customer} --db ...`"
            )
        if not request.reason.strip():
            raise OverrideError("reason: is required")
        blocks = self.states.get(customer, ((), {}))[0]
        if policy is not None and not any(block.policy == policy for block in blocks):
            raise OverrideError(f"policy: {customer} is not blocked by {policy!r}")
        return self.store.add_override(
            customer,
            "unblock",
            policy,
            None,
            request.reason,
            request.actor,
            self.clock(),
            {"mode": "stream"},
        )

    def stop(self) -> None:
        self.store.close()

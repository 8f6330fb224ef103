"""The controls in the live path: evaluate each touched customer's policies on its live
figures, record every firing once, act, and keep the access answers the product reads.

- A firing is recorded *before* its actions run, with a UNIQUE (customer, policy, level,
  crossing ordinal): a second engine, or the same one after a restart, cannot record the
  same crossing twice, and only the engine whose insert won acts.
- Each action's outcome is recorded per firing; on start, a firing's actions without an
  outcome are run again (each is idempotent by the firing id: the webhook's event id, the
  true-up invoice's ``control`` field, the top-up grant's reason).
- ``block`` and ``alert`` act at once in the evaluating thread; ``true_up`` and
  ``top_up`` (which read the ledger or write invoices) run on one background worker, so
  a slow invoice never delays another customer's block.
- Access answers are a read of the state in memory (typed records:
  ``core.live_documents``); every change bumps ``version`` and is pushed to the
  subscribers (the SSE stream the SDK's ``Gate`` reads).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from meterline.billing.service import Billing, BillingError
from meterline.core.control_conditions import evaluate, spikes
from meterline.core.control_policies import Block, Evaluation, Firing, Observation, Rearm
from meterline.core.cuts import Cut
from meterline.core.live_documents import (
    AccessAnswer,
    AccessSnapshot,
    AccessState,
    CustomerBlocked,
    CustomerUnblocked,
    ThresholdProgress,
    WebhookData,
)
from meterline.ledger.control_records import ControlStore, StoredFiring, StoredOverride
from meterline.live.control_actions import alert_kind, top_up, true_up
from meterline.live.control_documents import (
    PushedDecision,
    access_document,
    decision_document,
    snapshot_document,
    trial_state,
)
from meterline.live.control_documents import firing_document as firing_document
from meterline.live.control_overrides import Override, check_override, grant_override
from meterline.live.control_overrides import OverrideError as OverrideError
from meterline.live.credit_bounds import CreditBounds
from meterline.live.figures import Figures
from meterline.live.projection import LiveProjection
from meterline.live.receivables import Receivables

_log = logging.getLogger(__name__)
ZERO = Decimal(0)

Publisher = Callable[[str, WebhookData | dict[str, Any], str], object]
"""``publish(kind, data, event_id)``: a webhook (``live.webhook_service.Webhooks.publish``);
``data`` a live record, or billing's plain data (``usage.unbillable``)."""
AccessListener = Callable[[int, str, PushedDecision], None]
"""Called with (version, customer, decision) on every access change."""


@dataclass
class _CustomerControls:
    fired: frozenset[tuple[str, str]] = frozenset()
    blocks: dict[str, Block] | None = None
    extensions: dict[str, Decimal] | None = None
    remaining: dict[str, Decimal] | None = None


class Controls:
    """Controls over a ``LiveProjection``, recorded in a ``ControlStore``."""

    def __init__(
        self,
        projection: LiveProjection,
        store: ControlStore,
        publish: Publisher | None = None,
    ) -> None:
        self.projection = projection
        self.billing: Billing = projection.billing
        self.clock = projection.clock
        self.store = store
        self.publish = publish
        self.lock = threading.RLock()
        self.state: dict[str, _CustomerControls] = {}
        self.ordinals: dict[tuple[str, str, str], int] = {}
        self.version = 0
        self.listeners: list[AccessListener] = []
        self.decisions: dict[str, AccessState] = {}
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="meterline-actions")
        self.write_guard: Callable[[], AbstractContextManager[Any]] = nullcontext
        """Held around the actions that write invoices or grants (the HTTP app passes
        its billing routes' writer lock, so a true-up never interleaves with a close)."""
        self.pending_actions = 0
        self.overrides_seen = 0
        """The last override applied (others may be recorded by another process: the CLI)."""
        self.receivables = Receivables(self.billing, self.clock)
        """What the ``invoice_overdue`` controls read (open invoices, today)."""
        self.progress: dict[str, ThresholdProgress] = {}
        """Per customer: progress to its next progressive threshold (``live.notices``)."""
        self.credit_bounds = CreditBounds(projection)
        self.books = self.credit_bounds.books
        """Per customer: the last exact credit balances, when, and the line amounts then."""
        self.stale_books = self.credit_bounds.stale
        """Customers answered from a lower bound of their balance: exact again when idle."""
        self._after: list[Callable[[], object]] | None = None
        """While a batch of records is open: what must wait for its commit."""
        self._alert_results: list[tuple[int, int, dict[str, Any]]] | None = None
        """While the deferred steps run: the alert outcomes, written in one batch after."""

    # -- state from the store -----------------------------------------------------------------

    def load(self, act: bool = True) -> None:
        """Rebuild fired levels, crossing counts, blocks and extensions from the records,
        then (with ``act``) run any action a crash left without an outcome."""
        with self.lock:
            self.state = {}
            self.ordinals = {}
            events: list[tuple[int, int, str, Any]] = []
            for firing in self.store.firings():
                events.append((firing.at_us, 0, "firing", firing))
            for rearm in self.store.rearms():
                events.append((rearm.at_us, 1, "rearm", rearm))
            for override in self.store.overrides():
                events.append((override.at_us, 2, "override", override))
            events.sort(key=lambda item: (item[0], item[1]))
            for _, _, kind, record in events:
                state = self._customer(record.customer)
                if kind == "firing":
                    key = (record.customer, record.policy, record.level)
                    self.ordinals[key] = max(self.ordinals.get(key, 0), record.ordinal)
                    state.fired = state.fired | {(record.policy, record.level)}
                    if "block" in record.actions:
                        self._set_block(record.customer, record, publish=False)
                elif kind == "rearm":
                    key = (record.customer, record.policy, record.level)
                    if record.ordinal < self.ordinals.get(key, 0):
                        continue  # a later crossing fired after this re-arm (same instant)
                    state.fired = state.fired - {(record.policy, record.level)}
                    policy = self._policy(record.customer, record.policy)
                    if policy is None or not policy.held:
                        self._release(record.customer, record.policy, "", publish=False)
                else:
                    self._apply_override(record, publish=False)
                    self.overrides_seen = max(self.overrides_seen, record.number)
            results = self.store.results()
            for firing in self.store.firings():
                for action in firing.actions:
                    if act and (firing.number, action) not in results and action != "block":
                        self._act(firing, action)
            for customer in self.state:
                self._decision_changed(customer, publish=False)

    def _customer(self, customer: str) -> _CustomerControls:
        state = self.state.get(customer)
        if state is None:
            state = self.state[customer] = _CustomerControls(blocks={}, extensions={})
        return state

    def _policy(self, customer: str, key: str) -> Any:
        live = self.projection.customers.get(customer)
        if live is None:
            return None
        return next((p for p in live.policies if p.key == key), None)

    # -- evaluation -----------------------------------------------------------------------------

    def evaluate(self, customers: set[str], through: Cut) -> list[StoredFiring]:
        """Evaluate every policy of ``customers`` on their figures now; ``through`` is the
        cut of the ledger applied (a firing's cause is its head in the customer's
        partition: the customer's last event applied).

        Two phases: first every customer is evaluated (no writes); then the crossings'
        records are written in one transaction (``ControlStore.batch``), and only after
        its commit do the external effects run: webhooks, the alert outcomes and the
        background true-ups and top-ups. A block takes effect in the access answers as
        its firing is written, a commit (milliseconds) before the record is durable; a
        crash in between loses the block with its record, and the restarted engine,
        finding the condition still true, fires and blocks again."""
        crossings: list[tuple[str, Evaluation, int, bool, frozenset[tuple[str, str]]]] = []
        for customer in sorted(customers):
            live = self.projection.customers.get(customer)
            if live is None or not live.policies:
                continue
            try:
                figures = self.projection.figures(customer, credits=False)
                if figures is None:
                    continue
                now_us = self.clock()
                exact, remaining = self._remaining(customer, live, figures, now_us)
                owed, today = self.receivables.observed(customer, live.policies)
            except (BillingError, ArithmeticError, ValueError) as error:
                # one customer that cannot be rated never stops the others' controls
                _log.warning("controls of %s not evaluated: %s", customer, error)
                continue
            if exact:
                figures = replace(figures, remaining=remaining)
            with self.lock:
                state = self._customer(customer)
                # under the lock: a spike's baseline is read where the fired levels and
                # extensions say it can matter (``core.control_conditions.spikes``)
                observation = Observation(
                    figures.spend,
                    figures.cost,
                    figures.prepaid,
                    remaining,
                    spikes(live.policies, live.counters, state.fired, state.extensions, now_us),
                    figures.currency,
                    owed,
                    today,
                )
                remaining_changed = exact and figures.remaining != state.remaining
                if remaining_changed:
                    state.remaining = dict(figures.remaining)
                before = state.fired
                result = evaluate(live.policies, observation, state.fired, state.extensions)
                state.fired = result.fired
                if result.firings or result.rearms:
                    crossings.append((customer, result, now_us, remaining_changed, before))
                elif remaining_changed:
                    self._decision_changed(customer)
        return self._record_all(crossings, through) if crossings else []

    def _record_all(
        self,
        crossings: list[tuple[str, Evaluation, int, bool, frozenset[tuple[str, str]]]],
        through: Cut,
    ) -> list[StoredFiring]:
        """Write the cycle's crossings in one transaction, then run what waited for it."""
        fired: list[StoredFiring] = []
        with self.lock:
            self._after = []
            try:
                with self.store.batch(customer for customer, *_ in crossings):
                    for customer, result, now_us, remaining_changed, _ in crossings:
                        # The remaining balance first: a block or release publishes the
                        # decision with the balance it was decided on, never the one before.
                        version = self.version
                        sequence = through.head(self.projection.partition(customer))
                        fired.extend(self._record(customer, result, sequence, now_us))
                        if remaining_changed and self.version == version:
                            self._decision_changed(customer)
            except BaseException:
                # rolled back: nothing of the cycle is on record, so nothing of it stands
                self._after = None
                for customer, _, _, _, before in crossings:
                    self._customer(customer).fired = before
                self.load(act=False)
                for customer, *_ in crossings:
                    self._decision_changed(customer)
                raise
            after, self._after = self._after, None
            self._alert_results = []
            try:
                for step in after:
                    step()
            finally:
                results, self._alert_results = self._alert_results, None
                if results:
                    with self.store.batch():
                        for number, at_us, outcome in results:
                            self.store.add_result(number, "alert", at_us, outcome)
        return fired

    def _later(self, step: Callable[[], object]) -> None:
        """Run ``step`` now, or after the open batch of records commits."""
        if self._after is None:
            step()
        else:
            self._after.append(step)

    def _remaining(
        self, customer: str, live: Any, figures: Figures, now_us: int
    ) -> tuple[bool, dict[str, Decimal]]:
        """(exact?, remaining per unit) for the balance controls: the credit book, or
        between runs a lower bound standing in for it (``live.credit_bounds``)."""
        balance = [p for p in live.policies if p.kind == "balance_exhausted"]
        if not balance:
            return False, {}
        state = self._customer(customer)
        return self.credit_bounds.remaining(
            customer, live, balance, figures, now_us, state.fired, state.extensions or {}
        )

    def _record(
        self, customer: str, result: Evaluation, sequence: int, now_us: int
    ) -> list[StoredFiring]:
        stored_firings = []
        for firing in result.firings:
            stored = self._store_firing(customer, firing, sequence, now_us)
            if stored is None:
                self._adopt(customer, firing)
                continue
            stored_firings.append(stored)
            for action in stored.actions:
                self._act(stored, action)
        for rearm in result.rearms:
            self._store_rearm(customer, rearm, now_us)
        return stored_firings

    def _store_firing(
        self, customer: str, firing: Firing, sequence: int, now_us: int
    ) -> StoredFiring | None:
        key = (customer, firing.policy.key, firing.level)
        ordinal = self.ordinals.get(key, 0) + 1
        stored = self.store.add_firing(
            customer,
            firing.policy.key,
            firing.policy.kind,
            firing.level,
            ordinal,
            now_us,
            sequence,
            firing.observed,
            firing.policy.actions,
        )
        self.ordinals[key] = ordinal  # recorded here or by another engine: either way, taken
        return stored

    def _adopt(self, customer: str, firing: Firing) -> None:
        """Another engine (the CLI, another server on the file) recorded this crossing
        first and acted in its own process: its block must hold here too, as ``load``
        would rebuild it after a restart (unless an unblock was recorded since)."""
        key = (customer, firing.policy.key, firing.level)
        ordinal = self.ordinals.get(key, 0)
        existing = next(
            (
                f
                for f in self.store.firings(customer)
                if (f.policy, f.level, f.ordinal) == (firing.policy.key, firing.level, ordinal)
            ),
            None,
        )
        if existing is None or "block" not in existing.actions:
            return
        lifted = any(
            o.kind == "unblock"
            and o.policy in (None, existing.policy)
            and o.at_us >= existing.at_us
            for o in self.store.overrides(customer)
        )
        if not lifted:
            self._set_block(customer, existing)

    def _store_rearm(self, customer: str, rearm: Rearm, now_us: int) -> None:
        key = (customer, rearm.policy.key, rearm.level)
        self.store.add_rearm(
            customer,
            rearm.policy.key,
            rearm.level,
            self.ordinals.get(key, 0),
            now_us,
            rearm.observed,
        )
        if not rearm.policy.held:
            ordinal = self.ordinals.get(key, 0)
            self._release(
                customer,
                rearm.policy.key,
                f"{rearm.policy.key} cleared",
                event_id=f"{customer}:{rearm.policy.key}:{rearm.level}:{ordinal}:cleared",
            )

    # -- actions --------------------------------------------------------------------------------

    def _act(self, firing: StoredFiring, action: str) -> None:
        if action == "block":
            self._set_block(firing.customer, firing)
            self.store.add_result(firing.number, action, self.clock(), {"blocked": True})
        elif action == "alert":
            self._later(lambda: self._alert(firing))
        else:
            self.pending_actions += 1
            self._later(lambda: self._worker.submit(self._slow_action, firing, action))

    def _alert(self, firing: StoredFiring) -> None:
        kind = alert_kind(firing, self._policy(firing.customer, firing.policy))
        deliveries = self._publish(kind, firing_document(firing), firing.firing_id)
        outcome = {"webhooks": deliveries}
        if self._alert_results is None:
            self.store.add_result(firing.number, "alert", self.clock(), outcome)
        else:
            self._alert_results.append((firing.number, self.clock(), outcome))

    def _slow_action(self, firing: StoredFiring, action: str) -> None:
        try:
            with self.write_guard():
                outcome = self._slow_outcome(firing, action)
            self.store.add_result(firing.number, action, self.clock(), outcome)
        except Exception as error:  # an action must never kill the worker
            _log.exception("control %s: %s failed", firing.firing_id, action)
            self.store.add_result(firing.number, action, self.clock(), {"error": str(error)})
        finally:
            self.pending_actions -= 1

    def _slow_outcome(self, firing: StoredFiring, action: str) -> dict[str, Any]:
        if action == "top_up":
            policy = self._policy(firing.customer, firing.policy)
            return top_up(self.billing, self.projection, self.clock, firing, policy)
        return true_up(self.billing, firing, self._publish)

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until the background actions submitted so far have finished."""
        self._worker.submit(lambda: None).result(timeout=timeout_s)

    def _publish(self, kind: str, data: WebhookData, event_id: str) -> list[str]:
        """Queue a webhook; its delivery ids. Inside a batch of records it waits for the
        commit (the webhook store writes through its own connection to the same file)."""
        if self.publish is None:
            return []
        if self._after is not None:
            self._after.append(lambda: self._publish(kind, data, event_id))
            return []
        try:
            result = self.publish(kind, data, f"{kind}:{event_id}")
        except Exception:
            _log.exception("webhook %s for %s could not be queued", kind, event_id)
            return []
        return list(result) if isinstance(result, list) else []

    # -- blocks and access ----------------------------------------------------------------------

    def _set_block(self, customer: str, firing: StoredFiring, publish: bool = True) -> None:
        policy = self._policy(customer, firing.policy)
        features = () if policy is None else policy.features
        reason = f"{firing.kind} {firing.policy} fired ({firing.firing_id})"
        state = self._customer(customer)
        assert state.blocks is not None
        state.blocks[firing.policy] = Block(firing.policy, features, reason, firing.at_us)
        self._decision_changed(customer, publish)
        if publish:
            blocked = CustomerBlocked(
                customer, firing.policy, tuple(features), reason, firing.firing_id
            )
            self._publish("customer.blocked", blocked, firing.firing_id)

    def _release(
        self,
        customer: str,
        policy: str | None,
        reason: str,
        publish: bool = True,
        event_id: str | None = None,
    ) -> list[str]:
        """Lift ``customer``'s blocks (one policy's, or all). ``event_id`` names the cause
        (an override's id, a crossing's re-arm) for the ``customer.unblocked`` webhook: it
        must be unique across processes and restarts, since a repeated event id is not
        sent again (the access ``version`` restarts with each process)."""
        state = self._customer(customer)
        assert state.blocks is not None
        released = [key for key in state.blocks if policy is None or key == policy]
        for key in released:
            del state.blocks[key]
        if released:
            self._decision_changed(customer, publish)
            if publish:
                self._publish(
                    "customer.unblocked",
                    CustomerUnblocked(customer, tuple(released), reason),
                    event_id or f"{customer}:{self.version}",
                )
        return released

    def _decision_changed(self, customer: str, publish: bool = True) -> None:
        self.version += 1
        document = self.decision_document(customer)
        self.decisions[customer] = document
        if publish:
            for listener in list(self.listeners):
                try:
                    listener(self.version, customer, document)
                except Exception:
                    _log.exception("access listener failed")

    def decision_document(self, customer: str) -> AccessState:
        """The customer's access state as the push stream sends it."""
        state = self.state.get(customer)
        blocks = tuple((state.blocks or {}).values()) if state else ()
        remaining = (state and state.remaining) or {}
        progress = self.progress.get(customer)
        return decision_document(blocks, remaining, self._trial_end(customer), progress)

    def _trial_end(self, customer: str) -> int | None:
        live = self.projection.customers.get(customer)
        return None if live is None else live.contract.trial_end_us()

    def access(self, customer: str, feature: str | None = None) -> AccessAnswer:
        """May ``customer`` use ``feature`` now? (A read in memory: no ledger, no lock.)"""
        state = self.state.get(customer)
        blocks = tuple((state.blocks or {}).values()) if state else ()
        remaining = (state.remaining if state else None) or {}
        trial_end = self._trial_end(customer)
        trial = None if trial_end is None else trial_state(trial_end, self.clock())
        return access_document(
            customer,
            feature,
            blocks,
            {unit: str(value) for unit, value in sorted(remaining.items())},
            customer in self.projection.customers,
            self.version,
            trial,
            self.progress.get(customer),
        )

    def snapshot(self, customer: str | None = None) -> AccessSnapshot:
        with self.lock:
            return snapshot_document(self.decisions, self.version, customer)

    # -- overrides ------------------------------------------------------------------------------

    def override(self, request: Override) -> StoredOverride:
        """Finance's manual action (``Override``), checked, applied and recorded with its
        actor and reason."""
        customer, policy, amount = request.customer, request.policy, request.amount
        target = None if policy is None else self._policy(customer, policy)
        check_override(request, customer in self.projection.customers, target)
        detail: dict[str, Any] = {}
        if request.kind == "grant":
            detail = grant_override(self.billing, request)
            self.projection.mark_stale(customer)
        with self.lock:
            record = self.store.add_override(
                customer,
                request.kind,
                policy,
                None if amount is None else str(amount),
                request.reason,
                request.actor,
                self.clock(),
                detail,
            )
            self._apply_override(record)
            self.overrides_seen = max(self.overrides_seen, record.number)
        self.evaluate({customer}, self.projection.cut)
        return record

    def poll_overrides(self) -> set[str]:
        """Apply overrides another process recorded; returns their customers."""
        with self.lock:
            fresh = [o for o in self.store.overrides() if o.number > self.overrides_seen]
            for record in fresh:
                if record.kind == "grant":
                    # the other process granted in the ledger's file: read it from there
                    self.projection.mark_stale(record.customer)
                self._apply_override(record)
                self.overrides_seen = record.number
        return {record.customer for record in fresh}

    def _apply_override(self, record: StoredOverride, publish: bool = True) -> None:
        state = self._customer(record.customer)
        assert state.extensions is not None
        if record.kind == "unblock":
            self._release(
                record.customer,
                record.policy,
                f"unblocked by {record.actor}: {record.reason} ({record.override_id})",
                publish,
                event_id=f"{record.customer}:{record.override_id}",
            )
        elif record.kind == "extend" and record.policy is not None and record.amount is not None:
            state.extensions[record.policy] = state.extensions.get(record.policy, ZERO) + Decimal(
                record.amount
            )

    def close(self) -> None:
        self._worker.shutdown(wait=True)

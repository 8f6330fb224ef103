"""The live projection: every customer's current billing period, in memory, fed batch by
batch as the ledger appends, so figures are ready without reading the ledger again.

Per customer it keeps the period's ``Rater`` (the same rating the invoice uses, with the
same credit windows, minus the Merkle trees), its credit inputs and the charges of the
periods before it, and a usage-rate counter per ``usage_spike`` control (a
``CustomerLive``, ``live.customer_period``). ``figures`` derives, from memory only, what
``live.figures`` lists: quantities and amounts per line, spend, cost, prepaid and the
remaining credit per unit.

Anything unusual sends a customer back to the ledger (``stale``): an event before the
period it holds (a late event), an event past its period end (the period rolled), a
grant, void or adjustment, or a configuration change. A stale customer is rebuilt by one
scan of the ledger with the batch path's own job, so the projection never guesses.
``reconcile`` (``meterline reconcile``) proves the figures equal a full re-rating.

One customer never stops the others: events a rating cannot bill are its unbillable
usage (``unbillable_after`` hands the new ones to the engine, which publishes them), and
a customer whose contract or figures cannot be rated at all is kept in ``failures`` with
the reason (its figures answer ``RatingFailed``), while every other customer goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from meterline.billing.documents import credit_cuts
from meterline.billing.scan import RatingJob
from meterline.billing.service import Billing, Loaded, RatingFailed, billing_cycle
from meterline.billing.unbillable import failure_reason
from meterline.core.control_policies import RateCounter
from meterline.core.credit_records import Charge
from meterline.core.cuts import Cut
from meterline.core.meters import Meter, MeterProblem, MeterReader, Unmeasurable
from meterline.core.model import Configuration, Contract, segments
from meterline.core.partitions import PartitionMap
from meterline.core.periods import period_containing
from meterline.core.rating import Rater, billable_meters, unrated_problems
from meterline.live.customer_period import CustomerLive, LiveEvent
from meterline.live.figures import Figures, derive, lifetime_usage_before, remaining_credit

_log = logging.getLogger(__name__)

REVISION_CHECK_S = 1.0
"""How often the projection looks for a pricing revision applied by another process."""


def _cost_meters(configuration: Configuration) -> frozenset[str]:
    return frozenset(rate.meter for rate in configuration.costs)


class LiveProjection:
    """Every contract's current period, fed by appended batches (thread-safe)."""

    def __init__(self, billing: Billing, owns: Callable[[str], bool] | None = None) -> None:
        self.billing = billing
        self.owns = owns
        """Which customers this projection keeps (None: all). A stream worker keeps the
        customers of its partitions; another worker keeps the rest."""
        self.clock = billing.clock
        self.lock = threading.RLock()
        self.customers: dict[str, CustomerLive] = {}
        self.partitions = billing.ledger.store.partitions
        self._partition_of = PartitionMap(self.partitions)
        self._heads = [0] * self.partitions
        """Per partition, every event up to this sequence has been fed (or skipped as
        irrelevant): the cut ``cut`` names."""
        self.revision: int | None = None
        self.loaded: Loaded | None = None
        self._revision_checked = 0.0
        self._changed = False
        self.credit_marks = (0, 0)
        """The last credit grant and credit action (void, adjustment) read: newer ones,
        made by any process on the file, send their customers back to the ledger."""
        self.failures: dict[str, str] = {}
        """Customers that cannot be rated now (their contract or figures), and why."""
        self._contracts: dict[str, Contract] = {}
        self._billable: dict[str, tuple[Meter, ...]] = {}
        self._unrated: list[tuple[str, MeterProblem]] = []
        """Unbillable usage fed that no customer's rating takes (no contract, outside it)."""

    @property
    def cut(self) -> Cut:
        """The cut of the ledger fed so far (events of partitions this projection does not
        own are never fed: their heads stay where a rebuild or the engine put them)."""
        return Cut(tuple(self._heads))

    def advance(self, through: Cut, partitions: Iterable[int] | None = None) -> None:
        """Count every event inside ``through`` as fed (of ``partitions`` only, when
        given): the caller read them and none is this projection's, or all were fed."""
        with self.lock:
            chosen = range(self.partitions) if partitions is None else partitions
            for partition in chosen:
                self._heads[partition] = max(self._heads[partition], through.heads[partition])

    def partition(self, customer: str) -> int:
        """The partition holding ``customer``'s events (remembered per customer)."""
        return self._partition_of(customer)

    # -- building ---------------------------------------------------------------------------

    def _build(
        self, loaded: Loaded, contract: Contract, now_us: int, through: Cut
    ) -> CustomerLive | None:
        configuration = loaded.configuration
        cycle = billing_cycle(configuration, contract)
        period = period_containing(cycle, now_us)
        spans = segments(configuration, contract, period.start_us, period.end_us)
        if not spans:
            return None
        inputs = self.billing.credit_inputs(configuration, contract, period.end_us - 1)
        cuts = credit_cuts(inputs, period, contract.timezone)
        job = RatingJob(contract.customer, period, spans, through, configuration, cuts=cuts)
        job.rater = Rater(
            configuration,
            spans,
            cuts=cuts,
            lineage=False,
            also_meters=_cost_meters(configuration),
            semantics=configuration.semantics_for(contract.customer),
        )
        prior: list[Charge] = []
        if not inputs.is_empty():
            prior = self.billing.prior_charges(configuration, contract, period, through)
        policies = configuration.controls_for(contract, now_us)
        sequence = through.head(self.partition(contract.customer))
        earlier = lifetime_usage_before(self.billing, contract, period)
        live = CustomerLive(
            contract, period, job, inputs, prior, policies, sequence=sequence, usage_before=earlier
        )
        for policy in policies:
            if policy.kind == "usage_spike":
                live.counters.setdefault(policy.meter, RateCounter())
        return live

    def rebuild(self, customers: Iterable[str] | None = None, through: Cut | None = None) -> None:
        """Rebuild ``customers`` (all, and reload the configuration, when None) from the
        ledger in one scan, of the events inside ``through`` (the current cut when None)."""
        with self.lock:
            now_us = self.clock()
            if through is None:
                through = self.billing.ledger_cut()
            if customers is None:
                self._credit_changes()  # everyone is read afresh below
                self.loaded = self.billing.load()
                self.revision = None if self.loaded is None else self.loaded.revision
                wanted = None
                self.customers = {}
                self.failures = {}
                configuration = None if self.loaded is None else self.loaded.configuration
                self._contracts = (
                    {}
                    if configuration is None
                    else {contract.customer: contract for contract in configuration.contracts}
                )
                self._billable = {} if configuration is None else billable_meters(configuration)
            else:
                wanted = set(customers)
            loaded = self.loaded
            if loaded is None:
                self.advance(through)
                return
            built: list[CustomerLive] = []
            owns = self.owns
            for contract in loaded.configuration.contracts:
                if wanted is not None and contract.customer not in wanted:
                    continue
                if owns is not None and not owns(contract.customer):
                    continue
                try:
                    live = self._build(loaded, contract, now_us, through)
                except Exception as error:  # one contract never stops the others
                    self.failures[contract.customer] = failure_reason(error)
                    self.customers.pop(contract.customer, None)
                    _log.warning("live: %s cannot be rated: %s", contract.customer, error)
                    continue
                self.failures.pop(contract.customer, None)
                if live is None:
                    self.customers.pop(contract.customer, None)
                    continue
                built.append(live)
            self.billing.run_rating_jobs([live.job for live in built])
            if any(live.counters for live in built):
                self._fill_counters([live for live in built if live.counters], now_us, through)
            for live in built:
                self.customers[live.contract.customer] = live
            if customers is None:
                self._heads = list(through.heads)

    def _fill_counters(self, built: list[CustomerLive], now_us: int, through: Cut) -> None:
        """Usage rates for spike controls: the events of the longest look-back."""
        start = now_us - max(
            p.window_us + p.baseline_us
            for live in built
            for p in live.policies
            if p.kind == "usage_spike"
        )
        by_customer = {live.contract.customer: live for live in built}
        rows = self.billing.event_rows_since(through, start)
        for partition, sequence, customer, event_type, timestamp_us, body in rows:
            live = by_customer.get(customer)
            if live is not None:
                event = LiveEvent.decoded(
                    sequence, customer, event_type, timestamp_us, body, partition
                )
                self._count(live, event)

    # -- feeding ----------------------------------------------------------------------------

    def feed(self, events: list[LiveEvent]) -> set[str]:
        """Feed appended events (ascending sequence within each partition); returns the
        customers touched. Each customer's events are rated as one batch
        (``Rater.add_batch``: the same state as one by one) after the checks below."""
        touched: set[str] = set()
        rated: dict[str, list[tuple[int, int, str, dict[str, Any], bytes]]] = {}
        with self.lock:
            customers = self.customers
            heads = self._heads
            for event in events:
                if event.sequence <= heads[event.partition]:
                    continue
                heads[event.partition] = event.sequence
                live = customers.get(event.customer)
                if live is None:
                    if event.type in self._billable:
                        self._unrated_event(event)
                    continue
                if event.sequence <= live.sequence:
                    continue
                touched.add(event.customer)
                live.sequence = event.sequence
                period = live.period
                if not period.start_us <= event.timestamp_us < period.end_us:
                    live.stale = True  # late (an earlier period) or the period rolled
                    continue
                if live.stale:
                    continue
                if event.properties is None:
                    # the events before it first: problems stay in ledger order
                    live.job.rater.add_batch(rated.pop(event.customer, ()))
                    live.job.rater.refuse(
                        event.sequence, event.type, "undecodable", "the event does not decode"
                    )
                    continue
                batch = rated.get(event.customer)
                if batch is None:
                    batch = rated[event.customer] = []
                batch.append(
                    (event.sequence, event.timestamp_us, event.type, event.properties, b"")
                )
                if live.counters:
                    self._count(live, event)
            for customer, batch in rated.items():
                customers[customer].job.rater.add_batch(batch)
        return touched

    def _unrated_event(self, event: LiveEvent) -> None:
        """Usage of a customer this projection rates nothing for: unbillable when it has no
        contract or the event is outside it (a customer of another worker is not ours)."""
        if self.owns is not None and not self.owns(event.customer):
            return
        problems = unrated_problems(
            self._billable,
            self._contracts.get(event.customer),
            event.sequence,
            event.timestamp_us,
            event.type,
            event.properties,
        )
        self._unrated.extend((event.customer, problem) for problem in problems)

    def unbillable_after(
        self, after: Cut, customers: Iterable[str]
    ) -> list[tuple[str, MeterProblem]]:
        """The unbillable usage met since the last call: of events fed that no customer's
        rating takes, and of ``customers``' ratings, outside the cut ``after``."""
        with self.lock:
            found = [
                (customer, problem)
                for customer, problem in self._unrated
                if not after.covers(self.partition(customer), problem.sequence)
            ]
            self._unrated = []
            for name in sorted(set(customers)):
                live = self.customers.get(name)
                if live is None:
                    continue
                problems = live.job.rater.problems  # in ledger order, as events were fed
                head = after.head(self.partition(name))
                start = bisect_right(problems, head, key=lambda p: p.sequence)
                found.extend((name, problem) for problem in problems[start:])
            return found

    @staticmethod
    def _count(live: CustomerLive, event: LiveEvent) -> None:
        if live.readers is None:
            live.readers = []
            for meter_key, counter in live.counters.items():
                meter = None if meter_key is None else live.job.configuration.meter(meter_key)
                if meter_key is not None and meter is None:
                    continue
                live.readers.append(
                    (
                        None if meter is None else meter.event_type,
                        None if meter is None else MeterReader(meter).read,
                        counter,
                    )
                )
        for event_type, read, counter in live.readers:
            if read is None:
                counter.add(event.timestamp_us, 1)
                continue
            if event_type != event.type or event.properties is None:
                continue
            reading = read(event.properties)
            if reading is None or isinstance(reading, Unmeasurable):
                continue
            counter.add(event.timestamp_us, reading[1])

    def mark_stale(self, customer: str | None = None) -> None:
        """A grant, void, adjustment or amendment changed ``customer`` (everyone when None)."""
        if customer is None:
            self._changed = True
        with self.lock:
            for name, live in self.customers.items():
                if customer is None or name == customer:
                    live.stale = True

    def refresh(self, through: Cut | None = None) -> set[str]:
        """Rebuild stale customers (and everyone after a configuration change or when a
        period has ended) from the events inside ``through`` (the current cut); returns
        the customers rebuilt."""
        with self.lock:
            now_us = self.clock()
            checked = time.monotonic()
            if checked - self._revision_checked >= REVISION_CHECK_S or self._changed:
                # this process's own applies say so at once (``changed``); another
                # process's are seen within ``REVISION_CHECK_S``
                self._revision_checked, self._changed = checked, False
                current = self.billing.store.revision()
                latest = None if current is None else current.revision
            else:
                latest = self.revision
            if latest != self.revision:
                self.rebuild(through=through)
                return set(self.customers)
            for name in self._credit_changes():
                changed = self.customers.get(name)
                if changed is not None:
                    changed.stale = True
            stale = {
                name
                for name, live in self.customers.items()
                if live.stale or now_us >= live.period.end_us
            }
            if stale:
                self.rebuild(stale, through)
            return stale

    def _credit_changes(self) -> set[str]:
        """The customers granted credit, or whose grants were voided or adjusted, since
        the last look, by this process or another one on the file (another process's
        ``Billing`` tells no listener here: the CLI granting while a server runs)."""
        changed, grants, actions = self.billing.credit_changes_since(*self.credit_marks)
        self.credit_marks = (grants, actions)
        return changed

    # -- figures ----------------------------------------------------------------------------

    def figures(self, customer: str, credits: bool = True) -> Figures | None:
        """The customer's figures now; without ``credits`` the credit book is not run
        (``remaining`` is empty)."""
        with self.lock:
            live = self.customers.get(customer)
            now_us = self.clock()
            if live is not None and (live.stale or now_us >= live.period.end_us):
                self.rebuild([customer])
                live = self.customers.get(customer)
            if live is None:
                failure = self.failures.get(customer)
                if failure is not None:
                    raise RatingFailed(customer, failure)
                return None
            try:
                through = self.cut.advanced(self.partition(customer), live.sequence)
                figures = derive(live, now_us, through, credits)
            except (ArithmeticError, ValueError) as error:
                reason = failure_reason(error)
                self.failures[customer] = reason
                raise RatingFailed(customer, reason) from error
            self.failures.pop(customer, None)
            return figures

    def remaining(self, customer: str, at_us: int | None = None) -> dict[str, Decimal]:
        """The customer's remaining credit per unit now (or at ``at_us`` in its current
        period), with every event fed consumed (runs the credit book)."""
        with self.lock:
            live = self.customers.get(customer)
            if live is None or live.inputs.is_empty():
                return {}
            return remaining_credit(live, self.clock() if at_us is None else at_us)

"""Laws of the live path, checked over generated workloads (hypothesis), each example on
a real ``Billing`` over its own ledger (a SQLite file or a PostgreSQL schema: every law
runs on both stores), with an injected clock.

- Exactly once under any batch split: the same events, permuted and cut into batches
  anywhere (one ``engine.cycle()`` per batch), fire the same (customer, policy, level)
  multiset as one event per batch and as one single batch; each crossing is recorded
  once in the ``ControlStore`` and, the figures being monotone, nothing re-arms.
- Live == batch: after a random workload (on-time and late events in the open period,
  events stamped a little ahead of the clock, late events for a finalized period, a
  mid-way amendment, grants, tiered and credit-priced prices, clock ticks),
  ``reconcile`` passes and, independently, the
  engine's own projection equals the invoice draft line by line, ``Billing.credits``
  per unit, and a cost and prepayment recomputed here from the events sent.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal as D
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from meterline.billing.service import Billing, open_billing
from meterline.core.control_policies import SPIKE_BUCKET_US, RateCounter
from meterline.core.documents import MeterUsageLine
from meterline.core.events import format_timestamp, timestamp_to_us
from meterline.live.reconcile import reconcile
from meterline.live.service import LiveEngine
from tests.conftest import Databases

HOUR_US = 3_600_000_000
CUSTOMERS = ("c0", "c1", "c2")


def us(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))


class Clock:
    """A settable clock the ledger and billing read."""

    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


# -- exactly once ---------------------------------------------------------------------------

ONCE_NOW = us(2026, 10, 20, 12)
ONCE_YAML = """\
credit_types:
  - {key: credits, name: Credits, currency: USD, unit_value: "0.01"}
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens, group_by: [model]}
  - {key: calls, event_type: llm, aggregation: count}
costs:
  - {meter: tokens, per_unit: "0.00001"}
plans:
  - key: pro
    controls:
      - {key: budget, policy: spend_threshold, amount: 10, percents: [50, 80, 100],
         actions: [alert]}
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - meter: tokens
            model: graduated
            tiers:
              - {up_to: 4000, unit_amount: "0.001"}
              - {unit_amount: "0.0005"}
          - {meter: calls, model: per_unit, unit_amount: 2, credit_type: credits}
contracts:
"""
ONCE_CONTRACT = """\
  - customer: {customer}
    plan: pro
    start: 2026-10-01
    credits:
      grants:
        - {{key: pool, credit_type: credits, amount: 20, paid: "0.05", recurrence: period}}
    controls:
      - {{key: empty, policy: balance_exhausted, unit: credits, actions: [block]}}
      - {{key: cogs, policy: cost_exceeds_prepayment, actions: [alert]}}
"""
ONCE_EVENTS = 12
"""Per customer: 12 calls of 1500 tokens (graduated: 0.001 a token up to 4000, then
0.0005) and 2 credits (0.02) each. Spend after k calls: 5.08 at the 4th (50% of 10),
8.16 at the 8th (80%), 10.47 at the 11th (100%); the pool of 20 credits is empty after
the 10th; cost (0.015 a call) exceeds the 0.05 prepaid at the 4th. Every figure only
grows (or, the balance, only falls), so nothing re-arms."""


def once_stream(customers: int) -> list[dict[str, Any]]:
    """The fixed stream: per customer, calls spread over the open period's days."""
    events = []
    for index in range(ONCE_EVENTS):
        for number, customer in enumerate(CUSTOMERS[:customers]):
            events.append(
                {
                    "id": f"{customer}-{index}",
                    "customer": customer,
                    "type": "llm",
                    "timestamp": format_timestamp(us(2026, 10, 1 + index, 3 + number)),
                    "properties": {"model": "m", "tokens": 1500},
                }
            )
    return events


def once_yaml(customers: int) -> str:
    return ONCE_YAML + "".join(
        ONCE_CONTRACT.format(customer=customer) for customer in CUSTOMERS[:customers]
    )


@dataclass(frozen=True)
class OnceRun:
    firings: Counter[tuple[str, str, str]]
    recorded: list[tuple[str, str, str, int]]
    rearms: int
    blocked: dict[str, bool]


def run_once(databases: Databases, customers: int, batches: list[list[dict[str, Any]]]) -> OnceRun:
    with tempfile.TemporaryDirectory() as directory:
        clock = Clock(ONCE_NOW)
        with open_billing(databases.new(Path(directory)), clock) as billing:
            billing.apply(once_yaml(customers))
            engine = LiveEngine(billing).start(thread=False)
            try:
                for batch in batches:
                    outcome = billing.ledger.ingest(batch)
                    assert outcome.accepted == len(batch), outcome
                    engine.cycle()
                firings = engine.store.firings()
                rearms = engine.store.rearms()
                blocked = {
                    customer: not engine.controls.access(customer).allowed
                    for customer in CUSTOMERS[:customers]
                }
            finally:
                engine.stop()
    return OnceRun(
        Counter((f.customer, f.policy, f.level) for f in firings),
        [(f.customer, f.policy, f.level, f.ordinal) for f in firings],
        len(rearms),
        blocked,
    )


@cache
def reference_runs(databases: Databases, customers: int) -> tuple[OnceRun, OnceRun]:
    """One event per batch, and one single batch, of the canonical stream (per store)."""
    stream = once_stream(customers)
    return (
        run_once(databases, customers, [[event] for event in stream]),
        run_once(databases, customers, [stream]),
    )


def expected_firings(customers: int) -> Counter[tuple[str, str, str]]:
    levels = [
        ("budget", "50%"),
        ("budget", "80%"),
        ("budget", "100%"),
        ("empty", "crossed"),
        ("cogs", "crossed"),
    ]
    return Counter(
        (customer, policy, level) for customer in CUSTOMERS[:customers] for policy, level in levels
    )


@st.composite
def split_streams(draw: st.DrawFn) -> tuple[int, list[list[dict[str, Any]]]]:
    customers = draw(st.integers(1, 3))
    stream = draw(st.permutations(once_stream(customers)))
    cuts = draw(st.sets(st.integers(1, len(stream) - 1), max_size=len(stream) - 1))
    edges = [0, *sorted(cuts), len(stream)]
    return customers, [stream[low:high] for low, high in pairwise(edges)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split=split_streams())
def test_each_crossing_fires_once_whatever_the_batch_split(
    databases: Databases, split: tuple[int, list[list[dict[str, Any]]]]
) -> None:
    customers, batches = split
    one_by_one, single = reference_runs(databases, customers)
    run = run_once(databases, customers, batches)
    expected = expected_firings(customers)
    assert one_by_one.firings == expected
    assert single.firings == expected
    assert run.firings == expected
    # each crossing recorded once, as the first crossing of its level; nothing re-armed
    assert len(run.recorded) == len(set(run.recorded)) == sum(expected.values())
    assert all(ordinal == 1 for *_, ordinal in run.recorded)
    assert run.rearms == one_by_one.rearms == single.rearms == 0
    # every pool ends empty: the balance block is in force for everyone
    assert run.blocked == one_by_one.blocked == dict.fromkeys(CUSTOMERS[:customers], True)


# -- live == batch ----------------------------------------------------------------------------

START_NOW = us(2026, 10, 20, 12)
LAST_NOW = us(2026, 10, 31, 20)
SEPTEMBER = (us(2026, 9, 1), us(2026, 10, 1))
OCTOBER_START = us(2026, 10, 1)
COSTS = {"big": D("0.000004"), "small": D("0.000001"), "gpu": D("0.002")}
POOL_PAID = D(2)

LIVE_YAML = """\
credit_types:
  - {key: credits, name: Credits, currency: USD, unit_value: "0.01"}
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens, group_by: [model]}
  - {key: calls, event_type: llm, aggregation: count}
  - {key: images, event_type: image, aggregation: sum, property: count}
  - {key: gpu, event_type: gpu, aggregation: sum, property: seconds}
costs:
  - {meter: tokens, where: {model: big}, per_unit: "0.000004"}
  - {meter: tokens, per_unit: "0.000001"}
  - {meter: gpu, per_unit: "0.002"}
plans:
  - key: pro
    controls:
      - {key: budget, policy: spend_threshold, amount: 20, percents: [50, 80, 100],
         actions: [alert]}
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - meter: tokens
            model: graduated
            tiers:
              - {up_to: 1000, unit_amount: "0.001"}
              - {up_to: 5000, unit_amount: "0.0005"}
              - {unit_amount: "0.0001"}
          - meter: images
            model: volume
            tiers:
              - {up_to: 10, unit_amount: "0.5"}
              - {up_to: 50, unit_amount: "0.4"}
              - {unit_amount: "0.3"}
          - {meter: calls, model: per_unit, unit_amount: 2, credit_type: credits}
  - key: max
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - meter: tokens
            model: volume
            tiers:
              - {up_to: 2000, unit_amount: "0.0008"}
              - {unit_amount: "0.0003"}
          - meter: images
            model: graduated
            tiers:
              - {up_to: 5, unit_amount: "0.6"}
              - {unit_amount: "0.2"}
          - {meter: calls, model: per_unit, unit_amount: 3, credit_type: credits}
contracts:
"""
LIVE_CONTRACT = """\
  - customer: {customer}
    plan: pro
    start: 2026-09-01
    credits:
      grants:
        - {{key: pool, credit_type: credits, amount: 60, paid: 2, recurrence: period}}
    controls:
      - {{key: empty, policy: balance_exhausted, unit: credits, actions: [block]}}
      - {{key: cogs, policy: cost_exceeds_prepayment, actions: [alert]}}
"""


def live_yaml(customers: int, amendment_day: int | None) -> str:
    text = LIVE_YAML
    for customer in CUSTOMERS[:customers]:
        text += LIVE_CONTRACT.format(customer=customer)
        if amendment_day is not None:
            text += (
                f"    amendments:\n      - {{effective: 2026-10-{amendment_day:02d}, plan: max}}\n"
            )
    return text


@st.composite
def event_specs(draw: st.DrawFn, customers: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(["llm", "llm", "image", "gpu"]))
    if kind == "llm":
        properties = {
            "model": draw(st.sampled_from(["big", "small"])),
            "tokens": draw(st.integers(1, 4000)),
        }
    elif kind == "image":
        properties = {"count": draw(st.integers(1, 30))}
    else:
        properties = {"seconds": draw(st.integers(1, 300))}
    return {
        "customer": CUSTOMERS[draw(st.integers(0, customers - 1))],
        "type": kind,
        "properties": properties,
        # where in time: the open period up to now (on time or late, which the order of
        # the batches decides), up to four minutes ahead of now (within the ledger's
        # clock-skew limit), or the period before it
        "when": draw(st.sampled_from(["now"] * 8 + ["ahead", "september", "september"])),
        "position": draw(st.floats(0, 1, allow_nan=False)),
    }


@st.composite
def workloads(draw: st.DrawFn) -> tuple[int, list[tuple[str, Any]]]:
    customers = draw(st.integers(1, 2))
    steps: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(2, 8))):
        steps.append(("events", draw(st.lists(event_specs(customers), min_size=1, max_size=8))))
    specials: list[tuple[str, Any]] = [("close", None)]
    if draw(st.booleans()):
        specials.append(("amend", draw(st.integers(2, 25))))
    for _ in range(draw(st.integers(0, 2))):
        specials.append(
            (
                "grant",
                (
                    CUSTOMERS[draw(st.integers(0, customers - 1))],
                    D(draw(st.integers(1, 100))),
                    D(draw(st.sampled_from([0, 0, 50, 125]))).scaleb(-2),
                ),
            )
        )
    for _ in range(draw(st.integers(0, 2))):
        specials.append(("tick", draw(st.integers(1, 60))))
    for special in specials:
        steps.insert(draw(st.integers(0, len(steps))), special)
    return customers, steps


@dataclass
class Sent:
    customer: str
    timestamp_us: int
    type: str
    properties: dict[str, Any]


def run_workload(
    billing: Billing, engine: LiveEngine, clock: Clock, customers: int, steps: list[Any]
) -> tuple[list[Sent], dict[str, D]]:
    sent: list[Sent] = []
    paid: dict[str, D] = dict.fromkeys(CUSTOMERS[:customers], POOL_PAID)
    number = 0
    for kind, detail in steps:
        if kind == "events":
            batch = []
            for spec in detail:
                low, high = {
                    "now": (OCTOBER_START, clock.now_us),
                    "ahead": (clock.now_us, clock.now_us + 4 * 60_000_000),
                    "september": SEPTEMBER,
                }[spec["when"]]
                at = low + int((high - low - 1) * spec["position"])
                number += 1
                batch.append(
                    {
                        "id": f"e{number}",
                        "customer": spec["customer"],
                        "type": spec["type"],
                        "timestamp": format_timestamp(at),
                        "properties": spec["properties"],
                    }
                )
                sent.append(Sent(spec["customer"], at, spec["type"], spec["properties"]))
            outcome = billing.ledger.ingest(batch)
            assert outcome.accepted == len(batch), outcome
        elif kind == "close":
            closed = billing.close(OCTOBER_START)
            assert len(closed) == customers  # September, finalized
        elif kind == "amend":
            billing.apply(live_yaml(customers, detail))
        elif kind == "grant":
            customer, amount, price = detail
            billing.grant(customer, "credits", amount, "goodwill", paid=price)
            paid[customer] += price
        else:
            clock.now_us = min(LAST_NOW, clock.now_us + detail * HOUR_US)
        engine.cycle()
    return sent, paid


def _group(group: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in group.items() if v is not None))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workload=workloads())
def test_live_figures_equal_the_batch_path(
    databases: Databases, workload: tuple[int, list[Any]]
) -> None:
    customers, steps = workload
    with tempfile.TemporaryDirectory() as directory:
        clock = Clock(START_NOW)
        with open_billing(databases.new(Path(directory)), clock) as billing:
            billing.apply(live_yaml(customers, None))
            engine = LiveEngine(billing).start(thread=False)
            try:
                sent, paid = run_workload(billing, engine, clock, customers, steps)
                report = reconcile(billing)
                assert report.passed, report.as_dict()
                assert report.through == billing.ledger_cut()
                for customer in CUSTOMERS[:customers]:
                    check_customer(billing, engine, customer, sent, paid[customer], clock)
            finally:
                engine.stop()


def check_customer(
    billing: Billing,
    engine: LiveEngine,
    customer: str,
    sent: list[Sent],
    paid: D,
    clock: Clock,
) -> None:
    live = engine.projection.customers[customer]
    assert not live.stale
    partition = engine.projection.partition(customer)
    assert engine.projection.cut == billing.ledger_cut()  # every event sent was fed
    assert live.sequence <= engine.projection.cut.head(partition)
    figures = engine.projection.figures(customer)
    assert figures is not None
    assert figures.period.start_us == OCTOBER_START
    assert figures.through == billing.ledger_cut()
    draft = billing.draft(customer)
    # every priced line: quantity and amount (credit-priced lines in credits), per
    # segment (an amendment splits the period); the live lines come in segment order
    drafted: dict[tuple[str, Any], list[tuple[D, D, str | None]]] = {}
    usage_total = D(0)
    for line in sorted(
        (line for line in draft.lines if isinstance(line, MeterUsageLine)),
        key=lambda line: line.service.start,
    ):
        amount = D(line.amount_exact) if line.units is UNSET else D(line.units)
        usage_total += D(line.amount_exact)
        drafted.setdefault((line.meter, _group(line.group)), []).append(
            (D(line.quantity), amount, None if line.unit is UNSET else line.unit)
        )
    priced: dict[tuple[str, Any], list[tuple[D, D, str | None]]] = {}
    for figure in figures.lines:
        if figure.amount is None:
            continue
        unit = figure.unit if figure.unit == "credits" else None
        priced.setdefault((figure.meter, _group(figure.group)), []).append(
            (figure.quantity, figure.amount, unit)
        )
    assert priced == drafted
    assert figures.spend == usage_total  # no discount in this pricing
    # cost, recomputed here from the events sent in the open period
    cost = D(0)
    for event in sent:
        if event.customer != customer or event.timestamp_us < OCTOBER_START:
            continue
        if event.type == "llm":
            cost += event.properties["tokens"] * COSTS[event.properties["model"]]
        elif event.type == "gpu":
            cost += event.properties["seconds"] * COSTS["gpu"]
    assert figures.cost == cost
    assert figures.prepaid == paid
    # the credit ledger's remaining balance: now, when no event is stamped later; else
    # just after the newest (the live book consumes every event it was fed, the credit
    # ledger as of an instant only the usage stamped before it)
    newest = max(
        (
            e.timestamp_us
            for e in sent
            if e.customer == customer and e.timestamp_us >= OCTOBER_START
        ),
        default=0,
    )
    if newest < clock.now_us:
        live_remaining, at = figures.remaining, clock.now_us
    else:
        at = newest + 1
        live_remaining = engine.projection.remaining(customer, at)
    totals = billing.credits(customer, at)["totals"]
    assert live_remaining == {unit: D(total["remaining"]) for unit, total in totals.items()}


@given(
    adds=st.lists(
        st.tuples(
            st.integers(0, 3 * 3600 * SPIKE_BUCKET_US),
            st.sampled_from([1, 7, D("0.25"), D("1.5")]),
        ),
        max_size=200,
    ),
    windows=st.lists(
        st.tuples(st.integers(-120, 3 * 3600 + 120), st.integers(0, 4000)), min_size=1
    ),
)
def test_a_rate_counters_window_total_is_the_sum_of_its_seconds(
    adds: list[tuple[int, D | int]], windows: list[tuple[int, int]]
) -> None:
    """The minute sums are a shortcut only: any window's total equals the plain sum of the
    quantities whose second lies in it, wherever its edges fall against the minutes."""
    counter = RateCounter()
    seconds: Counter[int] = Counter()
    for timestamp_us, quantity in adds:
        counter.add(timestamp_us, quantity)
        seconds[timestamp_us // SPIKE_BUCKET_US] += quantity  # type: ignore[assignment]
    for first, width in windows:
        expected = sum((q for s, q in seconds.items() if first <= s < first + width), D(0))
        total = counter.total(first * SPIKE_BUCKET_US, (first + width) * SPIKE_BUCKET_US)
        assert total == expected


@given(
    adds=st.lists(
        st.tuples(st.integers(0, 2 * 3600 * SPIKE_BUCKET_US), st.integers(-5, 10**20)),
        max_size=200,
    ),
    windows=st.lists(
        st.tuples(st.integers(-120, 2 * 3600 + 120), st.integers(0, 4000)), min_size=1
    ),
)
def test_an_int_only_rate_counter_totals_as_a_decimal_the_sum_of_its_seconds(
    adds: list[tuple[int, int]], windows: list[tuple[int, int]]
) -> None:
    """With only int quantities the counter sums without a decimal context (three levels
    of sums: seconds, ten seconds, minutes): still exactly the plain sum of the seconds in
    the window, as a Decimal, wherever its edges fall."""
    counter = RateCounter()
    seconds: Counter[int] = Counter()
    for timestamp_us, quantity in adds:
        counter.add(timestamp_us, quantity)
        seconds[timestamp_us // SPIKE_BUCKET_US] += quantity
    for first, width in windows:
        expected = sum(q for s, q in seconds.items() if first <= s < first + width)
        total = counter.total(first * SPIKE_BUCKET_US, (first + width) * SPIKE_BUCKET_US)
        assert type(total) is D and total == expected

"""Rating a batch at once equals rating its events one by one (hypothesis).

``Rater.add_batch`` folds the int values of sum and count lines per (line, window) and
settles them once; everything else goes in per event. Whatever the events (every
aggregation, ints, decimals, numeric strings, values a meter cannot measure, negatives,
events outside the contract, two segments, credit windows) and wherever the stream is
cut into batches, the rater must end in the same state as ``add`` of each event: the same
quantities, priced lines (with their Merkle roots and members), window charges, problems
in the same order, and events outside every segment. And the live projection fed the
same events cut into batches anywhere (one engine cycle each) ends with the figures,
remaining balances, access decisions and firings of one event per cycle.
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import UTC, datetime
from decimal import Decimal as D
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline.billing.service import open_billing
from meterline.config.schema import parse_configuration
from meterline.config.source import read_yaml
from meterline.core.events import format_timestamp, timestamp_to_us
from meterline.core.meters import QUANTITY_LIMIT
from meterline.core.model import Configuration, segments
from meterline.core.periods import BillingPeriod
from meterline.core.rating import Rater, window_charges
from meterline.live.service import LiveEngine
from tests.conftest import Databases
from tests.property.test_control_laws import CUSTOMERS, ONCE_NOW, Clock, once_stream, once_yaml


def us(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


OCTOBER = BillingPeriod(us(2026, 10, 1), us(2026, 11, 1))
CUTS = (us(2026, 10, 5), us(2026, 10, 10), us(2026, 10, 20))
"""Window edges of the credit burn-down (the amendment's start is one too)."""

PRICING = """\
credit_types:
  - {key: credits, name: Credits, currency: USD, unit_value: "0.01"}
meters:
  - {key: tokens, event_type: llm, aggregation: sum, property: tokens, group_by: [model]}
  - {key: calls, event_type: llm, aggregation: count}
  - {key: chat_calls, event_type: llm, aggregation: count,
     filters: [{property: feature, equals: chat}]}
  - {key: refunds, event_type: refund, aggregation: sum, property: amount, negative: allow}
  - {key: spend, event_type: charge, aggregation: sum, property: amount}
  - {key: peak, event_type: llm, aggregation: max, property: tokens}
  - {key: seats, event_type: seat, aggregation: latest, property: count}
  - {key: users, event_type: llm, aggregation: unique_count, property: user}
  - {key: unpriced, event_type: other, aggregation: count}
plans:
  - key: base
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - meter: tokens
            model: graduated
            tiers:
              - {up_to: 5000, unit_amount: "0.001"}
              - {unit_amount: "0.0005"}
          - {meter: calls, model: per_unit, unit_amount: 2, credit_type: credits}
          - {meter: chat_calls, model: package, size: 3, amount: "0.7"}
          - {meter: refunds, model: per_unit, unit_amount: 1}
          - {meter: spend, model: percentage, rate: "0.1", fixed_fee: "0.05"}
          - {meter: peak, model: per_unit, unit_amount: "0.01"}
          - {meter: seats, model: per_unit, unit_amount: 5}
          - {meter: users, model: volume, tiers: [{up_to: 2, unit_amount: 3}, {unit_amount: 1}]}
  - key: max
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: tokens, model: per_unit, unit_amount: "0.002", minimum: 1}
          - {meter: calls, model: per_unit, unit_amount: 1}
contracts:
  - customer: acme
    plan: base
    start: 2026-10-03
    end: 2026-10-28
    amendments:
      - {effective: 2026-10-15, plan: max}
"""


@cache
def configuration() -> Configuration:
    data, positions = read_yaml(PRICING)
    return parse_configuration(data, positions)


def new_rater() -> Rater:
    config = configuration()
    contract = config.contract("acme")
    assert contract is not None
    spans = segments(config, contract, OCTOBER.start_us, OCTOBER.end_us)
    return Rater(config, spans, keep_events=True, cuts=CUTS, also_meters=frozenset({"unpriced"}))


VALUES = st.one_of(
    st.integers(0, 10_000),
    st.integers(-50, -1),
    st.just(QUANTITY_LIMIT),
    st.decimals(min_value=-100, max_value=10**6, places=3, allow_nan=False),
    st.sampled_from(["12", "0.5", "abc", "-3", "1e30", "NaN"]),
    st.booleans(),
    st.none(),
)


@st.composite
def event(draw: st.DrawFn) -> tuple[int, str, dict[str, Any]]:
    """(timestamp, type, properties): some outside the contract, some values missing."""
    timestamp = draw(st.integers(OCTOBER.start_us, OCTOBER.end_us - 1))
    event_type = draw(st.sampled_from(["llm", "llm", "llm", "refund", "charge", "seat", "other"]))
    properties: dict[str, Any] = {}
    for name in ("tokens", "amount", "count"):
        if draw(st.booleans()):
            properties[name] = draw(VALUES)
    if draw(st.booleans()):
        properties["model"] = draw(st.sampled_from(["a", "b", 7]))
    if draw(st.booleans()):
        properties["feature"] = draw(st.sampled_from(["chat", "code"]))
    if draw(st.booleans()):
        properties["user"] = draw(st.sampled_from(["u1", "u2", 3, D("4.0")]))
    return timestamp, event_type, properties


@st.composite
def split_stream(
    draw: st.DrawFn,
) -> tuple[list[tuple[int, int, str, dict[str, Any], bytes]], list[int]]:
    """Events in ascending sequence, and where the stream is cut into batches."""
    drawn = draw(st.lists(event(), min_size=1, max_size=60))
    events = [
        (number, timestamp, event_type, properties, hashlib.sha256(b"%d" % number).digest())
        for number, (timestamp, event_type, properties) in enumerate(drawn, start=1)
    ]
    cuts = draw(st.sets(st.integers(1, len(events)), max_size=len(events)))
    return events, sorted(cuts)


def state(rater: Rater) -> tuple[Any, ...]:
    """Everything a rating shows: lines (with roots and members), window charges,
    quantities, problems in order, events outside every segment."""
    lines = rater.lines("USD", configuration())
    members = [
        rater.members(line.segment, line.meter, tuple(value for _, value in line.group))
        for line in lines
    ]
    return (
        lines,
        members,
        window_charges(rater, "USD", configuration()),
        sorted(
            ((s, m.key, g, q, n) for s, m, g, q, n in rater.quantities()),
            key=lambda item: (item[0], item[1], str(item[2])),
        ),
        rater.problems,
        rater.unbilled_events,
    )


@settings(max_examples=300, deadline=None)
@given(stream=split_stream())
def test_a_batch_rates_exactly_as_its_events_one_by_one(
    stream: tuple[list[tuple[int, int, str, dict[str, Any], bytes]], list[int]],
) -> None:
    events, cuts = stream
    one_by_one = new_rater()
    for sequence, timestamp_us, event_type, properties, event_hash in events:
        one_by_one.add(sequence, timestamp_us, event_type, properties, event_hash)
    batched = new_rater()
    for low, high in pairwise([0, *cuts, len(events)]):
        batched.add_batch(events[low:high])
    assert state(batched) == state(one_by_one)


def test_a_batch_folds_ints_and_keeps_decimals_exact() -> None:
    """The folded path and the per-event path meet on one line: ints and decimals."""
    day = us(2026, 10, 4)
    events = [
        (1, day, "llm", {"tokens": 1000, "model": "a"}, b"1"),
        (2, day + 1, "llm", {"tokens": D("0.125"), "model": "a"}, b"2"),
        (3, day + 2, "llm", {"tokens": "2", "model": "a"}, b"3"),
        (4, day + 3, "llm", {"tokens": 3, "model": "a"}, b"4"),
    ]
    rater = new_rater()
    rater.add_batch(events)
    quantities = {(m.key, g): (q, n) for _, m, g, q, n in rater.quantities()}
    assert quantities[("tokens", ("a",))] == (D("1005.125"), 4)
    assert quantities[("calls", ())] == (D(4), 4)
    assert quantities[("peak", ())] == (D(1000), 4)


# -- the live projection: figures, balances and decisions under any split -------------------


def live_stream() -> list[dict[str, Any]]:
    """``once_stream`` of two customers moved to three calls a day (in one credit window:
    what a batch folds)."""
    events = once_stream(2)
    for number, event in enumerate(events):
        index = number // 2
        event["timestamp"] = format_timestamp(us(2026, 10, 1 + index // 3, 3 + index % 3))
    return events


def live_outcome(databases: Databases, batches: list[list[dict[str, Any]]]) -> list[Any]:
    """Each customer's figures, remaining balance and access decision, and the firings,
    after the engine took ``batches`` one cycle each."""
    with (
        tempfile.TemporaryDirectory() as directory,
        open_billing(databases.new(Path(directory)), Clock(ONCE_NOW)) as billing,
    ):
        billing.apply(once_yaml(2))
        engine = LiveEngine(billing).start(thread=False)
        try:
            for batch in batches:
                assert billing.ledger.ingest(batch).accepted == len(batch)
                engine.cycle()
            projection = engine.projection
            seen: list[Any] = []
            for customer in CUSTOMERS[:2]:
                figures = projection.figures(customer)
                assert figures is not None
                document = figures.as_dict()
                del document["through"]  # the sequences differ with the order sent
                access = engine.controls.access(customer)
                # the firing a reason names is numbered in the order crossings happened
                decision = (access.allowed, access.policy, access.remaining)
                seen.append((document, projection.remaining(customer), decision))
            seen.append(sorted((f.customer, f.policy, f.level) for f in engine.store.firings()))
            return seen
        finally:
            engine.stop()


@cache
def live_reference(databases: Databases) -> list[Any]:
    """One event per cycle (per store)."""
    return live_outcome(databases, [[event] for event in live_stream()])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_projection_under_any_batch_split_equals_one_event_per_cycle(
    databases: Databases, data: st.DataObject
) -> None:
    stream = data.draw(st.permutations(live_stream()))
    cuts = data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=len(stream) - 1))
    batches = [stream[low:high] for low, high in pairwise([0, *sorted(cuts), len(stream)])]
    assert live_outcome(databases, batches) == live_reference(databases)

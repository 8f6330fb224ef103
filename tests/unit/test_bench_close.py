"""The close benchmark's workload and figures, and the spread (multi-process) scan: a
close rated across processes stores byte-identical invoices to the one-process scan, on
either store."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from meterline.bench.close import (
    APPLY_AT_US,
    CLOSE_AT_US,
    MONTH_END_US,
    MONTH_START_US,
    close_events,
    close_pricing,
    run_close_benchmark,
)
from meterline.billing import scan
from meterline.billing.service import Billing
from meterline.config.schema import parse_configuration
from meterline.config.source import read_yaml
from meterline.core.events import decode_exact
from meterline.core.model import segments
from meterline.core.rating import Rater
from meterline.ledger.billing_records import BillingStore
from meterline.ledger.event_ledger import open_ledger
from tests.conftest import Location

NewDb = Callable[..., Location]

OCTOBER_US = MONTH_START_US
DECEMBER_US = MONTH_END_US + 30 * 86_400_000_000


def test_events_are_deterministic_unique_and_in_october() -> None:
    first = [event for batch in close_events(2_500, 7, seed=3, batch=1_000) for event in batch]
    again = [event for batch in close_events(2_500, 7, seed=3, batch=700) for event in batch]
    assert first == again
    assert len({event["id"] for event in first}) == 2_500
    assert {event["customer"] for event in first} == {f"customer-{i:05d}" for i in range(7)}
    assert {event["type"] for event in first} == {
        "llm.completion",
        "embedding.create",
        "agent.tool_call",
    }
    assert all(event["timestamp"].startswith("2026-10-") for event in first)


def test_pricing_parses_with_one_contract_per_customer() -> None:
    data, positions = read_yaml(close_pricing(30))
    configuration = parse_configuration(data, positions)
    assert [c.customer for c in configuration.contracts] == [f"customer-{i:05d}" for i in range(30)]


def test_run_close_benchmark_reports_the_figures(tmp_path: Path) -> None:
    """SQLite only: ``run_close_benchmark`` (``meterline bench close``) keeps its ledger as
    a file in ``directory``, named for the workload, and finalizes into a fresh billing file
    beside it per run; it takes no database URL. The close it times runs on both stores
    below (``_two_closes``)."""
    result = run_close_benchmark(3_000, 12, directory=tmp_path)
    figures = result.as_dict()
    assert {"events", "customers", "seconds", "events_per_s"} <= set(figures)
    assert (figures["events"], figures["customers"], result.invoices) == (3_000, 12, 12)
    assert result.seconds > 0 and result.events_per_s > 0
    assert result.ingest_seconds is not None and not result.ledger_reused
    again = run_close_benchmark(3_000, 12, directory=tmp_path)
    assert again.ledger_reused and again.ingest_seconds is None
    assert again.invoices == 12


# -- spread scan: identical to one process --------------------------------------------------


def _late_and_november() -> list[dict[str, object]]:
    """Late October events for some customers, and November usage for all."""
    return [
        {
            "id": f"late-{number}",
            "customer": f"customer-{number % 9:05d}",
            "type": "llm.completion",
            "timestamp": f"2026-{11 - (number % 3 == 0)}-{1 + number % 20:02d}T12:00:00Z",
            "properties": {"model": "gpt-4o", "input_tokens": 100 + number, "output_tokens": 7},
        }
        for number in range(300)
    ]


def _two_closes(path: Location) -> list[bytes]:
    """Close October over 4,000 events for 9 customers; add late October and November
    events; close November (adjustments for the late events): every invoice's bytes."""
    now = {"us": CLOSE_AT_US}
    with open_ledger(path, clock=lambda: now["us"]) as ledger:
        for batch in close_events(4_000, 9, seed=11):
            assert ledger.ingest(batch).accepted == len(batch)
        store = BillingStore(path)
        try:
            Billing(ledger, store, clock=lambda: APPLY_AT_US).apply(close_pricing(9))
            billing = Billing(ledger, store, clock=lambda: now["us"])
            october = billing.close(MONTH_END_US)
            assert ledger.ingest(_late_and_november()).accepted == 300
            now["us"] = DECEMBER_US
            november = billing.close(DECEMBER_US)
        finally:
            store.close()
    assert (len(october), len(november)) == (9, 9)
    return [invoice.document for invoice in [*october, *november]]


@pytest.fixture
def spread(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every scan of several customers spread over 2 processes; count the helpers."""
    monkeypatch.setenv(scan.SCAN_WORKERS_ENV, "2")
    monkeypatch.setattr(scan, "PARALLEL_SCAN_MIN_EVENTS", 0)
    started: list[int] = []
    original = scan._Helper.__init__

    def counting(self: scan._Helper, path: str, share: dict[str, list[scan.RatingJob]]) -> None:
        started.append(len(share))
        original(self, path, share)

    monkeypatch.setattr(scan._Helper, "__init__", counting)
    return started


def test_a_spread_close_stores_byte_identical_invoices(
    new_db: NewDb, monkeypatch: pytest.MonkeyPatch, spread: list[int]
) -> None:
    spread_invoices = _two_closes(new_db("spread"))
    assert spread, "the spread path was not taken"
    monkeypatch.setenv(scan.SCAN_WORKERS_ENV, "1")
    started = len(spread)
    single_invoices = _two_closes(new_db("single"))
    assert len(spread) == started
    assert spread_invoices == single_invoices
    november = [decode_exact(document) for document in spread_invoices[9:]]
    assert any(line["kind"] == "adjustment" for doc in november for line in doc["lines"])


@pytest.mark.parametrize("executable", ["/bin/false", "/nonexistent/python"])
def test_a_failed_helper_leaves_its_share_to_this_process(
    new_db: NewDb, monkeypatch: pytest.MonkeyPatch, spread: list[int], executable: str
) -> None:
    monkeypatch.setenv(scan.SCAN_WORKERS_ENV, "1")
    single_invoices = _two_closes(new_db("single"))
    monkeypatch.setenv(scan.SCAN_WORKERS_ENV, "2")
    monkeypatch.setattr(sys, "executable", executable)
    assert _two_closes(new_db("failed")) == single_invoices
    assert spread


def test_scan_workers_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(scan.SCAN_WORKERS_ENV, "3")
    assert scan.scan_workers() == 3
    monkeypatch.setenv(scan.SCAN_WORKERS_ENV, "0")
    assert scan.scan_workers() == 1
    monkeypatch.delenv(scan.SCAN_WORKERS_ENV)
    assert 1 <= scan.scan_workers() <= scan.SCAN_WORKERS_MAX


def test_rater_state_survives_pickling() -> None:
    data, positions = read_yaml(close_pricing(4))
    configuration = parse_configuration(data, positions)
    customer = "customer-00003"  # upgraded mid-month: two segments
    contract = configuration.contract(customer)
    assert contract is not None
    spans = segments(configuration, contract, OCTOBER_US, MONTH_END_US)
    assert len(spans) == 2
    fed = Rater(configuration, spans)
    events = [e for batch in close_events(2_000, 1) for e in batch]
    for sequence, event in enumerate(events, start=1):
        fed.add(
            sequence,
            OCTOBER_US + sequence * 1_000_000_000,
            event["type"],
            event["properties"],
            sequence.to_bytes(32, "big"),
        )
    copy = Rater(configuration, spans)
    copy.import_state(pickle.loads(pickle.dumps(fed.export_state())))
    assert copy.lines("USD", configuration) == fed.lines("USD", configuration)
    assert copy.unbilled_events == fed.unbilled_events
    with pytest.raises(ValueError):
        copy.import_state(fed.export_state())


SHARED = """\
meters:
  - {key: input, event_type: llm, aggregation: sum, property: input, group_by: [model]}
  - {key: output, event_type: llm, aggregation: sum, property: output, group_by: [model]}
  - {key: calls, event_type: llm, aggregation: count, group_by: [model]}
  - {key: big, event_type: llm, aggregation: max, property: input, group_by: [model],
     filters: [{property: model, equals: a}]}
  - {key: fee, event_type: llm, aggregation: sum, property: output}
plans:
  - key: p
    versions:
      - version: 1
        effective_from: 2026-01-01
        currency: USD
        prices:
          - {meter: input, model: per_unit, unit_amount: "0.1"}
          - {meter: output, model: per_unit, unit_amount: "0.2"}
          - {meter: calls, model: per_unit, unit_amount: 1}
          - {meter: big, model: per_unit, unit_amount: 1}
          - {meter: fee, model: percentage, rate: "0.01", property: amount}
contracts:
  - {customer: c, plan: p, start: 2026-10-01, amendments: [{effective: 2026-10-10, plan: p}]}
"""


@pytest.mark.parametrize("seed", range(5))
def test_shared_merkle_trees_give_every_line_the_root_of_its_own_events(seed: int) -> None:
    """Meters on one event type share a line's Merkle tree while their lines meet the same
    events; missing or non-numeric values (which skip one meter, not the others) split
    them. Every root must still be the RFC 6962 root over exactly that line's events."""
    import random

    from meterline.core.lineage import merkle_root

    data, positions = read_yaml(SHARED)
    configuration = parse_configuration(data, positions)
    contract = configuration.contract("c")
    assert contract is not None
    spans = segments(configuration, contract, OCTOBER_US, MONTH_END_US)
    draw = random.Random(seed)
    values: list[object] = [1, 2, 30, "4.5", "x", None]
    events = []
    for sequence in range(1, 3_000):
        properties: dict[str, object] = {"model": draw.choice("abc")}
        for name in ("input", "output", "amount"):
            value = draw.choice(values) if draw.random() < 0.1 else draw.randrange(100)
            if value is not None:
                properties[name] = value
        timestamp = OCTOBER_US + sequence * 600_000_000  # crosses the amendment
        events.append((sequence, timestamp, "llm", properties, sequence.to_bytes(32, "big")))
    kept, plain = Rater(configuration, spans, keep_events=True), Rater(configuration, spans)
    for event in events:
        kept.add(*event)
        plain.add(*event)
    lines = kept.lines("USD", configuration)
    assert lines == plain.lines("USD", configuration)
    assert kept.problems == plain.problems and kept.problems
    assert len(lines) > 10
    roots = set()
    for line in lines:
        group = tuple(value for _, value in line.group)
        members = kept.members(line.segment, line.meter, group)
        assert line.events == len(members)
        assert line.merkle_root == merkle_root([event_hash for _, event_hash in members])
        roots.add(line.merkle_root)
    assert len(roots) < len(lines)  # some lines did share their events

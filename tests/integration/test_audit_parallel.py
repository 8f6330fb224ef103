"""The chains walked in parallel worker processes, in ranges of batches
(``meterline.ledger.parallel_verify``), report exactly what the single walk reports: the
same first bad item, record count and heads, on a ledger of many batches altered at and
between the ranges' seams, and on every case of the tamper catalogue (``verify`` and
``audit``, library reports compared whole). Both stores; real files and schemas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from meterline.billing.service import audit_ledger, open_billing
from meterline.core.chain import ChainReport
from meterline.ledger import parallel_verify
from meterline.ledger.event_ledger import Ledger, open_store
from meterline.ledger.integrity import verify_ledger
from meterline.ledger.location import is_postgres
from meterline.ledger.parallel_verify import verify_chains_parallel
from tests.conftest import FIXED_NOW_US, Location
from tests.integration.test_tamper import CASES, Case, blob, build
from tests.stores import rows, tamper

NewDb = Callable[..., Location]

BATCH_EVENTS = 5
EVENTS = 120
RANGE_SIZES = (1, 7, 12, 1_000)
"""Events per range: a batch each, ranges across batch edges, a few batches, one range."""


def _ledger(db: Location) -> Location:
    """EVENTS events of three customers in appends of BATCH_EVENTS: many batches."""
    with open_billing(db, clock=lambda: FIXED_NOW_US) as billing:
        for first in range(0, EVENTS, BATCH_EVENTS):
            batch = [
                {
                    "id": f"e-{number}",
                    "customer": ("acme", "globex", "initech")[number % 3],
                    "type": "llm.completion",
                    "timestamp": f"2026-10-{1 + number % 28:02d}T10:00:00Z",
                    "properties": {"input_tokens": number},
                }
                for number in range(first, first + BATCH_EVENTS)
            ]
            assert billing.ledger.ingest(batch).accepted == BATCH_EVENTS
    return db


def _compared(report: ChainReport) -> tuple[Any, ...]:
    return (
        report.records,
        report.heads,
        report.partitions,
        report.bad_sequence,
        report.problem,
        report.bad_partition,
        report.check,
        report.bad_batch,
    )


def _both_walks(db: Location) -> list[tuple[Any, ...]]:
    """The single walk's report, then each parallel walk's (2 workers, every range size)."""
    store = open_store(db, create=False)
    try:
        found = [_compared(Ledger(store).verify())]
        for size in RANGE_SIZES:
            parallel = verify_chains_parallel(store, workers=2, min_events=0, range_events=size)
            found.append(_compared(parallel))
    finally:
        store.close()
    return found


def _event_row(db: Location, number: int) -> str:
    found = rows(
        db, "SELECT partition_number, sequence FROM events WHERE event_id = ?", (f"e-{number}",)
    )
    return f"partition_number = {found[0][0]} AND sequence = {found[0][1]}"


def _edit_body(db: Location) -> None:
    condition = _event_row(db, 61)
    tamper(db, f"UPDATE events SET body = {blob(db, b'{}')} WHERE {condition}")


def _delete_at_seam(db: Location) -> None:
    # e-65 opens an append: the first event of a batch, at a range seam for some sizes
    tamper(db, f"DELETE FROM events WHERE {_event_row(db, 65)}")


def _delete_last(db: Location) -> None:
    tamper(db, f"DELETE FROM events WHERE {_event_row(db, EVENTS - 1)}")


def _edit_chain_hash(db: Location) -> None:
    tamper(
        db,
        f"UPDATE batches SET chain_hash = {blob(db, bytes(32))}"
        " WHERE batch_number = (SELECT MIN(batch_number) + 6 FROM batches)",
    )


def _edit_batch_end(db: Location) -> None:
    tamper(db, "UPDATE batches SET last_sequence = last_sequence + 1 WHERE batch_number = 4")


def _stray_partition(db: Location) -> None:
    tamper(db, f"UPDATE events SET partition_number = 9 WHERE {_event_row(db, 30)}")


ALTERATIONS: list[tuple[str, Callable[[Location], None] | None, tuple[str, ...]]] = [
    ("intact", None, ("sqlite", "postgresql")),
    ("body-edited-mid-ledger", _edit_body, ("sqlite", "postgresql")),
    ("event-deleted-at-a-seam", _delete_at_seam, ("sqlite", "postgresql")),
    ("last-event-deleted", _delete_last, ("sqlite", "postgresql")),
    ("batch-chain-hash-edited", _edit_chain_hash, ("sqlite", "postgresql")),
    ("batch-end-moved", _edit_batch_end, ("sqlite", "postgresql")),
    ("record-of-a-partition-the-ledger-lacks", _stray_partition, ("sqlite",)),
]


@pytest.mark.parametrize(
    ("store_kind", "alteration"),
    [
        pytest.param(store, alteration, id=f"{name}-{store}")
        for name, alteration, stores in ALTERATIONS
        for store in stores
    ],
    indirect=["store_kind"],
)
def test_the_parallel_walk_reports_what_the_single_walk_does(
    store_kind: str, alteration: Callable[[Location], None] | None, new_db: NewDb
) -> None:
    db = _ledger(new_db("ranges"))
    if alteration is not None:
        alteration(db)
    single, *parallel = _both_walks(db)
    assert (single[4] is None) == (alteration is None), single
    for size, report in zip(RANGE_SIZES, parallel, strict=True):
        assert report == single, (size, report, single)


@pytest.mark.parametrize(
    ("store_kind", "case"),
    [
        pytest.param(store, case, id=f"{case.name}-{store}")
        for case in CASES
        for store in case.stores
    ],
    indirect=["store_kind"],
)
def test_every_tamper_reads_the_same_walked_in_parallel(
    store_kind: str, case: Case, new_db: NewDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``verify`` and ``audit`` reports, whole, with one worker, with two walking
    ranges of one event, and with those ranges walked in this process (one worker)."""
    db = build(new_db("tamper"))
    case.tamper(db)
    monkeypatch.setenv(parallel_verify.AUDIT_WORKERS_ENV, "1")
    single = (verify_ledger(db).as_dict(), audit_ledger(db).as_dict())
    monkeypatch.setenv(parallel_verify.AUDIT_WORKERS_ENV, "2")
    monkeypatch.setattr(parallel_verify, "PARALLEL_VERIFY_MIN_EVENTS", 0)
    monkeypatch.setattr(parallel_verify, "CHAIN_RANGE_EVENTS", 1)
    assert (verify_ledger(db).as_dict(), audit_ledger(db).as_dict()) == single
    monkeypatch.setenv(parallel_verify.AUDIT_WORKERS_ENV, "1")
    assert (verify_ledger(db).as_dict(), audit_ledger(db).as_dict()) == single
    if is_postgres(db) or case.exit_code != 3:
        assert single[1]["findings"], single


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"], indirect=True)
def test_events_appended_during_the_walk_are_no_finding(
    store_kind: str, new_db: NewDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends go on while the workers walk (a server's audit): each partition's last
    range reads its batches, records and stored head in one snapshot, so the walk never
    sees an event without its batch nor a head behind its walk."""
    db = _ledger(new_db("live"))
    planned = parallel_verify.plan_ranges
    appended: list[int] = []

    def plan_then_append(*args: Any, **kwargs: Any) -> Any:
        for chain_range in planned(*args, **kwargs):
            yield chain_range
            if not appended:
                appended.append(BATCH_EVENTS)
                with open_billing(db, clock=lambda: FIXED_NOW_US) as billing:
                    late = [
                        {
                            "id": f"late-{number}",
                            "customer": ("acme", "globex", "initech")[number % 3],
                            "type": "llm.completion",
                            "timestamp": "2026-10-20T10:00:00Z",
                            "properties": {"input_tokens": number},
                        }
                        for number in range(BATCH_EVENTS)
                    ]
                    assert billing.ledger.ingest(late).accepted == BATCH_EVENTS

    monkeypatch.setattr(parallel_verify, "plan_ranges", plan_then_append)
    store = open_store(db, create=False)
    try:
        report = verify_chains_parallel(store, workers=2, min_events=0, range_events=7)
    finally:
        store.close()
    assert report.intact, report.finding
    assert report.records >= EVENTS

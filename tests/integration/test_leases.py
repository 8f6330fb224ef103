"""Writer leases fence the ledger's appends (``ledger.heads``), on both stores.

A stale writer (its lease expired and was taken over) has its commit refused with
LeaseLost and nothing of its batch lands; the new holder's commit does. A writer without
a lease meets PartitionLeased on a partition someone holds. The same SQL serves SQLite
(one partition) and PostgreSQL (here four).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from meterline.clock import system_clock_us
from meterline.core.events import PreparedEvent, prepare_event
from meterline.core.partitions import partition_of
from meterline.ledger.event_ledger import Ledger, open_store
from meterline.ledger.heads import LeaseLost, PartitionLeased
from meterline.ledger.store import LedgerStore
from meterline.stream.partition_leases import fair_share
from tests.conftest import FIXED_NOW_US, POSTGRES_URL, Databases, event

SHORT_LEASE_S = 0.5


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def location(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """A fresh ledger location and its partition count."""
    folder = tmp_path_factory.mktemp("leases")
    if request.param == "sqlite":
        yield str(Path(folder) / "ledger.db"), 1
        return
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is unreachable ({error})", pytrace=False)
    made = Databases("postgresql")
    try:
        yield str(made.new(folder, "leases")), 4
    finally:
        made.drop_all()


def batch_of(prefix: str, partitions: int, count: int = 5) -> list[tuple[int, PreparedEvent]]:
    """``count`` events of customers of partition 0."""
    customers = [c for c in (f"c-{n}" for n in range(200)) if partition_of(c, partitions) == 0]
    items = []
    for index in range(count):
        prepared = prepare_event(
            event(index, customers[index % 3], id=f"{prefix}-{index}"), FIXED_NOW_US
        )
        assert isinstance(prepared, PreparedEvent), prepared
        items.append((index, prepared))
    return items


def stored_ids(store: LedgerStore) -> set[str]:
    return {record.id for record in store.records()}


def open_pair(location: tuple[str, int]) -> tuple[LedgerStore, LedgerStore]:
    db, partitions = location
    first = open_store(db, partitions=partitions) if partitions > 1 else open_store(db)
    return first, open_store(db)


def test_a_stale_writer_is_fenced_and_the_new_holder_commits(location: tuple[str, int]) -> None:
    a_store, b_store = open_pair(location)
    try:
        a_lease = a_store.acquire_lease(0, "writer-a", system_clock_us(), SHORT_LEASE_S)  # type: ignore[attr-defined]
        assert a_lease is not None
        # B cannot take it while A's lease runs
        assert b_store.acquire_lease(0, "writer-b", system_clock_us(), SHORT_LEASE_S) is None  # type: ignore[attr-defined]
        a_first = batch_of("a1", location[1])
        outcomes = a_store.append(a_first, system_clock_us(), leases={0: a_lease})
        assert {o.status for o in outcomes} == {"accepted"}

        time.sleep(SHORT_LEASE_S + 0.2)  # A stalls past its expiry; B takes over
        b_lease = b_store.acquire_lease(0, "writer-b", system_clock_us(), 10.0)  # type: ignore[attr-defined]
        assert b_lease is not None and b_lease.epoch > a_lease.epoch

        # A's late commit, from its own thread, is refused however late it arrives
        refused: list[BaseException] = []
        stale = batch_of("a2", location[1])

        def late_commit() -> None:
            try:
                a_store.append(stale, system_clock_us(), leases={0: a_lease})
            except BaseException as error:
                refused.append(error)

        thread = threading.Thread(target=late_commit)
        thread.start()
        thread.join(30)
        assert len(refused) == 1 and isinstance(refused[0], LeaseLost), refused
        assert a_store.renew_lease(a_lease, system_clock_us(), 10.0) is None  # type: ignore[attr-defined]
        ids = stored_ids(b_store)
        assert not {item.id for _, item in stale} & ids  # nothing of A's stale batch landed

        b_batch = batch_of("b1", location[1])
        outcomes = b_store.append(b_batch, system_clock_us(), leases={0: b_lease})
        assert {o.status for o in outcomes} == {"accepted"}
        assert {item.id for _, item in b_batch} <= stored_ids(b_store)
        (row,) = [r for r in b_store.head_rows() if r.partition == 0]  # type: ignore[attr-defined]
        assert (row.lease_owner, row.lease_epoch) == ("writer-b", b_lease.epoch)

        # (b) an unleased writer meets B's lease
        with pytest.raises(PartitionLeased):
            a_store.append(batch_of("u1", location[1]), system_clock_us())
        b_store.release_lease(b_lease)  # type: ignore[attr-defined]
        outcomes = a_store.append(batch_of("u2", location[1]), system_clock_us())
        assert {o.status for o in outcomes} == {"accepted"}  # free again: unleased is fine
        assert Ledger(b_store).verify().intact
    finally:
        a_store.close()
        b_store.close()


def test_fair_share_splits_evenly_and_sums_to_the_partitions() -> None:
    for partitions in range(1, 9):
        for workers in range(1, 6):
            owners = {f"w{n}" for n in range(workers)}
            shares = [fair_share(partitions, owners, owner) for owner in sorted(owners)]
            assert sum(shares) == partitions
            assert max(shares) - min(shares) <= 1
            assert max(shares) == -(-partitions // workers)


def batch_in(partition: int, prefix: str, partitions: int) -> list[tuple[int, PreparedEvent]]:
    """Two events of a customer of ``partition``."""
    customer = next(
        c for c in (f"c-{n}" for n in range(500)) if partition_of(c, partitions) == partition
    )
    items = []
    for index in range(2):
        prepared = prepare_event(event(index, customer, id=f"{prefix}-{index}"), FIXED_NOW_US)
        assert isinstance(prepared, PreparedEvent), prepared
        items.append((index, prepared))
    return items


def test_one_process_commits_its_partitions_in_parallel(tmp_path: Path) -> None:
    """A fenced append of one partition writes on that partition's own connection: while
    partition 0's append waits on its head row (held by an outside transaction), the same
    store commits partition 1."""
    partitions = 4
    made = Databases("postgresql")
    db = str(made.new(tmp_path, "parallel"))
    store = open_store(db, partitions=partitions)
    try:
        now = system_clock_us()
        leases = {p: store.acquire_lease(p, f"writer-{p}", now, 30) for p in (0, 1)}  # type: ignore[attr-defined]
        assert all(leases.values())
        outside = psycopg.connect(db)
        try:
            outside.execute("SELECT * FROM partition_heads WHERE partition_number = 0 FOR UPDATE")
            blocked: list[object] = []
            waiting = threading.Thread(
                target=lambda: blocked.append(
                    store.append(batch_in(0, "parallel-p0", partitions), now, leases={0: leases[0]})
                )
            )
            waiting.start()
            time.sleep(0.2)  # let it reach the head row lock
            assert not blocked  # partition 0 waits on its head row ...
            done: list[object] = []
            beside = threading.Thread(
                target=lambda: done.append(
                    store.append(batch_in(1, "parallel-p1", partitions), now, leases={1: leases[1]})
                )
            )
            beside.start()
            beside.join(timeout=20)
            assert done, "partition 1 waited for partition 0's head row"
            assert [outcome.status for outcome in done[0]] == ["accepted", "accepted"]  # type: ignore[attr-defined]
            assert not blocked  # ... while partition 1 committed beside it
        finally:
            outside.rollback()
            outside.close()
        waiting.join(timeout=30)
        assert not waiting.is_alive()
        assert not isinstance(blocked[0], Exception), blocked[0]
        assert [outcome.status for outcome in blocked[0]] == ["accepted", "accepted"]  # type: ignore[attr-defined]
        assert {"parallel-p0-0", "parallel-p1-1"} <= stored_ids(store)
    finally:
        store.close()
        made.drop_all()

"""Write locks on PostgreSQL: writes for customers of different partitions proceed while
another is open; writes that must serialize (one customer's control records, one
webhook endpoint's queue, one gap-free number) still wait, and end as a serial order
would. Real PostgreSQL, real threads; nothing asserts a duration: a writer is shown
waiting by its backend's ``wait_event`` in ``pg_stat_activity``, and shown not waiting
by committing while the other transaction is still open (events with generous
timeouts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from meterline.core.partitions import partition_of
from meterline.ledger.billing_records import GRANT_NUMBERS, INVOICE_NUMBERS, BillingStore
from meterline.ledger.control_records import OVERRIDE_NUMBERS, ControlStore
from meterline.ledger.database import SCHEMA_WRITE, PostgresConnection, WriteLock, write_transaction
from meterline.ledger.webhook_records import Endpoint, WebhookStore

TIMEOUT_S = 60.0
"""Longest a test waits for another thread to reach a point (generous: a busy machine)."""
POLL_S = 0.01


@pytest.fixture(scope="module")
def postgres(
    postgres_schemas: Callable[[Path, str], str],
) -> Iterator[Callable[[Path, str], str]]:
    yield postgres_schemas


def customers_of_two_partitions() -> tuple[str, str]:
    """Two customers that a two-partition ledger keeps in different partitions."""
    names = [f"customer-{number}" for number in range(100)]
    first = next(name for name in names if partition_of(name, 2) == 0)
    second = next(name for name in names if partition_of(name, 2) == 1)
    return first, second


class Background:
    """``work`` in a thread: its result, or the exception it raised."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self.result = work()
        except BaseException as error:  # handed to the test by ``value``
            self.error = error
        finally:
            self.done.set()

    def value(self) -> Any:
        assert self.done.wait(TIMEOUT_S), "the background write never finished"
        self._thread.join(TIMEOUT_S)
        if self.error is not None:
            raise self.error
        return self.result


class HeldTransaction:
    """A write transaction held open in a thread until ``release``: ``started`` is set
    once ``body`` ran inside it."""

    def __init__(self, enter: Callable[[], Any], body: Callable[[], Any]) -> None:
        self.started = threading.Event()
        self._release = threading.Event()

        def hold() -> None:
            with enter():
                body()
                self.started.set()
                assert self._release.wait(TIMEOUT_S), "never released"

        self.background = Background(hold)
        assert self.started.wait(TIMEOUT_S) or self.background.done.is_set()
        if not self.started.is_set():
            self.background.value()  # raises what stopped it

    def release(self) -> None:
        self._release.set()
        self.background.value()


def backend_pid(store: Any) -> int:
    connection: PostgresConnection = store._connection
    return int(connection.raw.info.backend_pid)


def wait_for_lock_wait(url: str, pid: int) -> str:
    """Poll until backend ``pid`` waits on a heavyweight lock; its ``wait_event``."""
    with psycopg.connect(url, autocommit=True) as observer:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            row = observer.execute(
                "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s",
                (pid,),
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return str(row[1])
            time.sleep(POLL_S)
    raise AssertionError(f"backend {pid} never waited on a lock")


def advisory_locks(url: str, pid: int) -> set[tuple[int, str]]:
    """The advisory locks backend ``pid`` holds: (64-bit key, mode)."""
    with psycopg.connect(url, autocommit=True) as observer:
        rows = observer.execute(
            "SELECT classid::bigint, objid::bigint, mode FROM pg_locks"
            " WHERE locktype = 'advisory' AND pid = %s AND granted",
            (pid,),
        ).fetchall()
    keys = set()
    for high, low, mode in rows:
        key = (high << 32) | low
        keys.add((key - (1 << 64) if key >= 1 << 63 else key, str(mode)))
    return keys


def firing(store: ControlStore, customer: str, ordinal: int = 1) -> Any:
    return store.add_firing(
        customer, "low-balance", "balance_exhausted", "block", ordinal, 1, 1, {}, ("block",)
    )


# -- the central API ----------------------------------------------------------------------


def test_a_write_transaction_takes_exactly_the_locks_it_names(
    postgres: Callable[[Path, str], str], tmp_path: Path
) -> None:
    url = postgres(tmp_path, "locks-api")
    connection = PostgresConnection(url)
    pid = int(connection.raw.info.backend_pid)
    try:
        with write_transaction(connection):
            assert advisory_locks(url, pid) == set()
        a, b = WriteLock("purpose", "a"), WriteLock("purpose", "b")
        with write_transaction(connection, b, a, WriteLock("purpose", "a")):
            held = advisory_locks(url, pid)
        assert held == {
            (connection.lock_key(a), "ExclusiveLock"),
            (connection.lock_key(b), "ExclusiveLock"),
        }
        assert connection.lock_key(a) != connection.lock_key(b)
        assert advisory_locks(url, pid) == set()  # transaction locks end with it
    finally:
        connection.close()


def test_control_writes_take_their_customers_lock_and_never_the_schema_lock(
    postgres: Callable[[Path, str], str], tmp_path: Path
) -> None:
    url = postgres(tmp_path, "locks-controls")
    store = ControlStore(url)
    first, second = customers_of_two_partitions()
    connection: PostgresConnection = store._connection
    try:
        with store.batch([second, first]):
            firing(store, first)
            held = advisory_locks(url, backend_pid(store))
        keys = {key for key, _ in held}
        assert keys == {
            connection.lock_key(WriteLock("control-customer", first)),
            connection.lock_key(WriteLock("control-customer", second)),
        }
        assert connection.lock_key(SCHEMA_WRITE) not in keys
    finally:
        store.close()


# -- control records ----------------------------------------------------------------------


def test_control_records_of_two_partitions_commit_while_the_other_is_open(
    postgres: Callable[[Path, str], str], tmp_path: Path
) -> None:
    url = postgres(tmp_path, "locks-two-partitions")
    first, second = customers_of_two_partitions()
    engine_a, engine_b, reader = ControlStore(url), ControlStore(url), ControlStore(url)
    try:
        held = HeldTransaction(lambda: engine_a.batch([first]), lambda: firing(engine_a, first))
        # A's batch is open; B's records of another partition's customer commit now
        other = Background(
            lambda: (
                firing(engine_b, second),
                engine_b.add_override(
                    second, "unblock", "low-balance", None, "test", "finance", 2, {}
                ),
            )
        )
        recorded, override = other.value()
        assert recorded is not None and override.customer == second
        assert not held.background.done.is_set()  # A is still open
        assert [f.customer for f in reader.firings()] == [second]
        held.release()
        assert sorted(f.customer for f in reader.firings()) == sorted([first, second])
    finally:
        for store in (engine_a, engine_b, reader):
            store.close()


def test_one_customers_records_wait_for_each_other_and_end_as_a_serial_order(
    postgres: Callable[[Path, str], str], tmp_path: Path
) -> None:
    url = postgres(tmp_path, "locks-one-customer")
    customer, _ = customers_of_two_partitions()
    engine_a, engine_b = ControlStore(url), ControlStore(url)
    try:
        recorded_by_a: list[Any] = []
        held = HeldTransaction(
            lambda: engine_a.batch([customer]),
            lambda: recorded_by_a.append(firing(engine_a, customer)),
        )
        # B decides the same crossing: it waits for A's customer lock...
        same = Background(lambda: firing(engine_b, customer))
        assert wait_for_lock_wait(url, backend_pid(engine_b)) == "advisory"
        assert not same.done.is_set()
        held.release()
        # ...and then finds it recorded: one firing, A's, as if A ran first
        assert same.value() is None
        (stored,) = engine_b.firings(customer)
        assert stored.number == recorded_by_a[0].number
        # the next crossing of that customer, after A, is recorded as the second one
        assert firing(engine_b, customer, ordinal=2) is not None
        assert [f.ordinal for f in engine_a.firings(customer)] == [1, 2]
    finally:
        engine_a.close()
        engine_b.close()


# -- webhooks -----------------------------------------------------------------------------


def webhook_store(url: str) -> WebhookStore:
    store = WebhookStore(url)
    for endpoint_id, kind in (("we_first", "first.kind"), ("we_second", "second.kind")):
        if store.endpoint(endpoint_id) is None:
            store.add_endpoint(
                Endpoint(endpoint_id, "https://example.com/hook", (kind,), "", 1), "secret"
            )
    return store


def publish(store: WebhookStore, kind: str, event_id: str) -> list[str]:
    ids, _ = store.add_deliveries(kind, event_id, b"{}", 1, lambda: f"wd_{event_id}_{kind}")
    return ids


def test_a_publish_to_another_endpoint_does_not_wait_and_one_endpoints_queue_does(
    postgres: Callable[[Path, str], str], tmp_path: Path
) -> None:
    url = postgres(tmp_path, "locks-webhooks")
    publisher_a, publisher_b = webhook_store(url), webhook_store(url)
    holder = PostgresConnection(url)
    try:
        held = HeldTransaction(
            lambda: write_transaction(holder, WriteLock("webhook-endpoint", "we_first")),
            lambda: None,
        )
        # another endpoint's queue: commits while the first one's is held
        assert publish(publisher_b, "second.kind", "evt-1") == ["wd_evt-1_second.kind"]
        # the held endpoint's queue: waits, then commits after it
        queued = Background(lambda: publish(publisher_a, "first.kind", "evt-2"))
        assert wait_for_lock_wait(url, backend_pid(publisher_a)) == "advisory"
        held.release()
        assert queued.value() == ["wd_evt-2_first.kind"]
        assert publisher_b.delivery("wd_evt-2_first.kind") is not None
    finally:
        holder.close()
        publisher_a.close()
        publisher_b.close()


def test_a_claim_skips_the_delivery_another_claim_holds_and_waits_for_nothing(
    postgres: Callable[[Path, str], str], tmp_path: Path
) -> None:
    url = postgres(tmp_path, "locks-claims")
    store = webhook_store(url)
    holder = PostgresConnection(url)
    try:
        publish(store, "first.kind", "evt-1")
        publish(store, "second.kind", "evt-2")
        held = HeldTransaction(
            lambda: write_transaction(holder),
            lambda: holder.execute(
                "SELECT 1 FROM webhook_deliveries WHERE delivery_id = ? FOR UPDATE",
                ("wd_evt-1_first.kind",),
            ),
        )
        claimed = store.claim_due(now_us=10, lease_us=1_000, limit=10)
        assert [d.delivery_id for d in claimed] == ["wd_evt-2_second.kind"]
        held.release()
        # released, the first endpoint's head is claimed by the next pass, once
        claimed = store.claim_due(now_us=10, lease_us=1_000, limit=10)
        assert [d.delivery_id for d in claimed] == ["wd_evt-1_first.kind"]
        assert store.claim_due(now_us=10, lease_us=1_000, limit=10) == []
    finally:
        holder.close()
        store.close()


# -- billing numbers ----------------------------------------------------------------------


def test_gap_free_numbers_serialize_and_control_writes_do_not_wait_for_them(
    postgres: Callable[[Path, str], str], tmp_path: Path
) -> None:
    url = postgres(tmp_path, "locks-billing")
    first, second = customers_of_two_partitions()
    billing_a, billing_b, controls = BillingStore(url), BillingStore(url), ControlStore(url)
    holder = PostgresConnection(url)
    try:
        held = HeldTransaction(
            lambda: write_transaction(holder, INVOICE_NUMBERS, GRANT_NUMBERS), lambda: None
        )
        # control records (any customer) do not wait for billing's numbers
        assert firing(controls, first) is not None
        # two grants from two processes: the second waits for the number lock...
        grants = [
            Background(lambda: billing_a.add_grant(first, 1, lambda grant_id: b"{}")),
        ]
        assert wait_for_lock_wait(url, backend_pid(billing_a)) == "advisory"
        grants.append(Background(lambda: billing_b.add_grant(second, 2, lambda g: b"{}")))
        assert wait_for_lock_wait(url, backend_pid(billing_b)) == "advisory"
        held.release()
        made = sorted(grant.value()[0].grant_id for grant in grants)
        # ...and the numbers are gap-free, as one after the other would give
        assert made == ["G-000001", "G-000002"]
        assert sorted(g.customer for g in billing_a.grants()) == sorted([first, second])
    finally:
        holder.close()
        for store in (billing_a, billing_b, controls):
            store.close()


def test_overrides_commit_in_number_order_and_other_customers_firings_do_not_wait(
    postgres: Callable[[Path, str], str], tmp_path: Path
) -> None:
    url = postgres(tmp_path, "locks-overrides")
    first, second = customers_of_two_partitions()
    finance, engine = ControlStore(url), ControlStore(url)
    holder = PostgresConnection(url)
    try:
        # another override being numbered (for any customer): engines read overrides past
        # the last number they saw, so this one waits for it...
        held = HeldTransaction(lambda: write_transaction(holder, OVERRIDE_NUMBERS), lambda: None)
        override = Background(
            lambda: finance.add_override(second, "unblock", None, None, "why", "finance", 1, {})
        )
        assert wait_for_lock_wait(url, backend_pid(finance)) == "advisory"
        # ...while the engines' firings of other customers do not
        assert firing(engine, first) is not None
        held.release()
        assert override.value().customer == second
        assert [o.number for o in engine.overrides()] == [override.value().number]
    finally:
        holder.close()
        finance.close()
        engine.close()

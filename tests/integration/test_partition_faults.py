"""Partition writers killed mid-batch, and workers rebalancing by lease handover.

* ``test_killed_partition_writers_lose_and_double_nothing``: four partitions on
  PostgreSQL, one writer process per partition (this module run as a script) appending
  numbered batches with its fenced lease and printing ``ACK k`` only after ``append``
  returned. Each writer is SIGKILLed mid-batch over and over (at least 50 kills in all) and
  a new one (a new owner) started, which waits for the dead one's short lease to expire and
  re-sends the batch after the last acknowledged one. In the end every acknowledged event
  is in the ledger exactly once and ``verify`` is intact.
* ``test_auto_workers_hand_partitions_over``: ``meterline worker --partitions auto``
  processes under continuous publishing: 2 workers, a 3rd joins, one stops (SIGTERM);
  every acknowledged event lands exactly once and the partitions change owners. The
  partitions are split over ``STREAMS`` JetStream streams, so handover crosses streams.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest

PARTITIONS = 4
STREAMS = 2
WRITER_LEASE_S = 0.5
BATCH_EVENTS = 20
KILLS_MIN = 50


def customers_of(partition: int, partitions: int = PARTITIONS) -> list[str]:
    from meterline.core.partitions import partition_of

    names = (f"cust-{n}" for n in range(10_000))
    return [name for name in names if partition_of(name, partitions) == partition][:5]


def writer_batch(partition: int, number: int) -> list[dict[str, object]]:
    customers = customers_of(partition)
    return [
        {
            "id": f"p{partition}-b{number}-{index}",
            "customer": customers[index % len(customers)],
            "type": "llm.completion",
            "timestamp": "2026-11-01T10:00:00Z",
            "properties": {"batch": number, "input_tokens": index},
        }
        for index in range(BATCH_EVENTS)
    ]


def writer_main(db: str, partition: int, first: int) -> None:
    """Append partition ``partition``'s batches from ``first - 1`` on, under a lease."""
    from meterline.clock import system_clock_us
    from meterline.core.events import PreparedEvent, prepare_event
    from meterline.ledger.event_ledger import open_store
    from meterline.ledger.heads import LeaseLost

    store = open_store(db)
    owner = f"writer-{partition}-{os.getpid()}"
    lease = None
    while lease is None:
        lease = store.acquire_lease(partition, owner, system_clock_us(), WRITER_LEASE_S)  # type: ignore[attr-defined]
        if lease is None:
            time.sleep(0.05)
    print(f"LEASE {lease.epoch}", flush=True)
    number = max(first - 1, 0)
    while True:
        lease = store.renew_lease(lease, system_clock_us(), WRITER_LEASE_S)  # type: ignore[attr-defined]
        if lease is None:
            print("LOST", flush=True)
            return
        items = []
        for index, raw in enumerate(writer_batch(partition, number)):
            prepared = prepare_event(raw, system_clock_us())
            assert isinstance(prepared, PreparedEvent)
            items.append((index, prepared))
        try:
            outcomes = store.append(items, system_clock_us(), leases={partition: lease})
        except LeaseLost:
            print("LOST", flush=True)
            return
        bad = [o for o in outcomes if o.status not in ("accepted", "duplicate")]
        if bad:
            print(f"BAD {number} {bad}", flush=True)
            return
        print(f"ACK {number}", flush=True)
        number += 1


@pytest.fixture(scope="module")
def postgres(
    postgres_schemas: Callable[[Path, str], str],
) -> Iterator[Callable[[Path, str], str]]:
    yield postgres_schemas


class Writer:
    """One writer process and the lines it printed."""

    def __init__(self, db: str, partition: int, first: int) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, __file__, db, str(partition), str(first)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def acks(self) -> list[int]:
        return [int(line.split()[1]) for line in list(self.lines) if line.startswith("ACK ")]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.reader.join(10)


def run_partition(db: str, partition: int, kills: int, acked: set[int], errors: list[str]) -> None:
    rng = random.Random(partition)
    next_batch = 0
    for _ in range(kills):
        writer = Writer(db, partition, next_batch)
        deadline = time.monotonic() + 60
        while not writer.acks() and time.monotonic() < deadline:
            if writer.process.poll() is not None:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))  # then SIGKILL, most likely inside a commit
        writer.kill()
        errors.extend(line for line in writer.lines if line.startswith(("BAD", "LOST")))
        done = writer.acks()
        if not done:
            errors.append(f"partition {partition}: a writer acknowledged nothing")
            return
        acked.update(done)
        next_batch = max(done) + 1


@pytest.mark.slow
def test_killed_partition_writers_lose_and_double_nothing(
    postgres: Callable[[Path, str], str], tmp_path: Path
) -> None:
    from meterline.ledger.event_ledger import Ledger, open_store

    db = postgres(tmp_path, "faults")
    open_store(db, partitions=PARTITIONS).close()
    kills = -(-KILLS_MIN // PARTITIONS)
    acked: dict[int, set[int]] = {p: set() for p in range(PARTITIONS)}
    errors: list[str] = []
    started = time.monotonic()
    threads = [
        threading.Thread(target=run_partition, args=(db, p, kills, acked[p], errors))
        for p in range(PARTITIONS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(170)
    assert not any(thread.is_alive() for thread in threads), "a partition loop hung"
    assert not errors, errors
    print(f"{kills * PARTITIONS} SIGKILLs in {time.monotonic() - started:.1f} s")

    store = open_store(db)
    try:
        counts = Counter(record.id for record in store.records())
        assert max(counts.values()) == 1, [i for i, c in counts.items() if c > 1][:5]
        expected = {
            raw["id"]
            for p, numbers in acked.items()
            for number in numbers
            for raw in writer_batch(p, number)
        }
        assert expected and not expected - set(counts)
        report = Ledger(store).verify()
        assert report.intact, report
        rows = store.head_rows()  # type: ignore[attr-defined]
        assert all(row.lease_epoch >= kills for row in rows)  # every restart took the lease over
    finally:
        store.close()


# -- rebalancing ---------------------------------------------------------------------------------


def start_worker(db: str, name: str, namespace: str, folder: Path) -> subprocess.Popen[bytes]:
    log = (folder / f"{name}.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            *("-m", "meterline", "worker", "--db", db, "--partitions", "auto"),
            *("--name", name, "--namespace", namespace, "--streams", str(STREAMS)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


class Producer:
    """Publishes numbered batches until halted; remembers the acknowledged events."""

    def __init__(self, settings: object) -> None:
        self.settings = settings
        self.acknowledged: list[str] = []
        self.halted = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        from meterline.clock import system_clock_us
        from meterline.core.events import PreparedEvent, prepare_event
        from meterline.stream.publisher import StreamPublisher

        customers = [c for p in range(PARTITIONS) for c in customers_of(p)]
        try:
            publisher = await StreamPublisher.connect(self.settings)  # type: ignore[arg-type]
            try:
                number = 0
                while not self.halted.is_set():
                    events = []
                    for index in range(40):
                        raw = {
                            "id": f"r{number}-{index}",
                            "customer": customers[index % len(customers)],
                            "type": "llm.completion",
                            "timestamp": "2026-11-01T10:00:00Z",
                            "properties": {"input_tokens": index},
                        }
                        prepared = prepare_event(raw, system_clock_us())
                        assert isinstance(prepared, PreparedEvent)
                        events.append(prepared)
                    await publisher.publish(events, system_clock_us())
                    self.acknowledged.extend(e.id for e in events)
                    number += 1
                    await asyncio.sleep(0.05)
            finally:
                await publisher.close()
        except BaseException as error:
            self.error = error


def eventually(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"timed out after {timeout_s} s waiting until {what}")
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.mark.slow
def test_auto_workers_hand_partitions_over(
    postgres: Callable[[Path, str], str], tmp_path: Path
) -> None:
    from meterline.ledger.event_ledger import Ledger, open_store
    from meterline.stream.naming import stream_settings

    db = postgres(tmp_path, "rebalance")
    open_store(db, partitions=PARTITIONS).close()
    namespace = f"lease_{uuid4().hex[:10]}"
    settings = stream_settings("nats://127.0.0.1:4222", PARTITIONS, namespace, streams=STREAMS)
    store = open_store(db)
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def owners() -> dict[int, str | None]:
        now_us = time.time_ns() // 1000
        return {
            row.partition: row.lease_owner if row.lease_expires_us > now_us else None
            for row in store.head_rows()  # type: ignore[attr-defined]
        }

    def held_by(name: str) -> list[int]:
        return [p for p, owner in owners().items() if owner == name]

    history: list[dict[int, str | None]] = []
    producer = Producer(settings)
    try:
        for name in ("w-a", "w-b"):
            processes[name] = start_worker(db, name, namespace, tmp_path)
        producer.thread.start()
        took = eventually(
            lambda: len(held_by("w-a")) == 2 and len(held_by("w-b")) == 2,
            "two workers share the four partitions",
        )
        history.append(owners())
        print(f"2 workers hold 2 partitions each after {took:.1f} s: {history[-1]}")

        processes["w-c"] = start_worker(db, "w-c", namespace, tmp_path)
        took = eventually(lambda: len(held_by("w-c")) >= 1, "the third worker gets a partition")
        eventually(lambda: all(owners().values()), "every partition is held again")
        history.append(owners())
        print(f"w-c holds a partition {took:.1f} s after it started: {history[-1]}")

        processes["w-a"].send_signal(signal.SIGTERM)
        processes["w-a"].wait(30)
        took = eventually(
            lambda: not held_by("w-a") and len(held_by("w-b")) == 2 and len(held_by("w-c")) == 2,
            "w-b and w-c share the partitions after w-a stopped",
        )
        history.append(owners())
        print(f"w-a stopped; its partitions moved within {took:.1f} s: {history[-1]}")
        time.sleep(2.0)  # publish more
    finally:
        producer.halted.set()
        producer.thread.join(30)
    try:
        if producer.error is not None:
            raise producer.error
        sent = set(producer.acknowledged)
        assert len(sent) > 0

        def ids() -> Counter[str]:
            return Counter(record.id for record in store.records())

        eventually(lambda: sent <= set(ids()), "every acknowledged event is applied", 90.0)
        counts = ids()
        assert max(counts.values()) == 1
        assert set(counts) == sent
        assert Ledger(store).verify().intact
        # the partitions changed hands: each snapshot differs from the one before
        assert history[0] != history[1] != history[2]
        assert {o for snapshot in history for o in snapshot.values()} >= {"w-a", "w-b", "w-c"}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        store.close()


if __name__ == "__main__":
    writer_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))

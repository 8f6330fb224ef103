"""Partition writers fed prepared batches: does a second partition's writer add throughput?

No NATS, no API: ``writers`` processes (1, then 2), each holding the writer lease of its
own partition of a fresh 2-partition ledger, append pre-built batches
(``Ledger.prepare_batch`` output, ``batch`` events of that partition's customers, built
before the clock starts) with ``store.append(batch, now, leases={p: lease})`` as fast as
PostgreSQL takes them, for ``seconds`` (or until their batches run out). Each process
reports the events it appended, its wall-clock seconds, its own CPU (``process_time``)
and its PostgreSQL backend's (``/proc``). ``events_per_s`` is the sum over processes of
events over each one's seconds.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from meterline.bench.floor import process_cpu_s
from meterline.bench.synthetic_pricing import INGEST_SPAN_US, retimed
from meterline.bench.workload import synthetic_events
from meterline.clock import system_clock_us
from meterline.core.partitions import partition_of
from meterline.ledger.event_ledger import Ledger, open_store

CHUNK = 10_000
"""Synthetic events generated at a time (about half are the partition's)."""
PARTITIONS = 2
"""Partitions of the writers' ledger (writer ``n`` owns partition ``n``)."""


def _batches(ledger: Ledger, partition: int, events: int, batch: int, prefix: str) -> list[Any]:
    """``events`` prepared events (in batches of ``batch``) of ``partition``'s customers,
    generated a chunk at a time (the synthetic workload's, re-stamped to the last half
    hour)."""
    now_us = system_clock_us()
    pending: list[dict[str, Any]] = []
    prepared: list[Any] = []
    made = chunk = 0
    while made < events:
        raws = retimed(synthetic_events(CHUNK, prefix=f"{prefix}-{chunk}"), now_us, INGEST_SPAN_US)
        chunk += 1
        pending += [raw for raw in raws if partition_of(raw["customer"], PARTITIONS) == partition]
        while len(pending) >= batch and made < events:
            valid, rejected, _ = ledger.prepare_batch(pending[:batch])
            del pending[:batch]
            if rejected:
                raise RuntimeError(f"a prepared batch refused events: {rejected[:1]}")
            prepared.append(valid)
            made += len(valid)
    return prepared


def _writer(location: str, partition: int, events: int, batch: int, seconds: float) -> None:
    """One writer: build the batches, print ``ready``, wait for ``go``, append for
    ``seconds``, print one JSON line."""
    store = open_store(location)
    try:
        batches = _batches(
            Ledger(store), partition, events, batch, f"w{partition}-{time.time_ns()}"
        )
        lease = store.acquire_lease(  # type: ignore[attr-defined]
            partition, f"bench-writer-{partition}", system_clock_us(), seconds=seconds + 120
        )
        if lease is None:
            raise RuntimeError(f"partition {partition}'s lease is held")
        backend = store._connection.raw.info.backend_pid  # type: ignore[attr-defined]
        leases = {partition: lease}
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        appended = 0
        backend_before = process_cpu_s(backend)
        cpu_before, started = time.process_time(), time.perf_counter()
        deadline = started + seconds
        for prepared in batches:
            outcomes = store.append(prepared, system_clock_us(), leases=leases)
            appended += sum(1 for outcome in outcomes if outcome.status == "accepted")
            if time.perf_counter() >= deadline:
                break
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        backend_cpu = process_cpu_s(backend) - backend_before
    finally:
        store.close()
    answer = {
        "partition": partition,
        "events": appended,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "postgresql_cpu_seconds": backend_cpu,
        "ran_out": appended == sum(len(prepared) for prepared in batches),
    }
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    _, location, partition, events, batch, seconds = sys.argv
    _writer(location, int(partition), int(events), int(batch), float(seconds))

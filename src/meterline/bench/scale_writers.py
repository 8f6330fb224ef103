"""``two_writers`` of ``meterline bench scale``: 1, then 2 partition-writer processes
(``bench.writers``) appending prepared batches to their own partitions of a fresh ledger,
without NATS or the API."""

from __future__ import annotations

import json
from typing import Any

from meterline.bench.children import READY_TIMEOUT_S, Child, python_command, read_line
from meterline.bench.scale_setup import Setup
from meterline.ledger.event_ledger import open_store

WRITER_EVENTS = 150_000
"""Prepared events each partition writer builds (it stops after ``writer_seconds``)."""
WRITER_EVENTS_QUICK = 6_000
WRITER_SECONDS = 3.0
WRITER_SECONDS_QUICK = 1.0


def _writers_run(
    setup: Setup, writers: int, events: int, batch: int, seconds: float
) -> dict[str, Any]:
    """``writers`` processes appending prepared batches to their own partitions of a fresh
    2-partition ledger (``bench.writers``)."""
    from meterline.bench.writers import PARTITIONS

    _, location = setup.schemas.create()
    open_store(location, partitions=PARTITIONS).close()
    children = []
    try:
        for partition in range(writers):
            log = setup.root / f"writer-{writers}-{partition}.log"
            setup.logs.append(log)
            command = ["-m", "meterline.bench.writers", location, str(partition), str(events)]
            command += [str(batch), str(seconds)]
            children.append(Child(python_command(*command), log, pipes=True))
        for child in children:
            if read_line(child, READY_TIMEOUT_S * 2) != "ready":
                raise RuntimeError(f"a partition writer did not get ready: {child.tail()}")
        for child in children:
            assert child.process.stdin is not None
            child.process.stdin.write(b"go\n")
            child.process.stdin.flush()
        each = []
        for child in children:
            line = read_line(child, seconds + READY_TIMEOUT_S)
            if not line:
                raise RuntimeError(f"a partition writer failed: {child.tail()}")
            each.append(json.loads(line))
    finally:
        for child in children:
            child.stop()
    appended = sum(row["events"] for row in each)
    return {
        "writers": writers,
        "events": appended,
        "events_per_s": int(sum(row["events"] / row["seconds"] for row in each)),
        "processes": [
            {
                "partition": row["partition"],
                "events": row["events"],
                "seconds": round(row["seconds"], 3),
                "events_per_s": int(row["events"] / row["seconds"]),
                "cpu_cores_busy": round(row["cpu_seconds"] / row["seconds"], 2),
                "postgresql_cores_busy": round(row["postgresql_cpu_seconds"] / row["seconds"], 2),
                "cpu_us_per_event": round(row["cpu_seconds"] * 1e6 / row["events"], 2),
                "postgresql_us_per_event": round(
                    row["postgresql_cpu_seconds"] * 1e6 / row["events"], 2
                ),
                "ran_out_of_batches": row["ran_out"],
            }
            for row in each
        ],
    }


def two_writers(setup: Setup, quick: bool, batch: int) -> dict[str, Any]:
    events = WRITER_EVENTS_QUICK if quick else WRITER_EVENTS
    seconds = WRITER_SECONDS_QUICK if quick else WRITER_SECONDS
    one = _writers_run(setup, 1, events, batch, seconds)
    two = _writers_run(setup, 2, events, batch, seconds)
    return {
        "batch": batch,
        "seconds": seconds,
        "events_per_s_1_writer": one["events_per_s"],
        "events_per_s_2_writers": two["events_per_s"],
        "ratio": round(two["events_per_s"] / one["events_per_s"], 3),
        "target_ratio": 1.6,
        "runs": {"1_writer": one, "2_writers": two},
    }

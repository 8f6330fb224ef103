"""CPU per event of the chain walk ``audit`` runs, in one process (load-robust figures).

Usage: PYTHONPATH=SRC python benchmarks/audit_walk_cpu.py LEDGER NAME
(LEDGER: e.g. the month-open ledger ``benchmarks/audit.py`` builds; one partition.)
Prints two lines: the ranges a worker walks (``walk_stored_range`` of each range, here,
one after another: a worker's CPU per event), and ``verify_chains_parallel(workers=1)``
(the whole walk in one process, as ``METERLINE_AUDIT_WORKERS=1`` runs it). Run it with
each source tree in turn (A, B, A, B) to compare.
"""

from __future__ import annotations

import sqlite3
import sys
import time

from meterline.bench.close import CLOSE_AT_US
from meterline.billing.service import open_billing
from meterline.core.chain import BatchRecord
from meterline.core.chain_ranges import plan_ranges
from meterline.ledger import parallel_verify


def main() -> None:
    path, name = sys.argv[1], sys.argv[2]
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            f"{parallel_verify._BATCHES} WHERE partition_number = 0 ORDER BY batch_number"
        ).fetchall()
    batches = [BatchRecord(*row[:4], bytes(row[4]), bytes(row[5])) for row in rows]
    ranges = list(plan_ranges(0, batches, {}, parallel_verify.CHAIN_RANGE_EVENTS))
    started, cpu = time.perf_counter(), time.process_time()
    events = 0
    for chain_range in ranges[:-1]:  # the last range reads its own batches
        outcome = parallel_verify.walk_stored_range(path, chain_range)
        assert outcome.problem is None, outcome
        events += outcome.records
    cpu, wall = time.process_time() - cpu, time.perf_counter() - started
    print(
        f"{name}: ranges walked here: {events:,} events, {cpu / events * 1e6:.2f} µs CPU/event,"
        f" {events / wall:,.0f} events/s"
    )
    with open_billing(path, lambda: CLOSE_AT_US, create=False) as billing:
        started, cpu = time.perf_counter(), time.process_time()
        report = parallel_verify.verify_chains_parallel(billing.ledger.store, workers=1)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - started
    assert report.intact, report
    print(
        f"{name}: verify, one process: {report.records:,} events,"
        f" {cpu / report.records * 1e6:.2f} µs CPU/event, {report.records / wall:,.0f} events/s"
    )


if __name__ == "__main__":
    main()

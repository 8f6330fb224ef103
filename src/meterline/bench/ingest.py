"""``meterline bench ingest``: the library path, the HTTP path and the storage floor.

All three run in one process invocation on the same machine, so their ratio means
something. The floor (baseline) is the library's own rows appended by plain ``sqlite3``
``executemany`` to an index-free table with the same pragmas (WAL, ``synchronous=FULL``)
and the same batch size: the cost of storage alone, without validation, canonical bytes,
hashing or deduplication.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from meterline.api.server import spawn_server
from meterline.bench.workload import synthetic_events
from meterline.clock import system_clock_us
from meterline.keys import create_key
from meterline.ledger import open_ledger
from meterline.ledger.database import connect_sqlite as connect
from meterline.ledger.event_reads import all_rows
from meterline.ledger.sqlite import SqliteStore

HTTP_CONNECTIONS = 2


def _library_path(db: Path, events: list[dict[str, Any]], batch: int) -> tuple[float, int]:
    with open_ledger(db) as ledger:
        gc.collect()
        gc.freeze()  # the generated input is the harness's, not the ledger's, garbage to scan
        accepted = 0
        started = time.perf_counter()
        for start in range(0, len(events), batch):
            accepted += ledger.ingest(events[start : start + batch]).accepted
        seconds = time.perf_counter() - started
        gc.unfreeze()
    if accepted != len(events):
        raise RuntimeError(f"library path accepted {accepted} of {len(events)} events")
    return len(events) / seconds, accepted


def _baseline(source_db: Path, floor_db: Path, batch: int) -> float:
    source = connect(source_db)
    rows = all_rows(source)
    source.close()
    floor = connect(floor_db)
    floor.execute(
        "CREATE TABLE events (sequence INTEGER PRIMARY KEY, customer TEXT, event_id TEXT,"
        " type TEXT, timestamp_us INTEGER, ingested_at_us INTEGER, body BLOB, hash BLOB)"
    )
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        floor.execute("BEGIN")
        floor.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows[start : start + batch]
        )
        floor.execute("COMMIT")
    seconds = time.perf_counter() - started
    gc.unfreeze()
    floor.close()
    return len(rows) / seconds


def _http_path(db: Path, count: int, batch: int) -> float:
    store = SqliteStore(db)
    _, token = create_key(store, "ingest", system_clock_us(), name="bench")
    store.close()
    server, url = spawn_server(db)
    try:
        finished = subprocess.run(
            [
                sys.executable,
                "-m",
                "meterline.bench.http_client",
                url,
                token,
                str(count),
                str(batch),
                str(HTTP_CONNECTIONS),
            ],
            capture_output=True,
            check=True,
            text=True,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = json.loads(finished.stdout)
    if result["failures"] or result["accepted"] != count:
        raise RuntimeError(f"HTTP path failed: {result}")
    return count / float(result["seconds"])


def run_ingest_benchmark(
    events: int, batch: int, http_batch: int, progress: Any = None
) -> dict[str, Any]:
    """Run the three paths on ``events`` events each and return the figures."""

    def say(message: str) -> None:
        if progress is not None:
            progress.print(message)

    with tempfile.TemporaryDirectory(prefix="meterline-bench-") as folder:
        root = Path(folder)
        say(f"generating {events:,} events")
        generated = synthetic_events(events)
        say("library path (validate, canonical bytes, dedup, hash chain, fsync'd append)")
        library_rate, _ = _library_path(root / "library.db", generated, batch)
        del generated
        say("baseline: the same rows, plain sqlite3 executemany, no index, same durability")
        baseline_rate = _baseline(root / "library.db", root / "floor.db", batch)
        say(f"HTTP path ({HTTP_CONNECTIONS} connections, batches of {http_batch}, client process)")
        http_rate = _http_path(root / "http.db", events, http_batch)
    return {
        "events": events,
        "batch_events": batch,
        "http_batch_events": http_batch,
        "library_events_per_s": int(library_rate),
        "http_events_per_s": int(http_rate),
        "baseline_events_per_s": int(baseline_rate),
        "ratio_to_baseline": round(library_rate / baseline_rate, 3),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }

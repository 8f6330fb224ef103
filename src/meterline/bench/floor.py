"""The floor of ``meterline bench scale``: the least work an event needs on its way in.

In one process, on the same events the load generators post (their JSON batches): decode
each batch (msgspec, ``core.events.decode_exact``), encode every event canonically
(``core.events.encode_canonical``), hash it as a leaf (``sha256(0x00 || body)``,
hashlib), and binary-``COPY`` the rows (customer, id, body, hash) into a plain table, one
transaction per batch. No validation, no sequences, no chains, no NATS, no HTTP.

``floor_us_per_event`` is the CPU it used per event: this process (``process_time``) plus
its PostgreSQL backend (utime + stime from ``/proc``, so the server's side of ``COPY`` and
commit counts, as it does for the configurations); ``floor_events_per_s`` is events over
the wall-clock seconds of the loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from hashlib import sha256
from typing import Any

import psycopg

from meterline.core.events import decode_exact, encode_canonical

_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")

_TABLE = (
    "CREATE TABLE floor_events (customer text NOT NULL, event_id text NOT NULL,"
    " body bytea NOT NULL, hash bytea NOT NULL)"
)
_COPY = "COPY floor_events (customer, event_id, body, hash) FROM STDIN (FORMAT BINARY)"
_TYPES = ["text", "text", "bytea", "bytea"]


def process_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` from ``/proc`` (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S


def run_floor(location: str, bodies: Sequence[bytes]) -> dict[str, Any]:
    """The floor over the JSON batches ``bodies``, into a table created in the schema of
    ``location`` (a URL whose ``search_path`` names a fresh schema)."""
    with psycopg.connect(location, autocommit=True, connect_timeout=10) as connection:
        connection.execute(_TABLE)
        backend = connection.info.backend_pid
        events = 0
        backend_before = process_cpu_s(backend)
        cpu_before, started = time.process_time(), time.perf_counter()
        for data in bodies:
            batch = decode_exact(data)
            with (
                connection.transaction(),
                connection.cursor() as cursor,
                cursor.copy(_COPY) as copy,
            ):
                copy.set_types(_TYPES)
                write_row = copy.write_row
                for event in batch:
                    body = encode_canonical(event)
                    write_row(
                        (event["customer"], event["id"], body, sha256(b"\x00" + body).digest())
                    )
            events += len(batch)
        seconds = time.perf_counter() - started
        client_s = time.process_time() - cpu_before
        backend_s = process_cpu_s(backend) - backend_before
        row = connection.execute("SELECT count(*) FROM floor_events").fetchone()
        stored = int(row[0]) if row else 0
    if stored != events or events == 0:
        raise RuntimeError(f"the floor stored {stored:,} of {events:,} events")
    cpu_s = client_s + backend_s
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "floor_events_per_s": int(events / seconds),
        "floor_us_per_event": round(cpu_s * 1e6 / events, 2),
        "floor_us_per_event_process": round(client_s * 1e6 / events, 2),
        "floor_us_per_event_postgresql": round(backend_s * 1e6 / events, 2),
    }

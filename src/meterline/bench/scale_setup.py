"""What the configurations of one ``meterline bench scale`` run share, and how a
configuration is laid out: its PostgreSQL schemas (created and dropped), its ledger and
pricing, the partitions each worker owns, the command lines of its components, and the
workers' reports in the NATS status bucket (ready, counters, live engines caught up)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg

from meterline.bench.children import READY_TIMEOUT_S, Child
from meterline.bench.scale_probes import merged_pricing
from meterline.bench.synthetic_pricing import contract_start, ingest_pricing
from meterline.billing.service import open_billing
from meterline.clock import system_clock_us
from meterline.keys import create_key
from meterline.ledger.event_ledger import open_store

COUNTERS_WAIT_S = 5.0
"""How long the workers have to report their final counters after the last commit."""

APPLICATION = "meterline-bench-scale"
"""The ``application_name`` of every PostgreSQL connection the benchmark's components
open (the driver's own uses another), to find their backends."""

DRIVER = "meterline-bench-scale-driver"
"""The name of the benchmark's own NATS connections."""


def tell(progress: Any, message: str) -> None:
    if progress is not None:
        progress.print(message, highlight=False)


def _with_parameters(url: str, **parameters: str) -> str:
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in parameters.items())
    return f"{url}{'&' if urlsplit(url).query else '?'}{query}"


class Schemas:
    """Schemas created in the benchmark database, all dropped by ``drop_all``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.created: list[str] = []

    def create(self) -> tuple[str, str]:
        """A new schema: its name and a URL whose connections use it (and name themselves
        ``APPLICATION``: the components' connections)."""
        schema = f"bench_{secrets.token_hex(6)}"
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        self.created.append(schema)
        location = _with_parameters(
            self.url, options=f"-csearch_path={schema}", application_name=APPLICATION
        )
        return schema, location

    def drop_all(self) -> None:
        if not self.created:
            return
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as connection:
            for schema in self.created:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self.created.clear()


def postgres_version(url: str) -> str:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def driver_location(url: str, schema: str) -> str:
    """A URL of ``schema`` for the driver's own reads (not named ``APPLICATION``: its
    backends are not counted as the path's)."""
    return _with_parameters(url, options=f"-csearch_path={schema}")


def keeper_folded(context: Any) -> int:
    """Events the bucket keeper folded: the current revision's watermark (0 without one)."""
    from meterline.ledger import bucket_records

    mark = bucket_records.watermark(context.connection, context.current().revision)
    return 0 if mark is None else int(mark.through.events)


def benchmark_backends(connection: psycopg.Connection[Any]) -> set[int]:
    """PostgreSQL processes working for this benchmark: its components' backends and the
    server's background processes (the postmaster is added from /proc)."""
    rows = connection.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        " OR backend_type <> 'client backend'",
        (APPLICATION,),
    ).fetchall()
    return {int(row[0]) for row in rows}


def prepare_ledger(location: str, partitions: int, probes: int = 0) -> str:
    """Create the ledger (``partitions`` chains) with the pricing (and ``probes`` kill
    switch probe customers); an ingest token."""
    store = open_store(location, partitions=partitions)
    try:
        _, token = create_key(store, "ingest", system_clock_us(), name="bench-scale")
    finally:
        store.close()
    with open_billing(location) as billing:
        start = contract_start(system_clock_us())
        pricing = ingest_pricing(start, controls=True)
        if probes:
            pricing = merged_pricing(pricing, probes, start)
        billing.apply(pricing)
    return token


@dataclass
class Setup:
    """What every configuration of one benchmark run shares."""

    root: Path
    nats: Child
    nats_url: str
    schemas: Schemas
    events: int
    partitions: int
    batch: int
    api_replicas: int
    progress: Any
    logs: list[Path] = field(default_factory=list)
    probes: int = 0
    """Kill-switch probes per configuration (``scale_probes.KillSwitchProbe``)."""
    bodies: list[bytes] = field(default_factory=list)
    """The JSON batches of the first load generator's share (the floor's events)."""
    streams: int = 1
    """JetStream streams asked for (``--streams``); a configuration with fewer partitions
    runs with one stream per partition."""


def split_partitions(partitions: int, workers: int) -> list[list[int]]:
    """``range(partitions)`` in ``workers`` contiguous, nearly equal parts."""
    parts, start = [], 0
    for number in range(workers):
        size = partitions // workers + (number < partitions % workers)
        parts.append(list(range(start, start + size)))
        start += size
    return parts


def partition_text(partitions: list[int]) -> str:
    return f"{partitions[0]}-{partitions[-1]}" if len(partitions) > 1 else str(partitions[0])


def load_shares(events: int, processes: int) -> list[int]:
    return [events // processes + (n < events % processes) for n in range(processes)]


def worker_documents(setup: Setup, namespace: str) -> list[dict[str, Any]]:
    """The documents the workers of ``namespace`` put in the status bucket, if fresh (read
    from NATS alone: ``meterline status`` would also open the ledger each time)."""
    from meterline.stream.connection import connect
    from meterline.stream.naming import stream_settings
    from meterline.stream.status import WORKER_STALE_S, StatusBoard

    settings = stream_settings(setup.nats_url, setup.partitions, namespace)

    async def read() -> list[dict[str, Any]]:
        connection = await asyncio.wait_for(connect(settings, DRIVER), READY_TIMEOUT_S)
        try:
            board = await StatusBoard.open(connection, settings)
            return await board.workers()
        finally:
            await connection.close()

    now_us = system_clock_us()
    return [
        document
        for document in asyncio.run(read())
        if now_us - int(document.get("reported_at_us", 0)) <= WORKER_STALE_S * 1_000_000
    ]


def component_command(
    component: str, options: dict[str, Any], profile: Path | None = None
) -> list[str]:
    """The child's arguments running ``component`` (``serve``, ``worker``, ``keeper``) with
    ``options``: ``-m meterline <component> --<name> <value>...``, as an operator runs it;
    with ``profile``, the same library call under ``run_profiled``, writing to ``profile``."""
    if profile is not None:
        return [
            "-m",
            "meterline.bench.scale",
            "profile",
            str(profile),
            component,
            json.dumps(options),
        ]
    arguments = [f"--{name}={value}" for name, value in options.items()]
    return ["-m", "meterline", component, *arguments]


def worker_counters(setup: Setup, namespace: str, total: int) -> dict[str, int]:
    """The workers' own counters once they report every event applied (they report each
    second; given up after ``COUNTERS_WAIT_S``): applied, duplicates, conflicts."""
    deadline = time.monotonic() + COUNTERS_WAIT_S
    while True:
        totals = dict.fromkeys(("events_applied", "duplicates", "conflicts"), 0)
        with contextlib.suppress(Exception):
            for row in worker_documents(setup, namespace):
                for name in totals:
                    totals[name] += int(row.get(name, 0))
        if totals["events_applied"] >= total or time.monotonic() > deadline:
            return totals
        time.sleep(0.25)


def applied_events(row: dict[str, Any]) -> int:
    """How many events a worker's live engine applied (each partition's sequences are
    gap-free from 1, so the heads of the partitions it owns add up to that count)."""
    applied = row.get("live_applied") or []
    owned = row.get("partitions") or range(len(applied))
    return sum(int(applied[p]) for p in owned if p < len(applied))


def live_caught_up(setup: Setup, namespace: str, workers: list[Child], total: int) -> bool:
    """Whether the workers' live engines, together, report every event applied (each
    through the last event of the partitions it owns)."""
    for child in workers:
        child.check_alive("a worker")
    try:
        rows = worker_documents(setup, namespace)
    except Exception:
        return False
    # each partition's sequences are its own: the workers' shares add up to the total
    return len(rows) >= len(workers) and sum(applied_events(row) for row in rows) >= total

"""``meterline bench scale``: the whole distributed path, per partition and worker count.

One run, on loopback, of API -> JetStream -> worker -> PostgreSQL per configuration:
every partition count of ``partitions`` (default 1, 2, 8) with every worker count of
``workers`` (default 1, 2; the workers split the partitions, and a configuration with
more workers than partitions is skipped, ``skipped``), each on a fresh schema and
namespace. Each configuration also reports its lock waits and the kill switch under load
(``scale_probes``: ``lock_waits``, ``kill_switch``), its events/s per partition and its
``ratio_to_floor``: the path's CPU µs/event (API + NATS + worker + PostgreSQL,
``cpu_us_per_event_path``) over the floor's (``bench.floor``: decode, canonical encoding,
leaf hash and binary ``COPY`` of the same events in one process, measured in the same
run). ``two_writers`` (``bench.writers``) is 1 then 2 partition-writer processes fed
prepared batches, without NATS or API. ``--quick`` (the test) measures partitions 1, 2
with 10,000 events and 3 probes. Everything the path needs is started here, so each
component's CPU can be attributed:

* its own ``nats-server`` (JetStream, file storage in a temporary directory) on a free
  port, stopped at the end;
* per configuration, a fresh PostgreSQL schema ``bench_<random>`` in the benchmark
  database (dropped at the end), holding the ledger with ``partitions`` chains, the
  pricing of ``meterline bench controls``' "with controls" run (the synthetic meters
  priced for the 100 synthetic customers, a prepaid pool and four controls on every
  contract, so the workers' live engines do real work), and an ingest key;
* the workers (``meterline worker``), then ``api_replicas`` API replicas
  (``meterline serve --stream``), then ``LOAD_PROCESSES`` load-generator processes, each
  with ``LOAD_CONNECTIONS`` keep-alive connections, posting pre-encoded batches of
  ``batch`` events (the synthetic workload re-stamped into the last half hour) as fast
  as they are answered (a ``503`` is retried). Load generator ``i`` posts to replica
  ``i % api_replicas``.

**Throughput** is end to end: events committed in the ledger over the seconds from the
first post until the ledger holds every event (its head, polled; sequences are gap-free,
so the head is the count; the time to drain counts). Every event must be committed
exactly once: the count of the events table is checked afterwards.

**CPU per event**, per component, is utime + stime from ``/proc/<pid>/stat`` (with the
reaped children's cutime + cstime) taken just before the first post and again once every
worker reports that its live engine has applied the last event (the engines trail the
ledger under load, and their work is part of the path: ``live_seconds`` is how long after
the last commit, at the workers' 1 s status interval; ``cpu_us_per_event_at_last_commit``
stops at the last commit instead), divided by the events: ``api`` (the replicas),
``nats`` (this benchmark's server), ``worker`` (the workers) and ``load`` (the load
generators, measured by themselves over their posting). PostgreSQL is shared with
whatever else runs on the machine, so it is reported twice: ``postgresql`` counts the
backends of this benchmark's components (found by their ``application_name``), the
postmaster's own time and the server's background processes (WAL writer, checkpointer,
background writer, autovacuum); ``postgresql_all`` counts every process whose ``comm``
starts with ``postgres``, reaped backends included (exact on a quiet machine, inflated by
any other client of the server otherwise). ``bound_by`` names the component with the
most CPU per event in the 1-worker run.

**Profile**: with ``profile``, a third run repeats the 1-worker configuration with the
worker and the API replica under ``cProfile`` (every thread: the event loop, the ledger
appends of ``asyncio.to_thread``, the live engine's controller), timing each thread's CPU
(``thread_time``, so waiting costs nothing), and the top ``PROFILE_TOP`` functions by
internal and by cumulative time are printed and returned (``worker_profile``,
``api_profile``; µs per event of the run). cProfile's overhead is per call, so small
functions weigh more than they do unprofiled; the run is slower for it, and its rate is
reported apart (``events_per_s_profiled``), never as a figure.

Everything started is stopped, and every schema dropped, on success, failure, Ctrl-C or
SIGTERM; every wait has a deadline, so the benchmark always ends by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

import httpx
import msgspec
import psycopg

from meterline.api.server import SERVER_START_TIMEOUT_S, free_port
from meterline.bench.controls import (
    INGEST_SPAN_US,
    _contract_start,
    _month_start_us,
    _retimed,
    ingest_pricing,
)
from meterline.bench.floor import run_floor
from meterline.bench.scale_probes import (
    RETRY_STATUSES,
    KillSwitchProbe,
    LockSampler,
    merged_pricing,
    retry_pause_s,
)
from meterline.bench.workload import synthetic_events
from meterline.billing.service import open_billing
from meterline.clock import system_clock_us
from meterline.core.admission import LAG_MAX_MS_DEFAULT
from meterline.keys import create_key
from meterline.ledger.event_reads import event_count
from meterline.ledger.ledger import open_store

POSTGRES_URL = os.environ.get(
    "METERLINE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
"""The database the benchmark's schemas are created in (``--postgres``)."""
NATS_SERVER = os.environ.get("METERLINE_BENCH_NATS_SERVER", "/usr/sbin/nats-server")
"""The ``nats-server`` executable the benchmark starts."""

LOAD_PROCESSES = 2
"""Load-generator processes (each pre-encodes its share of the events)."""
LOAD_CONNECTIONS = 2
"""Keep-alive connections (threads) per load-generator process."""
API_REPLICAS = 1
"""API replicas by default: on 2 cores one replica keeps one worker busy (see
BENCHMARKS.md); a second one only takes CPU from the workers."""
READY_TIMEOUT_S = 90.0
"""How long a worker, a server or a load generator may take to be ready."""
DRAIN_TIMEOUT_MIN_S = 120.0
"""The least time a run has to commit every event; more for larger runs (see ``_deadline``)."""
DRAIN_RATE_FLOOR = 1_000
"""Events/s below which a run is abandoned as stuck (it sets the drain deadline)."""
POLL_S = 0.02
"""How often the ledger head is polled while the events drain."""
STOP_TIMEOUT_S = 30.0
"""How long a stopping child process has before it is killed."""
LIVE_TIMEOUT_S = 120.0
"""How long the live engines have, after the last commit, to report every event applied
(the CPU figures are then taken at the last commit only: see ``live_seconds``)."""
COUNTERS_WAIT_S = 5.0
"""How long the workers have to report their final counters after the last commit."""
PROFILE_TOP = 15
"""Functions listed per ordering of the worker's profile."""
LOG_EXCERPT_LINES = 5

_APPLICATION = "meterline-bench-scale"
"""The ``application_name`` of every PostgreSQL connection the benchmark's components
open (the driver's own uses another), to find their backends."""
_DRIVER = "meterline-bench-scale-driver"
"""The name of the benchmark's own NATS connections."""
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _say(progress: Any, message: str) -> None:
    if progress is not None:
        progress.print(message, highlight=False)


# -- CPU accounting from /proc --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Process:
    pid: int
    ppid: int
    comm: str
    started: int
    """Start time in clock ticks after boot: with the pid, identifies the process."""
    own: int
    """utime + stime, in clock ticks."""
    reaped: int
    """cutime + cstime: the CPU of the children it waited for, in clock ticks."""


Snapshot = dict[int, _Process]


def _read_process(pid: int) -> _Process | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    opened, closed = text.index("("), text.rindex(")")
    fields = text[closed + 2 :].split()  # fields[0] is field 3 of proc(5), ``state``
    return _Process(
        pid,
        int(fields[1]),
        text[opened + 1 : closed],
        int(fields[19]),
        int(fields[11]) + int(fields[12]),
        int(fields[13]) + int(fields[14]),
    )


def _snapshot() -> Snapshot:
    """Every process of the machine, read now."""
    processes: Snapshot = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            process = _read_process(int(entry.name))
            if process is not None:
                processes[process.pid] = process
    return processes


def _with_descendants(snapshot: Snapshot, roots: Iterable[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for process in snapshot.values():
        children.setdefault(process.ppid, []).append(process.pid)
    found: set[int] = set()
    waiting = [pid for pid in roots if pid in snapshot]
    while waiting:
        pid = waiting.pop()
        if pid not in found:
            found.add(pid)
            waiting.extend(children.get(pid, ()))
    return found


def _postgres_pids(snapshot: Snapshot) -> set[int]:
    return {pid for pid, process in snapshot.items() if process.comm.startswith("postgres")}


def _postmasters(snapshot: Snapshot) -> set[int]:
    """PostgreSQL processes whose parent is not one: the postmasters."""
    ours = _postgres_pids(snapshot)
    return {pid for pid in ours if snapshot[pid].ppid not in ours}


@dataclass
class _Component:
    """A set of processes measured together; ``pids`` is re-evaluated per snapshot."""

    name: str
    pids: Callable[[Snapshot], set[int]]
    count_reaped: Callable[[int], bool] = lambda _pid: True


def _ticks(snapshot: Snapshot, component: _Component) -> tuple[int, dict[tuple[int, int], int]]:
    """Total ticks of the component's processes and each one's, keyed by (pid, start)."""
    each: dict[tuple[int, int], int] = {}
    for pid in component.pids(snapshot):
        process = snapshot[pid]
        reaped = process.reaped if component.count_reaped(pid) else 0
        each[(pid, process.started)] = process.own + reaped
    return sum(each.values()), each


def _cpu_seconds(before: Snapshot, after: Snapshot, component: _Component) -> float:
    """CPU seconds the component used between the snapshots: what its processes at the
    end have used since the start (all of it for a process that appeared meanwhile),
    plus what processes that ended meanwhile were reaped with (in their parent's
    cutime), minus nothing for processes that vanished unreaped."""
    _, start = _ticks(before, component)
    _, end = _ticks(after, component)
    used = 0
    for key, ticks in end.items():
        used += ticks - start.get(key, 0)
    return used / _CLOCK_TICKS_PER_S


# -- child processes --------------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to send the child SIGTERM when the benchmark dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Child:
    """A child process whose stderr (and stdout unless piped) goes to ``log``."""

    def __init__(
        self, args: Sequence[str], log: Path, pipes: bool = False, env: dict[str, str] | None = None
    ) -> None:
        self.args = list(args)
        self.log = log
        self._log_file: IO[bytes] = log.open("ab")
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log_file,
            stderr=self._log_file,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self, what: str) -> None:
        if not self.alive():
            raise RuntimeError(
                f"{what} exited with {self.process.returncode}: {self.tail()}".rstrip()
            )

    def tail(self, characters: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-characters:]
        return ""

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log_file.close()


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _start_nats(folder: Path, log: Path) -> tuple[_Child, str]:
    port = free_port()
    store = folder / "jetstream"
    store.mkdir()
    child = _Child([NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)], log)

    def ready() -> bool:
        child.check_alive("nats-server")
        return _port_open(port)

    try:
        _wait_for(ready, "nats-server", READY_TIMEOUT_S)
    except BaseException:
        child.stop()
        raise
    return child, f"nats://127.0.0.1:{port}"


def _nats_version() -> str:
    try:
        finished = subprocess.run(
            [NATS_SERVER, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    return (finished.stdout or finished.stderr).strip().removeprefix("nats-server: ")


# -- PostgreSQL ---------------------------------------------------------------------------------


def _with_parameters(url: str, **parameters: str) -> str:
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in parameters.items())
    return f"{url}{'&' if urlsplit(url).query else '?'}{query}"


class _Schemas:
    """Schemas created in the benchmark database, all dropped by ``drop_all``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.created: list[str] = []

    def create(self) -> tuple[str, str]:
        """A new schema: its name and a URL whose connections use it (and name themselves
        ``_APPLICATION``: the components' connections)."""
        schema = f"bench_{secrets.token_hex(6)}"
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        self.created.append(schema)
        location = _with_parameters(
            self.url, options=f"-csearch_path={schema}", application_name=_APPLICATION
        )
        return schema, location

    def drop_all(self) -> None:
        if not self.created:
            return
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as connection:
            for schema in self.created:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self.created.clear()


def _postgres_version(url: str) -> str:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def _benchmark_backends(connection: psycopg.Connection[Any]) -> set[int]:
    """PostgreSQL processes working for this benchmark: its components' backends and the
    server's background processes (the postmaster is added from /proc)."""
    rows = connection.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        " OR backend_type <> 'client backend'",
        (_APPLICATION,),
    ).fetchall()
    return {int(row[0]) for row in rows}


# -- the ledger and its pricing -----------------------------------------------------------------


def _prepare_ledger(location: str, partitions: int, probes: int = 0) -> str:
    """Create the ledger (``partitions`` chains) with the pricing (and ``probes`` kill
    switch probe customers); an ingest token."""
    store = open_store(location, partitions=partitions)
    try:
        _, token = create_key(store, "ingest", system_clock_us(), name="bench-scale")
    finally:
        store.close()
    with open_billing(location) as billing:
        start = _contract_start(system_clock_us())
        pricing = ingest_pricing(start, controls=True)
        if probes:
            pricing = merged_pricing(pricing, probes, start)
        billing.apply(pricing)
    return token


# -- one configuration --------------------------------------------------------------------------


@dataclass
class _Setup:
    """What every configuration of one benchmark run shares."""

    root: Path
    nats: _Child
    nats_url: str
    schemas: _Schemas
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


def _split(partitions: int, workers: int) -> list[list[int]]:
    """``range(partitions)`` in ``workers`` contiguous, nearly equal parts."""
    parts, start = [], 0
    for number in range(workers):
        size = partitions // workers + (number < partitions % workers)
        parts.append(list(range(start, start + size)))
        start += size
    return parts


def _partition_text(partitions: list[int]) -> str:
    return f"{partitions[0]}-{partitions[-1]}" if len(partitions) > 1 else str(partitions[0])


def _load_shares(events: int, processes: int) -> list[int]:
    return [events // processes + (n < events % processes) for n in range(processes)]


def _workers(setup: _Setup, namespace: str) -> list[dict[str, Any]]:
    """The documents the workers of ``namespace`` put in the status bucket, if fresh (read
    from NATS alone: ``meterline status`` would also open the ledger each time)."""
    from meterline.stream.connection import connect
    from meterline.stream.naming import stream_settings
    from meterline.stream.status import WORKER_STALE_S, StatusBoard

    settings = stream_settings(setup.nats_url, setup.partitions, namespace)

    async def read() -> list[dict[str, Any]]:
        connection = await asyncio.wait_for(connect(settings, _DRIVER), READY_TIMEOUT_S)
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


def _run_configuration(
    setup: _Setup, label: str, workers: int, profile_dir: Path | None = None
) -> dict[str, Any]:
    """One measured run on a fresh schema and namespace: its figures. With
    ``profile_dir``, every worker and API replica runs under ``_profiled`` and writes
    ``worker-N.prof`` or ``api-N.prof`` there when stopped."""
    events = setup.events
    schema, location = setup.schemas.create()
    namespace = f"bench_{label}_{secrets.token_hex(4)}"
    token = _prepare_ledger(location, setup.partitions, setup.probes)
    streams = min(setup.streams, setup.partitions)
    stream_options = {"stream": setup.nats_url, "namespace": namespace, "streams": streams}
    children: list[_Child] = []
    try:
        worker_children = []
        for number, owned in enumerate(_split(setup.partitions, workers)):
            log = setup.root / f"{label}-worker-{number}.log"
            setup.logs.append(log)
            worker = {"db": location, **stream_options, "partitions": _partition_text(owned)}
            worker["name"] = f"{label}-w{number}"
            command = _component_command(
                "worker", worker, profile_dir and profile_dir / f"worker-{number}.prof"
            )
            worker_children.append(_Child(_python(*command), log))
            children.append(worker_children[-1])

        def workers_ready() -> bool:
            for child in worker_children:
                child.check_alive("a worker")
            try:
                return len(_workers(setup, namespace)) == workers
            except Exception:
                return False

        _wait_for(workers_ready, f"{workers} worker(s) in `meterline status`", READY_TIMEOUT_S)

        api_children, urls = [], []
        for number in range(setup.api_replicas):
            port = free_port()
            log = setup.root / f"{label}-api-{number}.log"
            setup.logs.append(log)
            api = {"db": location, "port": port, **stream_options}
            command = _component_command(
                "serve", api, profile_dir and profile_dir / f"api-{number}.prof"
            )
            api_children.append(_Child(_python(*command), log))
            children.append(api_children[-1])
            urls.append(f"http://127.0.0.1:{port}")
        for child, url in zip(api_children, urls, strict=True):

            def healthy(child: _Child = child, url: str = url) -> bool:
                child.check_alive("an API replica")
                try:
                    return httpx.get(f"{url}/v1/health", timeout=2).status_code == 200
                except httpx.TransportError:
                    return False

            _wait_for(healthy, "an API replica's health", SERVER_START_TIMEOUT_S)

        now_us = system_clock_us()
        end_us = now_us - 2_000_000
        span_us = max(0, min(INGEST_SPAN_US, end_us - _month_start_us(now_us)))
        loaders = []
        for number, share in enumerate(_load_shares(events, LOAD_PROCESSES)):
            log = setup.root / f"{label}-load-{number}.log"
            setup.logs.append(log)
            command = ["-m", "meterline.bench.scale", "load", urls[number % len(urls)], token]
            command += [str(share), str(setup.batch), str(LOAD_CONNECTIONS), f"s{number}"]
            command += [str(end_us), str(span_us)]
            loaders.append(_Child(_python(*command), log, pipes=True))
            children.append(loaders[-1])
        for loader in loaders:
            assert loader.process.stdout is not None
            line = _readline(loader, READY_TIMEOUT_S)
            if line != "ready":
                raise RuntimeError(f"a load generator did not get ready: {loader.tail()}")

        probe = KillSwitchProbe(urls, token, setup.probes) if setup.probes else None
        if probe is not None:
            probe.check_allowed()
        figures = _measure(setup, namespace, worker_children, api_children, loaders, schema, probe)
        _say(
            setup.progress,
            f"  {label}: {figures['events_per_s']:,} events/s end to end"
            f" ({figures['seconds']:.2f} s, load answered in {figures['load_seconds']:.2f} s);"
            f" CPU µs/event {figures['cpu_us_per_event']}",
        )
        figures["workers"] = workers
        figures["worker_counters"] = _worker_counters(setup, namespace, figures["events_committed"])
        return figures
    finally:
        for child in reversed(children):
            child.stop()


def _component_command(
    component: str, options: dict[str, Any], profile: Path | None = None
) -> list[str]:
    """The child's arguments running ``component`` (``serve`` or ``worker``) with
    ``options``: ``-m meterline <component> --<name> <value>...``, as an operator runs it;
    with ``profile``, the same library call under ``_profiled``, writing to ``profile``."""
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


def _readline(child: _Child, timeout_s: float) -> str:
    """The child's next stdout line (stripped), or "" if none came within ``timeout_s``."""
    result: list[bytes] = []
    stdout = child.process.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return result[0].decode().strip() if result else ""


def _worker_counters(setup: _Setup, namespace: str, total: int) -> dict[str, int]:
    """The workers' own counters once they report every event applied (they report each
    second; given up after ``COUNTERS_WAIT_S``): applied, duplicates, conflicts."""
    deadline = time.monotonic() + COUNTERS_WAIT_S
    while True:
        totals = dict.fromkeys(("events_applied", "duplicates", "conflicts"), 0)
        with contextlib.suppress(Exception):
            for row in _workers(setup, namespace):
                for name in totals:
                    totals[name] += int(row.get(name, 0))
        if totals["events_applied"] >= total or time.monotonic() > deadline:
            return totals
        time.sleep(0.25)


def _applied_events(row: dict[str, Any]) -> int:
    """How many events a worker's live engine applied (each partition's sequences are
    gap-free from 1, so the heads of the partitions it owns add up to that count)."""
    applied = row.get("live_applied") or []
    owned = row.get("partitions") or range(len(applied))
    return sum(int(applied[p]) for p in owned if p < len(applied))


def _live_caught_up(setup: _Setup, namespace: str, workers: list[_Child], total: int) -> bool:
    """Whether the workers' live engines, together, report every event applied (each
    through the last event of the partitions it owns)."""
    for child in workers:
        child.check_alive("a worker")
    try:
        rows = _workers(setup, namespace)
    except Exception:
        return False
    # each partition's sequences are its own: the workers' shares add up to the total
    return len(rows) >= len(workers) and sum(_applied_events(row) for row in rows) >= total


def _measure(
    setup: _Setup,
    namespace: str,
    workers: list[_Child],
    apis: list[_Child],
    loaders: list[_Child],
    schema: str,
    probe: KillSwitchProbe | None = None,
) -> dict[str, Any]:
    """Start the load (and the kill-switch probes and the lock sampler), wait until the
    ledger holds every event (throughput), then until the live engines applied them all
    (CPU, their work included)."""
    events = setup.events
    with psycopg.connect(setup.schemas.url, autocommit=True, connect_timeout=10) as connection:
        connection.execute(f'SET search_path TO "{schema}"')
        mine = {(connection.info.backend_pid)}
        components = [
            _Component("api", lambda s: _with_descendants(s, [c.pid for c in apis])),
            _Component("nats", lambda s: _with_descendants(s, [setup.nats.pid])),
            _Component("worker", lambda s: _with_descendants(s, [c.pid for c in workers])),
        ]
        backends: set[int] = set()

        def postgresql(snapshot: Snapshot) -> set[int]:
            return (backends | _postmasters(snapshot)) & (_postgres_pids(snapshot) - mine)

        def postgresql_all(snapshot: Snapshot) -> set[int]:
            return _postgres_pids(snapshot) - mine

        components.append(_Component("postgresql", postgresql, lambda pid: pid in backends))
        components.append(_Component("postgresql_all", postgresql_all))

        head = connection.cursor()

        def committed() -> int:
            return event_count(head)

        if committed() != 0:
            raise RuntimeError("the benchmark ledger is not empty before the load")
        backends = _benchmark_backends(connection)
        sampler = LockSampler(setup.schemas.url, _APPLICATION)
        sampler.start()
        if sampler.backend_pid is not None:
            mine.add(sampler.backend_pid)
        load_before = os.getloadavg()[0]
        before = _snapshot()
        started = time.perf_counter()
        for loader in loaders:
            assert loader.process.stdin is not None
            loader.process.stdin.write(b"go\n")
            loader.process.stdin.flush()
        if probe is not None:
            probe.load_running = lambda: any(loader.alive() for loader in loaders)
            probe.start()

        def total() -> int:
            return events + (probe.events_sent if probe is not None else 0)

        def probing() -> bool:
            return probe is not None and probe.alive()

        deadline = started + max(DRAIN_TIMEOUT_MIN_S, events / DRAIN_RATE_FLOOR)
        load_done: float | None = None
        count = 0
        while True:
            count = committed()
            now = time.perf_counter()
            if count >= total() and not probing():
                break
            if load_done is None and not any(loader.alive() for loader in loaders):
                load_done = now
                failed = [loader for loader in loaders if loader.process.returncode != 0]
                if failed:
                    raise RuntimeError(f"a load generator failed: {failed[0].tail()}")
            for child in (*workers, *apis):
                child.check_alive("a worker or an API replica")
            if now > deadline:
                raise RuntimeError(
                    f"only {count:,} of {events:,} events committed after {now - started:.0f} s"
                )
            time.sleep(POLL_S)
        finished = time.perf_counter()
        backends |= _benchmark_backends(connection)
        at_commit = _snapshot()
        lock_waits = sampler.stop()
        kill_switch = probe.finish(STOP_TIMEOUT_S) if probe is not None else None
        expected = total()
        live_seconds: float | None = None
        with contextlib.suppress(RuntimeError):
            _wait_for(
                lambda: _live_caught_up(setup, namespace, workers, expected),
                "the live engines",
                LIVE_TIMEOUT_S,
            )
            live_seconds = time.perf_counter() - finished
        backends |= _benchmark_backends(connection)
        after = _snapshot() if live_seconds is not None else at_commit
        ended = time.perf_counter() if live_seconds is not None else finished
        load_after = os.getloadavg()[0]
        stored_count = event_count(connection)
    results = [_loader_result(loader) for loader in loaders]
    if load_done is None:
        load_done = started + max(result["seconds"] for result in results)
    accepted = sum(result["accepted"] for result in results)
    if accepted != events or stored_count != expected or count != expected:
        raise RuntimeError(
            f"{accepted:,} of {events:,} load events accepted; {stored_count:,} stored, head"
            f" {count:,}: expected {expected:,} (with the probes')"
        )
    seconds = finished - started
    load_cpu = sum(result["cpu_seconds"] for result in results)
    cpu = {c.name: _cpu_seconds(before, after, c) for c in components}
    cpu["load"] = load_cpu
    cpu_at_commit = {c.name: _cpu_seconds(before, at_commit, c) for c in components}
    cpu_at_commit["load"] = load_cpu
    return {
        "events_per_s": int(expected / seconds),
        "seconds": round(seconds, 3),
        "load_seconds": round(max(result["seconds"] for result in results), 3),
        "drain_seconds": round(max(0.0, finished - load_done), 3),
        "events_committed": stored_count,
        "events_sent": accepted + expected - events,
        "probe_events": expected - events,
        "retried_batches": sum(result["retries"] for result in results),
        "refused_batches": sum(result["refusals"] for result in results),
        "live_seconds": None if live_seconds is None else round(live_seconds, 3),
        "cpu_us_per_event": {name: round(value * 1e6 / expected, 2) for name, value in cpu.items()},
        "cpu_us_per_event_at_last_commit": {
            name: round(value * 1e6 / expected, 2) for name, value in cpu_at_commit.items()
        },
        "cpu_cores_busy": {
            name: round(value / (ended - started), 2) for name, value in cpu.items()
        },
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        "lock_waits": lock_waits,
        "kill_switch": kill_switch,
    }


def _loader_result(loader: _Child) -> dict[str, Any]:
    try:
        loader.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            "a load generator did not finish after every event was committed"
        ) from None
    assert loader.process.stdout is not None
    output = loader.process.stdout.read().decode().strip().splitlines()
    if loader.process.returncode != 0 or not output:
        raise RuntimeError(f"a load generator failed: {loader.tail()}")
    result: dict[str, Any] = json.loads(output[-1])
    if result["failures"]:
        raise RuntimeError(f"a load generator's batches failed: {result['failures']}")
    return result


# -- the whole run -----------------------------------------------------------------------------


def _profile_top(path: Path, events: int) -> dict[str, list[dict[str, Any]]]:
    import pstats

    stats = pstats.Stats(str(path))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (calls, _, tottime, cumtime, _) in table.items():
        short = filename
        for marker in ("/site-packages/", "/src/", "/lib/python3"):
            if marker in filename:
                short = filename.split(marker, 1)[1]
                break
        rows.append(
            {
                "function": f"{short}:{line}({function})",
                "calls": calls,
                "tottime_s": round(tottime, 3),
                "cumtime_s": round(cumtime, 3),
                "tottime_us_per_event": round(tottime * 1e6 / events, 2),
                "cumtime_us_per_event": round(cumtime * 1e6 / events, 2),
            }
        )
    by = {
        "by_internal_time": sorted(rows, key=lambda row: -row["tottime_s"])[:PROFILE_TOP],
        "by_cumulative_time": sorted(rows, key=lambda row: -row["cumtime_s"])[:PROFILE_TOP],
    }
    return by


def _print_profile(progress: Any, component: str, top: dict[str, list[dict[str, Any]]]) -> None:
    if progress is None:
        return
    from rich.table import Table

    for ordering, rows in top.items():
        table = Table(
            "function", "calls", "tottime s", "cumtime s", "µs/event (tot)",
            title=f"{component} profile (CPU), {ordering.replace('_', ' ')}",
        )  # fmt: skip
        for row in rows:
            table.add_row(
                row["function"],
                f"{row['calls']:,}",
                str(row["tottime_s"]),
                str(row["cumtime_s"]),
                str(row["tottime_us_per_event"]),
            )
        progress.print(table)


def _notable(line: str) -> bool:
    """Whether a child's log line is worth reporting (not blank, not info or debug)."""
    if not line.strip():
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return True
    return not (isinstance(record, dict) and record.get("level") in ("debug", "info"))


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Make SIGTERM unwind like Ctrl-C while the benchmark runs (cleanup included)."""

    def interrupt(_number: int, _frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


QUICK = {"events": 10_000, "partitions": (1, 2), "workers": (1, 2), "probes": 3}
"""``--quick`` (the test): fewer, smaller runs."""
WRITER_EVENTS = 150_000
"""Prepared events each partition writer builds (it stops after ``writer_seconds``)."""
WRITER_EVENTS_QUICK = 6_000
WRITER_SECONDS = 3.0
WRITER_SECONDS_QUICK = 1.0
COMPONENTS = ("api", "nats", "worker", "postgresql")
"""The path's components: their CPU per event adds up to ``cpu_us_per_event_path``."""


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _floor_bodies(events: int, batch: int) -> list[bytes]:
    """The load generators' batches (their shares, their prefixes, stamped like theirs)."""
    now_us = system_clock_us()
    end_us = now_us - 2_000_000
    span_us = max(0, min(INGEST_SPAN_US, end_us - _month_start_us(now_us)))
    encoder = msgspec.json.Encoder()
    bodies = []
    for number, share in enumerate(_load_shares(events, LOAD_PROCESSES)):
        share_events = _retimed(synthetic_events(share, prefix=f"s{number}"), end_us, span_us)
        bodies += [encoder.encode(share_events[n : n + batch]) for n in range(0, share, batch)]
    return bodies


def _writers_run(
    setup: _Setup, writers: int, events: int, batch: int, seconds: float
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
            children.append(_Child(_python(*command), log, pipes=True))
        for child in children:
            if _readline(child, READY_TIMEOUT_S * 2) != "ready":
                raise RuntimeError(f"a partition writer did not get ready: {child.tail()}")
        for child in children:
            assert child.process.stdin is not None
            child.process.stdin.write(b"go\n")
            child.process.stdin.flush()
        each = []
        for child in children:
            line = _readline(child, seconds + READY_TIMEOUT_S)
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


def _two_writers(setup: _Setup, quick: bool, batch: int) -> dict[str, Any]:
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


def _pooled_kill_switch(runs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    from meterline.bench.controls import _quantiles

    latencies = [ms for run in runs if run["kill_switch"] for ms in run["kill_switch"]["ms"]]
    if not latencies:
        return {"probes": 0}
    p50, p99 = _quantiles(latencies, 1.0, 1)
    return {
        "probes": len(latencies),
        "kill_switch_ms_p50": p50,
        "kill_switch_ms_p99": p99,
        "kill_switch_ms_max": round(max(latencies), 1),
    }


def _parse_counts(value: str | Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(value, str):
        try:
            counts = tuple(int(part) for part in value.split(",") if part.strip())
        except ValueError:
            raise ValueError(f"{name}: comma-separated counts, like 1,2,8") from None
    else:
        counts = tuple(value)
    if not counts or min(counts) < 1:
        raise ValueError(f"{name}: at least one count, each >= 1")
    return counts


def run_scale_benchmark(
    events: int | None = None,
    partitions: str | Sequence[int] = (1, 2, 8),
    batch: int = 1000,
    progress: Any = None,
    api_replicas: int = API_REPLICAS,
    profile: bool = False,
    postgres_url: str = POSTGRES_URL,
    workers: str | Sequence[int] = (1, 2),
    quick: bool = False,
    probes: int | None = None,
    writers: bool = True,
    command: str | None = None,
    streams: int = 1,
) -> dict[str, Any]:
    """Run every configuration (partitions x workers; a configuration with more workers
    than partitions is skipped: a partition has one worker), the floor, the partition
    writers and (with ``profile``) the profiled run; return the figures (see the module
    docstring)."""
    if events is None:
        events = QUICK["events"] if quick else 200_000  # type: ignore[assignment]
    assert events is not None
    partition_counts = _parse_counts(partitions, "partitions")
    worker_counts = _parse_counts(workers, "workers")
    if probes is None:
        probes = QUICK["probes"] if quick else 10  # type: ignore[assignment]
    assert probes is not None
    if events < LOAD_PROCESSES or batch < 1 or api_replicas < 1 or probes < 0 or streams < 1:
        raise ValueError(
            f"events must be at least {LOAD_PROCESSES}; batch, api_replicas and streams >= 1;"
            " probes >= 0"
        )

    def say(message: str) -> None:
        _say(progress, message)

    result: dict[str, Any] = {
        "command": command or "meterline bench scale",
        "quick": quick,
        "events": events,
        "partition_counts": list(partition_counts),
        "worker_counts": list(worker_counts),
        "batch": batch,
        "api_replicas": api_replicas,
        "load_processes": LOAD_PROCESSES,
        "load_connections": LOAD_PROCESSES * LOAD_CONNECTIONS,
        "kill_switch_probes": probes,
        "streams": streams,
        "lag_max_ms": os.environ.get("METERLINE_LAG_MAX_MS", str(LAG_MAX_MS_DEFAULT)),
    }
    with (
        _terminate_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="meterline-bench-scale-") as folder,
        contextlib.ExitStack() as cleanup,
    ):
        root = Path(folder)
        schemas = _Schemas(postgres_url)
        cleanup.callback(schemas.drop_all)
        result["machine"] = {
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "python": platform.python_version(),
            "postgresql": _postgres_version(postgres_url),
            "nats_server": _nats_version(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        }
        say(f"starting nats-server ({result['machine']['nats_server']}) with JetStream")
        nats, nats_url = _start_nats(root, root / "nats-server.log")
        cleanup.callback(nats.stop)
        base = _Setup(
            root, nats, nats_url, schemas, events, partition_counts[0], batch, api_replicas,
            progress, probes=probes, streams=streams,
        )  # fmt: skip
        base.logs.append(root / "nats-server.log")
        runs: dict[str, dict[str, Any]] = {}
        skipped: list[dict[str, Any]] = []
        for count in partition_counts:
            setup = replace(base, partitions=count)
            for workers_count in worker_counts:
                label = f"p{count}_w{workers_count}"
                if workers_count > count:
                    skipped.append(
                        {
                            "label": label,
                            "partitions": count,
                            "workers": workers_count,
                            "reason": "each partition has exactly one worker",
                        }
                    )
                    continue
                say(
                    f"{label}: {events:,} events, {count} partition(s), {workers_count}"
                    f" worker(s), batches of {batch}, {api_replicas} API replica(s),"
                    f" {LOAD_PROCESSES} load processes x {LOAD_CONNECTIONS} connections,"
                    f" {probes} kill-switch probes"
                )
                gc.collect()
                run = _run_configuration(setup, label, workers_count)
                run["partitions"] = count
                runs[label] = run
        say("floor: decode + canonical encoding + leaf hash + binary COPY, one process")
        _, floor_location = schemas.create()
        floor = run_floor(floor_location, _floor_bodies(events, batch))
        result["floor"] = floor
        say(f"  floor: {floor['floor_events_per_s']:,} events/s, {floor['floor_us_per_event']} µs")
        if writers:
            say("partition writers fed prepared batches: 1 process, then 2")
            result["two_writers"] = _two_writers(base, quick, batch)
            say(f"  {json.dumps({k: v for k, v in result['two_writers'].items() if k != 'runs'})}")
        if profile:
            setup = replace(base, partitions=max(partition_counts), probes=0)
            say("1 worker and the API under cProfile (CPU time, every thread): what bounds it")
            profiles = root / "profiles"
            profiles.mkdir()
            profiled = _run_configuration(setup, "profiled", 1, profile_dir=profiles)
            result["events_per_s_profiled"] = profiled["events_per_s"]
            for component in ("worker", "api"):
                path = profiles / f"{component}-0.prof"
                _wait_for(path.exists, f"the {component}'s profile", STOP_TIMEOUT_S)
                top = _profile_top(path, events)
                keep = os.environ.get("METERLINE_BENCH_KEEP_PROFILES")
                if keep:  # for a closer look with pstats
                    Path(keep).mkdir(parents=True, exist_ok=True)
                    shutil.copy(path, Path(keep) / path.name)
                _print_profile(progress, component, top)
                result[f"{component}_profile"] = top
        log_lines = [
            f"{log.stem}: {line}"
            for log in base.logs
            if log.exists() and log.stem != "nats-server"
            for line in log.read_text(errors="replace").splitlines()
            if _notable(line)
        ]
    floor_us = result["floor"]["floor_us_per_event"]
    configurations = []
    for label, run in runs.items():
        path_us = round(sum(run["cpu_us_per_event"][name] for name in COMPONENTS), 2)
        run["cpu_us_per_event_path"] = path_us
        run["events_per_s_per_partition"] = int(run["events_per_s"] / run["partitions"])
        run["ratio_to_floor"] = round(path_us / floor_us, 2)
        configurations.append(
            {
                "label": label,
                "partitions": run["partitions"],
                "workers": run["workers"],
                "events_per_s": run["events_per_s"],
                "events_per_s_per_partition": run["events_per_s_per_partition"],
                "cpu_us_per_event": {
                    name: run["cpu_us_per_event"][name]
                    for name in (*COMPONENTS, "load", "postgresql_all")
                },
                "cpu_us_per_event_path": path_us,
                "ratio_to_floor": run["ratio_to_floor"],
                "lock_wait_samples": run["lock_waits"]["lock_wait_samples"],
                "lock_wait_fraction_of_active": run["lock_waits"]["lock_wait_fraction_of_active"],
                "kill_switch_ms_p50": (run["kill_switch"] or {}).get("kill_switch_ms_p50"),
                "kill_switch_ms_p99": (run["kill_switch"] or {}).get("kill_switch_ms_p99"),
                "refused_batches": run["refused_batches"],
                "retried_batches": run["retried_batches"],
                "probe_refusals": (run["kill_switch"] or {}).get("probe_refusals"),
                "events_sent": run["events_sent"],
                "events_committed": run["events_committed"],
            }
        )
    result["configurations"] = configurations
    result["skipped"] = skipped
    result["kill_switch"] = _pooled_kill_switch(runs.values())
    # the figures of issue 7, for the largest partition count measured with 1 and 2 workers
    most = max(run["partitions"] for run in runs.values())
    one, two = runs.get(f"p{most}_w1"), runs.get(f"p{most}_w2")
    if one is not None:
        result["partitions"] = most
        result["events_per_s_1_worker"] = one["events_per_s"]
        result["cpu_us_per_event"] = {"1_worker": one["cpu_us_per_event"]}
        result["bound_by"] = max(COMPONENTS, key=lambda name: one["cpu_us_per_event"][name])
        if two is not None:
            result["events_per_s_2_workers"] = two["events_per_s"]
            result["scaling"] = round(two["events_per_s"] / one["events_per_s"], 3)
            result["cpu_us_per_event"]["2_workers"] = two["cpu_us_per_event"]
    result["runs"] = runs
    result["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["log_lines"] = len(log_lines)
    result["log_excerpt"] = log_lines[:LOG_EXCERPT_LINES]
    return result


# -- child entry points ------------------------------------------------------------------------


class _Answer(msgspec.Struct):
    accepted: int = 0


def _load(
    url: str,
    token: str,
    count: int,
    batch: int,
    connections: int,
    prefix: str,
    end_us: int,
    span_us: int,
) -> None:
    """A load generator: pre-encode ``count`` events in batches, print ``ready``, wait for
    ``go`` on stdin, post every batch over ``connections`` keep-alive connections (a 429
    of the ingest lag bound or a 503 is posted again after ``retry_pause_s``: counted in
    ``refusals`` and ``retries``), then print one JSON line with what it measured."""
    import http.client

    events = _retimed(synthetic_events(count, prefix=prefix), end_us, span_us)
    encoder = msgspec.json.Encoder()
    bodies = [encoder.encode(events[n : n + batch]) for n in range(0, count, batch)]
    del events
    gc.collect()
    gc.freeze()
    address = urlsplit(url)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    decoder = msgspec.json.Decoder(_Answer)
    accepted = [0] * connections
    retries = [0] * connections
    refusals = [0] * connections
    failures: list[str] = []

    def send(number: int) -> None:
        connection = http.client.HTTPConnection(
            address.hostname or "127.0.0.1", address.port, timeout=60
        )
        try:
            for body in bodies[number::connections]:
                attempt = 0
                while True:
                    connection.request("POST", "/v1/events", body, headers)
                    response = connection.getresponse()
                    data = response.read()
                    if response.status in RETRY_STATUSES:
                        attempt += 1
                        retries[number] += 1
                        refusals[number] += response.status == 429
                        time.sleep(retry_pause_s(response.getheader("Retry-After"), data, attempt))
                        continue
                    break
                if response.status not in (200, 202):
                    failures.append(f"{response.status}: {data[:300]!r}")
                    return
                accepted[number] += decoder.decode(data).accepted
        except Exception as error:
            failures.append(repr(error))
        finally:
            connection.close()

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    threads = [threading.Thread(target=send, args=(n,)) for n in range(connections)]
    cpu_started, started = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    answer = {
        "accepted": sum(accepted),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "retries": sum(retries),
        "refusals": sum(refusals),
        "failures": failures[:3],
    }
    print(json.dumps(answer), flush=True)


def _serve_profiled(db: str, port: int, stream: str, namespace: str, streams: int) -> None:
    """What ``meterline serve`` runs, in stream mode (the lag bound from
    METERLINE_LAG_MAX_MS, as the command reads it)."""
    from meterline.api.server import serve
    from meterline.core.admission import parse_lag_bound

    lag = parse_lag_bound(os.environ.get("METERLINE_LAG_MAX_MS", str(LAG_MAX_MS_DEFAULT)))
    serve(db, port=port, stream=stream, namespace=namespace, streams=streams, lag_max_ms=lag)


def _work_profiled(
    db: str, stream: str, namespace: str, streams: int, partitions: str, name: str
) -> None:
    """What ``meterline worker`` runs: a worker service until SIGTERM."""
    from meterline.logs import configure_logging
    from meterline.stream.service import WorkerService

    configure_logging("meterline-worker")
    WorkerService.open(db, stream, partitions, name, namespace, 1, streams).run()


_PROFILED_COMPONENTS: dict[str, Callable[..., None]] = {
    "serve": _serve_profiled,
    "worker": _work_profiled,
}
"""What ``_profiled`` can run, by the name ``_profiling`` gives it."""


def _profiled(output: str, component: str, options: str) -> None:
    """Run ``component`` (a ``_PROFILED_COMPONENTS`` name) with ``options`` (JSON) under
    cProfile, every thread included, timing CPU (each thread's own ``thread_time``:
    waiting for I/O, a lock or the interpreter costs nothing), and write the merged
    statistics to ``output`` when it returns."""
    run = _PROFILED_COMPONENTS[component]
    arguments = json.loads(options)
    import cProfile
    import pstats

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def new_profile() -> cProfile.Profile:
        profiler = cProfile.Profile(time.thread_time_ns, 1e-9)
        with lock:
            profiles.append(profiler)
        return profiler

    def start_thread_profile(*_: object) -> None:
        new_profile().enable()  # replaces this hook for the thread

    # SIGTERM ends the command by its own handlers (the worker's loop, uvicorn's), which
    # re-raise it once done: ignore that last one so the profile is written
    signal.signal(signal.SIGTERM, lambda _number, _frame: None)
    threading.setprofile(start_thread_profile)
    main = new_profile()
    main.enable()
    try:
        run(**arguments)
    finally:
        main.disable()
        threading.setprofile(None)
        with lock:
            stats = pstats.Stats(profiles[0])
            for profiler in profiles[1:]:
                with contextlib.suppress(Exception):
                    stats.add(profiler)
        temporary = f"{output}.partial"
        stats.dump_stats(temporary)
        os.replace(temporary, output)


def _main(argv: list[str]) -> None:
    command, *args = argv
    if command == "load":
        url, token, count, batch, connections, prefix, end_us, span_us = args
        _load(
            url, token, int(count), int(batch), int(connections), prefix, int(end_us), int(span_us)
        )
    elif command == "profile":
        output, component, options = args
        _profiled(output, component, options)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])

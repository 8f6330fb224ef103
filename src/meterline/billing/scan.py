"""One pass over the ledger feeding raters: the I/O half of rating.

Each ``RatingJob`` is one customer's billing period, rated with the events whose time
falls in the period and that are inside the cut ``through`` (``core.cuts``: the
ledger's heads when the invoice was, or is being, made: later arrivals are late events,
handled by adjustments). ``run_jobs`` reads the events of every job in a single scan in
ledger order, decodes only the properties of each body, exactly (non-integers become
``Decimal``), and hands them to the job's ``Rater``. A body that does not decode (a row
written behind the ledger's back) is the rater's unbillable usage (``undecodable``), never
the end of the scan.

A large scan over several customers (a period close) is spread over processes: the
customers are dealt round-robin into ``scan_workers()`` shares; this process rates the
first share while helper processes (``python -c``, not ``multiprocessing``, so no caller's
``__main__`` is re-imported) each open their own read connection on the same file, rate
theirs and send back each rater's state (``Rater.export_state``). A customer's jobs stay
in one share and every share reads in ledger order (partition, then sequence: a customer
is one partition), so each rater sees exactly the events,
in exactly the order, the single scan would give it: the results are identical (tested
byte for byte on invoices). The ledger is append-only, so a helper's later read sees every
row inside ``through``. If a helper fails, its share is rated here instead.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import islice
from typing import Any

import msgspec

from meterline.core.cuts import Cut
from meterline.core.model import Configuration, Segment
from meterline.core.partitions import partition_of
from meterline.core.periods import BillingPeriod
from meterline.core.rating import Rater, RaterState
from meterline.ledger.database import Connection, PostgresConnection, open_connection
from meterline.ledger.event_reads import scan_rows

SCAN_BATCH_ROWS = 50_000
"""Rows fetched from SQLite per round trip, and rated customer by customer (~20 MB):
10,000 measured ~12% slower with 500 customers, 100,000 no faster."""

PARALLEL_SCAN_MIN_EVENTS = 500_000
"""A scan spans at least this many ledger events (over every partition) before it is
spread over processes (a helper costs ~0.3 s to start)."""

SCAN_WORKERS_MAX = 4
"""At most this many processes per scan: each one's SQLite scan still walks every row."""

SCAN_WORKERS_ENV = "METERLINE_SCAN_WORKERS"
"""Environment variable overriding ``scan_workers()`` (``1`` keeps every scan in-process)."""

_SQL_VARIABLES_MAX = 30_000
"""Customers per share past which a share cannot be named in one query (SQLite's limit
is 32,766 variables); such scans stay in one process."""

_log = logging.getLogger(__name__)


class _Body(msgspec.Struct, gc=False):
    # gc=False: a body holds only decoded JSON (no cycles), so the collector need not
    # track the millions a close makes.
    properties: dict[str, Any] = {}


BODY_DECODER = msgspec.json.Decoder(_Body, float_hook=Decimal)
"""Decodes a stored event body to what rating reads (its properties, exact decimals);
the live engine decodes appended bodies with it too."""


@dataclass
class RatingJob:
    customer: str
    period: BillingPeriod
    segments: list[Segment]
    through: Cut
    """The events rated are inside this cut (the ledger's heads at the close or draft)."""
    configuration: Configuration
    after: Cut | None = None
    """Only events outside this cut count (adjustments rate just late events)."""
    keep_events: bool = False
    cuts: tuple[int, ...] | None = None
    """Window edges for credit burn-down (``Rater(cuts=...)``); None: no windows."""
    also_meters: frozenset[str] = frozenset()
    """Unpriced meters to measure too (the cost-only meters of unit economics)."""
    rater: Rater = field(init=False)
    days: dict[tuple[int, str, tuple[str | None, ...]], Any] | None = field(
        default=None, init=False
    )
    """Set when the rater came from buckets (``billing.buckets``): each line's events per
    local day, which the rater (keeping no members) cannot tell."""

    @property
    def partition(self) -> int:
        """The customer's partition: every event this job rates is in it."""
        return partition_of(self.customer, self.through.partitions)

    def bounds(self) -> tuple[int, int]:
        """``(after head, through head)`` in the customer's partition: an event of it
        counts when ``after head < sequence <= through head``."""
        partition = self.partition
        low = 0 if self.after is None else self.after.head(partition)
        return low, self.through.head(partition)

    def __post_init__(self) -> None:
        if self.after is not None and self.after.partitions != self.through.partitions:
            raise ValueError("a job's after and through cuts must name the same partitions")
        self.rater = Rater(
            self.configuration,
            self.segments,
            self.keep_events,
            self.cuts,
            also_meters=self.also_meters,
            semantics=self.configuration.semantics_for(self.customer),
        )


def scan_workers() -> int:
    """Processes a large scan may use: ``METERLINE_SCAN_WORKERS`` if set, else the CPUs
    this process may run on (at most ``SCAN_WORKERS_MAX``)."""
    configured = os.environ.get(SCAN_WORKERS_ENV, "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            _log.warning("%s=%r is not a number; using 1", SCAN_WORKERS_ENV, configured)
            return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, SCAN_WORKERS_MAX))


def run_jobs(connection: Connection, jobs: Iterable[RatingJob]) -> None:
    """Feed every job its events in one ledger scan (spread over processes when large)."""
    by_customer: dict[str, list[RatingJob]] = {}
    for job in jobs:
        if job.segments:
            by_customer.setdefault(job.customer, []).append(job)
    if not by_customer:
        return
    workers = min(scan_workers(), len(by_customer))
    if workers > 1 and _worth_spreading(by_customer, workers):
        path = _database_file(connection)
        if path is not None and sys.executable:
            _run_spread(connection, path, by_customer, workers)
            return
    _scan(connection, by_customer)


def _worth_spreading(by_customer: dict[str, list[RatingJob]], workers: int) -> bool:
    all_jobs = [job for group in by_customer.values() for job in group]
    through, after = _span(all_jobs)
    span = through.events - (0 if after is None else after.events)
    return (
        span >= PARALLEL_SCAN_MIN_EVENTS
        and not any(job.keep_events for job in all_jobs)
        and len(by_customer) <= _SQL_VARIABLES_MAX * workers
    )


def _span(jobs: list[RatingJob]) -> tuple[Cut, Cut | None]:
    """The smallest cut holding every job's events and the largest cut every job's
    ``after`` includes (None when a job has no ``after``)."""
    through = jobs[0].through
    for job in jobs[1:]:
        through = through.union(job.through)
    afters = [job.after for job in jobs]
    if any(after is None for after in afters):
        return through, None
    after = afters[0]
    assert after is not None
    for other in afters[1:]:
        assert other is not None
        after = after.intersection(other)
    return through, after


def _database_file(connection: Connection) -> str | None:
    """The file (or PostgreSQL URL) behind ``connection``'s main database (None for memory
    or temp ones)."""
    if isinstance(connection, PostgresConnection):
        return connection.url
    for _, name, file in connection.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return file or None
    return None


def _scan(
    connection: Connection,
    by_customer: dict[str, list[RatingJob]],
    share: bool = False,
) -> None:
    """One scan feeding the jobs of ``by_customer``; with ``share``, the query names those
    customers (the rest of the ledger belongs to other processes)."""
    all_jobs = [job for group in by_customer.values() for job in group]
    start = min(job.period.start_us for job in all_jobs)
    end = max(job.period.end_us for job in all_jobs)
    through, after = _span(all_jobs)
    customers = list(by_customer) if share or len(by_customer) == 1 else None
    source = scan_rows(connection, through, after, start, end, customers)
    decode = BODY_DECODER.decode
    # Per customer, each job's bounds and bound ``Rater.add``, looked up once per event.
    targets: dict[str, list[tuple[int, int, int, int, Any, Any]]] = {
        customer: [
            (
                job.period.start_us,
                job.period.end_us,
                *job.bounds(),
                job.rater.add,
                job.rater.refuse,
            )
            for job in group
        ]
        for customer, group in by_customer.items()
    }
    while rows := list(islice(source, SCAN_BATCH_ROWS)):
        # Rate one customer's rows of the batch after another (each in ledger order): a
        # customer's raters stay in the CPU cache across its rows instead of being
        # evicted by the next row's customer; with hundreds of customers interleaved
        # this is ~40% of the rating time (measured).
        buckets: dict[str, list[Any]] = {}
        for row in rows:
            bucket = buckets.get(row[1])
            if bucket is None:
                buckets[row[1]] = [row]
            else:
                bucket.append(row)
        for customer, bucket in buckets.items():
            group = targets.get(customer)
            if group is None:
                continue
            if len(group) == 1:
                # ``low < sequence <= high``: inside the job's cut and past its ``after``,
                # in the customer's partition (``RatingJob.bounds``).
                start, end, low, high, add, refuse = group[0]
                for sequence, _, event_type, timestamp_us, body, event_hash in bucket:
                    if start <= timestamp_us < end and low < sequence <= high:
                        try:
                            properties = decode(body).properties
                        except msgspec.MsgspecError as error:
                            refuse(sequence, event_type, "undecodable", _undecodable(error))
                            continue
                        add(sequence, timestamp_us, event_type, properties, event_hash)
                continue
            for sequence, _, event_type, timestamp_us, body, event_hash in bucket:
                decoded: dict[str, Any] | None = None
                problem = None
                for start, end, low, high, add, refuse in group:
                    if start <= timestamp_us < end and low < sequence <= high:
                        if decoded is None and problem is None:
                            try:
                                decoded = decode(body).properties
                            except msgspec.MsgspecError as error:
                                problem = _undecodable(error)
                        if problem is not None:
                            refuse(sequence, event_type, "undecodable", problem)
                            continue
                        add(sequence, timestamp_us, event_type, decoded, event_hash)


def _undecodable(error: Exception) -> str:
    return f"the stored event does not decode ({error})"[:200]


# -- spreading a scan over processes ------------------------------------------------------

_JobSpec = tuple[
    str,
    BillingPeriod,
    list[Segment],
    tuple[int, ...],
    Configuration,
    tuple[int, ...] | None,
    bool,
    tuple[int, ...] | None,
]
"""What a helper needs to rebuild a job: customer, period, segments, through and after
cuts' heads, configuration (shared objects are pickled once)."""


_HELPER_CODE = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]);"
    " from meterline.billing.scan import _helper; _helper()"
)


class _Helper:
    """One helper process rating one share; ``result`` waits for its raters' states."""

    def __init__(self, path: str, share: dict[str, list[RatingJob]]) -> None:
        self.share = share
        specs: list[_JobSpec] = [
            (
                job.customer,
                job.period,
                job.segments,
                job.through.heads,
                job.configuration,
                None if job.after is None else job.after.heads,
                job.keep_events,
                job.cuts,
            )
            for group in share.values()
            for job in group
        ]
        self._request = pickle.dumps((path, specs), protocol=pickle.HIGHEST_PROTOCOL)
        self._output: tuple[bytes, bytes] | None = None
        self._error: BaseException | None = None
        # The helper starts as any interpreter does (site, .pth files), then takes this
        # process's import path, as multiprocessing's spawn does, to import this module.
        self._process = subprocess.Popen(
            [sys.executable, "-c", _HELPER_CODE, json.dumps(sys.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Exchange in a thread: the request may exceed a pipe's buffer, and this process
        # has its own share to rate meanwhile.
        self._thread = threading.Thread(target=self._exchange, daemon=True)
        self._thread.start()

    def _exchange(self) -> None:
        try:
            self._output = self._process.communicate(self._request)
        except BaseException as error:  # reported by result()
            self._error = error

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._thread.join()

    def result(self) -> list[RaterState]:
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"scan helper failed: {self._error}")
        assert self._output is not None
        stdout, stderr = self._output
        if self._process.returncode != 0:
            detail = stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(
                f"scan helper exited with {self._process.returncode}: "
                + (detail[-1] if detail else "no message")
            )
        try:
            states: list[RaterState] = pickle.loads(stdout)
        except Exception as error:
            raise RuntimeError(f"scan helper sent an unreadable answer ({error})") from None
        if len(states) != sum(len(group) for group in self.share.values()):
            raise RuntimeError("scan helper answered for the wrong number of jobs")
        return states


def _run_spread(
    connection: Connection,
    path: str,
    by_customer: dict[str, list[RatingJob]],
    workers: int,
) -> None:
    shares = _deal(by_customer, workers)
    helpers: list[_Helper] = []
    try:
        for share in shares[1:]:
            try:
                helpers.append(_Helper(path, share))
            except OSError as error:
                _log.warning("could not start a scan helper (%s); rating its share here", error)
                _scan(connection, share, share=True)
        _scan(connection, shares[0], share=True)
    except BaseException:
        for helper in helpers:
            helper.stop()
        raise
    for helper in helpers:
        try:
            states = helper.result()
        except RuntimeError as error:
            _log.warning("%s; rating its share here", error)
            _scan(connection, helper.share, share=True)
            continue
        jobs = [job for group in helper.share.values() for job in group]
        for job, state in zip(jobs, states, strict=True):
            job.rater.import_state(state)


def _deal(
    by_customer: dict[str, list[RatingJob]], workers: int
) -> list[dict[str, list[RatingJob]]]:
    """``workers`` shares of the customers: whole partitions dealt round-robin when the
    customers span at least as many partitions as there are shares (each share's scan then
    reads only its partitions), else customers dealt round-robin."""
    shares: list[dict[str, list[RatingJob]]] = [{} for _ in range(workers)]
    by_partition: dict[int, list[str]] = {}
    for customer, group in by_customer.items():
        by_partition.setdefault(group[0].partition, []).append(customer)
    if len(by_partition) >= workers:
        for position, partition in enumerate(sorted(by_partition)):
            for customer in by_partition[partition]:
                shares[position % workers][customer] = by_customer[customer]
        return shares
    for position, (customer, group) in enumerate(by_customer.items()):
        shares[position % workers][customer] = group
    return shares


def _helper() -> None:
    """A helper process: read (path, job specs) pickled on stdin, rate them in one scan
    of the named customers, write their raters' states pickled on stdout."""
    path, specs = pickle.loads(sys.stdin.buffer.read())
    by_customer: dict[str, list[RatingJob]] = {}
    for customer, period, segments, through, configuration, after, keep, cuts in specs:
        job = RatingJob(
            customer,
            period,
            segments,
            Cut(through),
            configuration,
            None if after is None else Cut(after),
            keep,
            cuts,
        )
        by_customer.setdefault(customer, []).append(job)
    connection = open_connection(path)
    try:
        _scan(connection, by_customer, share=True)
    finally:
        connection.close()
    states = [job.rater.export_state() for group in by_customer.values() for job in group]
    sys.stdout.buffer.write(pickle.dumps(states, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()

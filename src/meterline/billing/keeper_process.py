"""The rated-usage buckets' keeper in a process of its own:
``python -m meterline.billing.keeper_process FD PARENT_PID BATCH_ROWS IDLE_S BACKLOG_MAX``
(the store's location comes as the first message on ``FD``, never on the command line:
a PostgreSQL URL may hold a password, and every user of the machine sees arguments).

Why a process: a fold costs several times an append's CPU per event (BENCHMARKS.md,
issue 20). A ``bucket_keeper.BucketKeeper`` thread beside the appends shares their
interpreter lock, so it has to wait for them to pause, and under sustained ingest it
either falls behind or takes its share of ingest's throughput. In a process of its own
it folds on the second core, with its own connection to the store, what is committed
(at the thread's pace, ``KeeperPace``: it holds no lock of the ingesting interpreter).

Each batch's buckets and watermark are written in one transaction (``buckets.catch_up``,
at most ``CATCH_UP_BATCH_ROWS`` events a batch); on SQLite it takes the writer of the
bucket file (``LEDGER.db-buckets``, ``ledger.bucket_records``), never the ledger's, so
appends do not wait for it; on PostgreSQL row locks only. The keeper reports how long
each held its lock (``KeeperProcess.held``). What it still shares with the appends is
the machine: a core, and the disk the ledger's commits sync to.

Invariants:

- It folds only what is committed (the ledger's cut, read from the store), and writes
  each batch's rows with the watermark in one transaction: a keeper killed at any point
  (SIGKILL) loses nothing and counts nothing twice; the next catch-up (a read, or the
  next keeper) folds from the watermark.
- It never outlives its parent: it stops when the parent says ``stop``, when the
  parent's end of the connection closes, or when its parent process is gone (it is
  re-parented), whichever it sees first, after the batch in hand.
- If it dies, ``KeeperProcess`` starts another after ``RESTART_PAUSE_S``; meanwhile
  every read still catches up first, so reads stay exact.

Messages (pickled tuples on ``multiprocessing.connection``): from the parent
``("open", location)`` first, then ``("nudge",)`` (new events: look now) and
``("stop",)``; to the parent ``("ready",)`` once the store is open, and
``("stopped", folded, held)`` (events folded, the seconds each batch's write
transaction held the lock) when told to stop.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from meterline.billing.bucket_keeper import (
    KEEPER_BACKLOG_MAX_EVENTS,
    KEEPER_IDLE_S,
    BucketKeeper,
)
from meterline.billing.buckets import CATCH_UP_BATCH_ROWS
from meterline.billing.context import BillingContext

_log = logging.getLogger(__name__)

__all__ = [
    "KEEPER_PROCESS_BATCH_ROWS",
    "KEEPER_PROCESS_INTERVAL_S",
    "KEEPER_START_TIMEOUT_S",
    "KEEPER_STOP_TIMEOUT_S",
    "PARENT_CHECK_S",
    "RESTART_PAUSE_S",
    "KeeperPace",
    "KeeperProcess",
    "run_keeper",
    "start_keeper_process",
]

KEEPER_PROCESS_INTERVAL_S = 0.1
"""How often the keeper process looks at the ledger when nothing nudges it (the server
does not nudge it; a look reads two small rows), so it sees appends stop within this."""

KEEPER_PROCESS_BATCH_ROWS = CATCH_UP_BATCH_ROWS
"""Events the keeper process folds per write transaction. Not fewer: a transaction
writes a page for every bucket line it touches, however few rows it adds, so smaller ones
held the lock longer per event in all (2,000 events: ~3x per event at 1,000 customers)
and folded half as fast (BENCHMARKS.md, "The keeper in a process of its own", measured
when that lock was the ledger's)."""

KEEPER_START_TIMEOUT_S = 60.0
"""How long the keeper process may take to open the store before its parent gives up."""

KEEPER_STOP_TIMEOUT_S = 60.0
"""How long ``KeeperProcess.stop`` waits for the keeper to finish its batch in hand
and exit before it kills it (a killed keeper loses nothing: see the module)."""

PARENT_CHECK_S = 0.5
"""How often the keeper process checks that its parent still runs."""

RESTART_PAUSE_S = 1.0
"""After the keeper process died, wait this long before starting another."""


@dataclass(frozen=True, slots=True)
class KeeperPace:
    """How a keeper process folds: at most ``batch_rows`` events a write transaction;
    once the ledger stood still ``idle_s``, or while appends go on past ``backlog_max``
    events behind (``BucketKeeper``'s; 0 and 0: as soon as anything is committed). By
    default as the thread: the fold takes neither the appends' interpreter nor (SQLite)
    their file's writer, but it does take a core and the disk, so a burst up to the bound
    is folded in the pause after it."""

    batch_rows: int = KEEPER_PROCESS_BATCH_ROWS
    idle_s: float = KEEPER_IDLE_S
    backlog_max: int = KEEPER_BACKLOG_MAX_EVENTS

    def arguments(self) -> list[str]:
        return [str(self.batch_rows), repr(self.idle_s), str(self.backlog_max)]

    @classmethod
    def parse(cls, arguments: list[str]) -> KeeperPace:
        batch_rows, idle_s, backlog_max = arguments
        return cls(int(batch_rows), float(idle_s), int(backlog_max))


def run_keeper(
    db: str, connection: Connection, parent_pid: int, pace: KeeperPace | None = None
) -> None:
    """Keep the buckets of the ledger at ``db`` current at ``pace``, until the parent
    (``parent_pid``, at the other end of ``connection``) says stop or is gone."""
    pace = pace or KeeperPace()
    from meterline.billing.service import open_billing

    with open_billing(db, create=False) as billing:
        keeper = BucketKeeper(
            billing.context,
            interval_s=KEEPER_PROCESS_INTERVAL_S,
            idle_s=pace.idle_s,
            backlog_max=pace.backlog_max,
            batch_rows=pace.batch_rows,
        )
        keeper.start()
        connection.send(("ready",))
        told_to_stop = _serve(connection, keeper, parent_pid)
        keeper.stop()
        if told_to_stop:
            connection.send(("stopped", keeper.folded, list(keeper.held)))
        connection.close()


def _serve(connection: Connection, keeper: BucketKeeper, parent_pid: int) -> bool:
    """Pass the parent's nudges on until it says stop (True) or is gone (False)."""
    while True:
        if not connection.poll(PARENT_CHECK_S):
            if os.getppid() != parent_pid:
                return False  # re-parented: the parent died
            continue
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return False  # the parent's end closed
        if message[0] == "stop":
            return True
        keeper.nudge()


class KeeperProcess:
    """The parent's side of a keeper process over the ledger at ``db``, folding at
    ``pace`` (see the module): ``start`` it, ``nudge`` it, ``stop`` it; restarted when
    it dies."""

    def __init__(self, db: str, pace: KeeperPace | None = None) -> None:
        self.db = db
        self.pace = pace or KeeperPace()
        self.folded = 0
        """Events the keeper folded (known once it stopped)."""
        self.held: list[float] = []
        """The seconds its batches' write transactions held the lock (once stopped)."""
        self.restarts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> KeeperProcess:
        """Start the keeper and wait until it has opened the store."""
        self._spawn()
        self._watcher = threading.Thread(
            target=self._watch, name="meterline-keeper-watch", daemon=True
        )
        self._watcher.start()
        return self

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "meterline.billing.keeper_process",
                    str(theirs.fileno()),
                    str(os.getpid()),
                    *self.pace.arguments(),
                ],
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        connection = Connection(ours.detach())
        try:
            connection.send(("open", self.db))  # the location: not an argument (see above)
            ready = connection.poll(KEEPER_START_TIMEOUT_S) and connection.recv() == ("ready",)
        except (EOFError, OSError):
            ready = False
        if not ready:
            process.kill()
            process.wait()
            connection.close()
            raise RuntimeError("the bucket keeper process did not start")
        with self._lock:
            self._process, self._connection = process, connection

    def _watch(self) -> None:
        """Start another keeper whenever this one dies (until ``stop``)."""
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            process.wait()
            if self._stopping.is_set():
                return
            _log.warning("rated-usage buckets: the keeper process exited (%s)", process.returncode)
            if self._stopping.wait(RESTART_PAUSE_S):
                return
            try:
                self._spawn()
                self.restarts += 1
            except Exception:
                _log.exception("rated-usage buckets: the keeper process could not restart")

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def nudge(self) -> None:
        """Tell the keeper new events were committed (it looks now)."""
        self._send(("nudge",))

    def _send(self, message: tuple[Any, ...]) -> bool:
        with self._lock:
            connection = self._connection
            if connection is None:
                return False
            try:
                connection.send(message)
            except OSError:
                return False  # it died: the watcher restarts it
        return True

    def stop(self) -> None:
        """Stop the keeper after its batch in hand (killed if it takes too long)."""
        self._stopping.set()
        process, connection = self._process, self._connection
        if process is None or connection is None:
            return
        try:
            if self._send(("stop",)) and connection.poll(KEEPER_STOP_TIMEOUT_S):
                kind, folded, held = connection.recv()
                if kind == "stopped":
                    self.folded, self.held = folded, held
        except (EOFError, OSError):
            pass  # it died meanwhile
        try:
            process.wait(KEEPER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with self._lock:
            connection.close()
            self._connection = None
        if self._watcher is not None:
            self._watcher.join(timeout=KEEPER_STOP_TIMEOUT_S)


def start_keeper_process(context: BillingContext) -> KeeperProcess | None:
    """A running ``KeeperProcess`` over ``context``'s ledger when it keeps buckets; None
    otherwise."""
    if not context.keeps_buckets:
        return None
    return KeeperProcess(str(context.store.path)).start()


def main(argv: list[str]) -> None:
    descriptor, parent_pid, *pace = argv
    logging.basicConfig(level=logging.WARNING, format="meterline-keeper: %(message)s")
    connection = Connection(int(descriptor))
    kind, db = connection.recv()  # ("open", location): first, from the parent
    if kind != "open":
        raise SystemExit(f"meterline-keeper: expected the store's location, got {kind!r}")
    run_keeper(db, connection, int(parent_pid), KeeperPace.parse(pace))


if __name__ == "__main__":
    main(sys.argv[1:])

"""``meterline keeper``: the one fold of a ledger's rated-usage buckets, run as a
component of its own beside the stream workers.

The buckets (``billing.buckets``) are a projection of the ledger, not part of committing
it: a stream worker commits and decides, and one keeper per ledger folds what is
committed, in its own process (its own interpreter and core, its own connections).
Before, every worker ran a ``BucketKeeper`` thread that its commits nudged, and that
fold cost the workers 7-17 µs of CPU per event (BENCHMARKS.md, issue 17).

Invariants:

- At most one keeper folds a ledger at a time: it folds only while it holds the
  ledger's keeper lock, taken on a connection of its own. On PostgreSQL that is a
  session advisory lock keyed by (schema, ``KEEPER_LOCK``) (``ledger.database``'s
  scheme: ledgers in other schemas of the same database have their own); on SQLite an
  exclusive ``flock`` of ``<ledger file>.keeper``. Any number of keepers may be started
  (one per machine, for availability): the others wait, trying every
  ``KEEPER_LOCK_RETRY_S``, and one of them takes over once the holder's session ends,
  stopped or killed (a SIGKILLed client's socket closes, and PostgreSQL ends its session
  and releases its locks; the kernel drops a dead process's ``flock``).
- A keeper checks its lock connection every ``KEEPER_LOCK_CHECK_S``; if it broke (a
  server restart ends the session and its lock), it stops folding after the batch in
  hand and waits for the lock again.
- It folds only what is committed, each batch's buckets with their watermark in one
  transaction (``billing.buckets.catch_up``, through ``BucketKeeper``): killed anywhere,
  it loses nothing and counts nothing twice; its successor folds on from the watermark.
- Nothing depends on it for exactness: every read of the buckets catches up first, so
  with no keeper running reads are exact, only slower (they fold the backlog first).
- It is not nudged by the workers (they do not know it): it looks at the ledger's cut
  every ``KEEPER_PROCESS_INTERVAL_S`` (two small rows) and folds at ``KeeperPace``'s
  pace (once the ledger stood still, or past the backlog bound, a full batch at a time).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from meterline.billing.bucket_keeper import BucketKeeper
from meterline.billing.buckets import keep_buckets_if_wanted
from meterline.billing.keeper_process import KEEPER_PROCESS_INTERVAL_S, KeeperPace
from meterline.ledger.database import PostgresConnection, WriteLock
from meterline.ledger.location import is_postgres

__all__ = [
    "KEEPER_LOCK",
    "KEEPER_LOCK_CHECK_S",
    "KEEPER_LOCK_RETRY_S",
    "LedgerKeeper",
    "lock_holder",
]

KEEPER_LOCK = WriteLock("bucket-keeper")
"""The name of a ledger's keeper lock (PostgreSQL: a session advisory lock on this key,
in the ledger's schema)."""

KEEPER_LOCK_RETRY_S = 0.5
"""How often a waiting keeper tries the lock: how soon it takes over after the holder
died (plus the server's noticing the dead session, immediate on a closed socket)."""

KEEPER_LOCK_CHECK_S = 1.0
"""How often the holder checks that its lock connection still works."""

_log = logging.getLogger(__name__)


class _Lock(Protocol):
    def try_take(self) -> bool: ...

    def connected(self) -> bool: ...

    def close(self) -> None: ...


class _PostgresLock:
    """The keeper lock of a PostgreSQL ledger: a session advisory lock on a connection
    used for nothing else."""

    def __init__(self, db: str) -> None:
        self._connection = PostgresConnection(db)
        self._key = self._connection.lock_key(KEEPER_LOCK)

    def try_take(self) -> bool:
        row = self._connection.raw.execute(
            "SELECT pg_try_advisory_lock(%s)", (self._key,)
        ).fetchone()
        return bool(row and row[0])

    def connected(self) -> bool:
        try:
            self._connection.raw.execute("SELECT 1").fetchone()
        except Exception:
            return False  # the session (and its lock) is gone
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._connection.close()  # the session ends: the lock is released


class _FileLock:
    """The keeper lock of a SQLite ledger: an exclusive ``flock`` of a file beside it."""

    def __init__(self, db: str) -> None:
        self._file: IO[bytes] = Path(f"{db}.keeper").open("ab")  # noqa: SIM115 (held open)

    def try_take(self) -> bool:
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def connected(self) -> bool:
        return True  # a file lock lasts as long as the open file

    def close(self) -> None:
        self._file.close()  # releases the lock


def _open_lock(db: str) -> _Lock:
    return _PostgresLock(db) if is_postgres(db) else _FileLock(db)


@dataclass
class LedgerKeeper:
    """The one keeper of the ledger at ``db`` (see the module): ``run`` until ``stop``
    is set. ``holding`` is set while it holds the lock; ``folded`` counts the events it
    folded; ``terms`` how many times it took the lock."""

    db: str
    pace: KeeperPace = field(default_factory=KeeperPace)
    retry_s: float = KEEPER_LOCK_RETRY_S
    check_s: float = KEEPER_LOCK_CHECK_S
    holding: threading.Event = field(default_factory=threading.Event)
    folded: int = 0
    terms: int = 0

    def run(self, stop: threading.Event) -> None:
        """Wait for the lock, fold while holding it, and again after losing it, until
        ``stop`` is set (the batch in hand is finished first)."""
        while not stop.is_set():
            try:
                lock = _open_lock(self.db)
            except Exception as error:  # the store is unreachable: try again
                _log.warning("keeper: cannot open the keeper lock", extra={"error": repr(error)})
                stop.wait(self.retry_s)
                continue
            try:
                if not self._wait_for(lock, stop):
                    continue  # stopped, or the lock connection broke: a new one
                self.terms += 1
                self.holding.set()
                _log.info("keeper: holding the ledger's keeper lock; folding")
                self._fold_while_held(lock, stop)
            except Exception:  # the store went away mid-term: a new term once it is back
                _log.exception("keeper: folding stopped")
            finally:
                self.holding.clear()
                lock.close()
            if not stop.is_set():
                _log.warning("keeper: released the keeper lock; waiting for it again")
                stop.wait(self.retry_s)

    def _wait_for(self, lock: _Lock, stop: threading.Event) -> bool:
        """Whether ``lock`` was taken (False: stopped, or its connection broke)."""
        announced = False
        while not stop.is_set():
            try:
                if lock.try_take():
                    return True
            except Exception:
                return False  # the connection broke
            if not announced:
                _log.info("keeper: another keeper folds this ledger; waiting to take over")
                announced = True
            if not lock.connected():
                return False
            stop.wait(self.retry_s)
        return False

    def _fold_while_held(self, lock: _Lock, stop: threading.Event) -> None:
        from meterline.billing.service import open_billing

        with open_billing(self.db, create=False) as billing:
            context = billing.context
            if not keep_buckets_if_wanted(context):
                _log.warning("keeper: METERLINE_BUCKETS is off: nothing to fold")
                stop.wait()
                return
            keeper = BucketKeeper(
                context,
                interval_s=KEEPER_PROCESS_INTERVAL_S,
                idle_s=self.pace.idle_s,
                backlog_max=self.pace.backlog_max,
                batch_rows=self.pace.batch_rows,
            )
            keeper.start()
            try:
                while not stop.wait(self.check_s):
                    if not lock.connected() or not keeper.is_alive():
                        break
            finally:
                keeper.stop()
                self.folded += keeper.folded


def lock_holder(db: str) -> int | None:
    """PostgreSQL: the backend process id of the session holding ``db``'s keeper lock
    (None: no keeper folds it now). For ``meterline bench scale`` and the tests."""
    connection = PostgresConnection(db)
    try:
        key = connection.lock_key(KEEPER_LOCK) & 0xFFFF_FFFF_FFFF_FFFF
        row = connection.raw.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1",
            (key >> 32, key & 0xFFFF_FFFF),
        ).fetchone()
    finally:
        connection.close()
    return None if row is None else int(row[0])

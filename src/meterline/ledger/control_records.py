"""Control records beside the events in the same SQLite file, append-only like them.

Tables:

- ``control_firings``: each crossing that fired: customer, policy, level, the crossing's
  ordinal (1 for the first crossing of that level, 2 after it re-armed and crossed again),
  the time, the ledger sequence whose batch caused it, the observed values and the actions.
  ``UNIQUE (customer, policy, level, ordinal)`` is what makes a firing happen once: two
  engines (or a restart racing a retry) that decide the same crossing insert one row.
- ``control_rearms``: a fired level whose condition cleared (the next crossing fires).
- ``control_action_results``: what each action of a firing did (a block, an invoice id,
  a grant id, a webhook delivery), one row per (firing, action): on restart, the actions
  of a firing without a result are run again (each action is idempotent by firing id).
- ``control_overrides``: finance's manual actions: ``unblock``, ``extend`` (a limit) and
  ``grant`` (credits), with who, why and when.

Triggers refuse UPDATE and DELETE on all of them.

Locks (PostgreSQL; SQLite has one writer per file): a customer's records are written
under that customer's ``control-customer`` lock, so two engines recording the same
customer serialize (the second finds the first's firing through the UNIQUE constraint
and adopts it) while records of different customers, hence of different partitions,
never wait for each other. A batch takes its customers' locks in ascending order at its
start. Action results are keyed by their firing (one engine acts on a firing: the one
that recorded it) and take no lock. Overrides also hold ``override-numbers``: engines
poll them by number (``poll_overrides``: those past the last seen), so they must commit
in number order; an override is a person's action, never per event.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meterline.ledger.append_only import append_only_triggers
from meterline.ledger.database import (
    WriteLock,
    open_connection,
    rows_of,
    take_locks,
    write_transaction,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS control_firings (
    firing_number INTEGER PRIMARY KEY,
    customer TEXT NOT NULL,
    policy TEXT NOT NULL,
    kind TEXT NOT NULL,
    level TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    at_us INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    observed TEXT NOT NULL,
    actions TEXT NOT NULL,
    UNIQUE (customer, policy, level, ordinal)
);
CREATE TABLE IF NOT EXISTS control_rearms (
    rearm_number INTEGER PRIMARY KEY,
    customer TEXT NOT NULL,
    policy TEXT NOT NULL,
    level TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    at_us INTEGER NOT NULL,
    observed TEXT NOT NULL,
    UNIQUE (customer, policy, level, ordinal)
);
CREATE TABLE IF NOT EXISTS control_action_results (
    firing_number INTEGER NOT NULL,
    action TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    PRIMARY KEY (firing_number, action)
);
CREATE TABLE IF NOT EXISTS control_overrides (
    override_number INTEGER PRIMARY KEY,
    customer TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('unblock', 'extend', 'grant')),
    policy TEXT,
    amount TEXT,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    detail TEXT NOT NULL
);
"""
_TABLES = ("control_firings", "control_rearms", "control_action_results", "control_overrides")
_TRIGGERS = append_only_triggers(_TABLES, "a decision is never edited")
CUSTOMER_LOCK = "control-customer"
"""The ``WriteLock`` purpose of one customer's control records (keyed by the customer)."""
OVERRIDE_NUMBERS = WriteLock("override-numbers")
"""Held while an override is numbered and stored (see the module docstring)."""
FIRING_ID_FORMAT = "F-{:06d}"
OVERRIDE_ID_FORMAT = "O-{:06d}"


@dataclass(frozen=True, slots=True)
class StoredFiring:
    number: int
    customer: str
    policy: str
    kind: str
    level: str
    ordinal: int
    at_us: int
    sequence: int
    observed: dict[str, str]
    actions: tuple[str, ...]

    @property
    def firing_id(self) -> str:
        return FIRING_ID_FORMAT.format(self.number)


@dataclass(frozen=True, slots=True)
class StoredRearm:
    customer: str
    policy: str
    level: str
    ordinal: int
    at_us: int
    observed: dict[str, str]


@dataclass(frozen=True, slots=True)
class StoredOverride:
    number: int
    customer: str
    kind: str
    policy: str | None
    amount: str | None
    reason: str
    actor: str
    at_us: int
    detail: dict[str, Any]

    @property
    def override_id(self) -> str:
        return OVERRIDE_ID_FORMAT.format(self.number)


def _firing(row: tuple[Any, ...]) -> StoredFiring:
    number, customer, policy, kind, level, ordinal, at, sequence, observed, actions = row
    return StoredFiring(
        number,
        customer,
        policy,
        kind,
        level,
        ordinal,
        at,
        sequence,
        json.loads(observed),
        tuple(json.loads(actions)),
    )


def _customer_lock(customer: str) -> WriteLock:
    return WriteLock(CUSTOMER_LOCK, customer)


class ControlStore:
    """Firings, re-arms, action results and overrides in the ledger's file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._connection = open_connection(self.path)
        self._lock = threading.RLock()
        self._locked: set[str] | None = None
        """The customers locked by this thread's open batch (None: no batch open)."""
        with self._lock:
            self._connection.executescript(_SCHEMA + _TRIGGERS)

    @contextmanager
    def batch(self, customers: Iterable[str] = ()) -> Iterator[None]:
        """Every write inside is one transaction: one commit (one fsync, one hold of the
        file's write lock on SQLite, which ingest waits for) for all the records of a
        controller cycle, instead of one per record. ``customers``: whose records it
        writes, locked at once in ascending order (PostgreSQL; a customer written without
        being named is locked when written). Nothing inside is durable until the block
        ends; an exception rolls all of it back. Other threads' writes wait for the end."""
        with self._lock:
            if self._locked is not None:
                yield  # already inside this thread's batch
                return
            named = sorted(set(customers))
            with write_transaction(self._connection, *map(_customer_lock, named)):
                self._locked = set(named)
                try:
                    yield
                finally:
                    self._locked = None

    def _write(
        self,
        statement: str,
        parameters: tuple[Any, ...],
        key: str,
        customer: str | None,
        *more: WriteLock,
    ) -> int | None:
        """Run one INSERT in its own transaction (or the batch this thread has open),
        holding ``customer``'s lock, then ``more``; its ``key`` column, or None when a
        UNIQUE constraint refused it (``ON CONFLICT DO NOTHING``: a refusal aborts
        nothing, on SQLite or PostgreSQL)."""
        statement += f" ON CONFLICT DO NOTHING RETURNING {key}"
        locks = () if customer is None else (_customer_lock(customer),)
        with self._lock:
            if self._locked is not None:
                # the lock is re-entrant: only the batch's own thread gets here mid-batch.
                if customer is not None and customer not in self._locked:
                    take_locks(self._connection, *locks)
                    self._locked.add(customer)
                take_locks(self._connection, *more)
                row = self._connection.execute(statement, parameters).fetchone()
                return None if row is None else int(row[0])
            with write_transaction(self._connection, *locks) as connection:
                take_locks(connection, *more)  # after the customer's, as in a batch
                row = connection.execute(statement, parameters).fetchone()
            return None if row is None else int(row[0])

    def add_firing(
        self,
        customer: str,
        policy: str,
        kind: str,
        level: str,
        ordinal: int,
        at_us: int,
        sequence: int,
        observed: dict[str, str],
        actions: tuple[str, ...],
    ) -> StoredFiring | None:
        """Record a crossing; None when that crossing (same ordinal) was recorded already."""
        number = self._write(
            "INSERT INTO control_firings (customer, policy, kind, level, ordinal, at_us,"
            " sequence, observed, actions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                customer,
                policy,
                kind,
                level,
                ordinal,
                at_us,
                sequence,
                json.dumps(observed, sort_keys=True),
                json.dumps(list(actions)),
            ),
            "firing_number",
            customer,
        )
        if number is None:
            return None
        return StoredFiring(
            number, customer, policy, kind, level, ordinal, at_us, sequence, observed, actions
        )

    def add_rearm(
        self,
        customer: str,
        policy: str,
        level: str,
        ordinal: int,
        at_us: int,
        observed: dict[str, str],
    ) -> bool:
        return (
            self._write(
                "INSERT INTO control_rearms (customer, policy, level, ordinal, at_us, observed)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (customer, policy, level, ordinal, at_us, json.dumps(observed, sort_keys=True)),
                "rearm_number",
                customer,
            )
            is not None
        )

    def add_result(
        self, firing_number: int, action: str, at_us: int, outcome: dict[str, Any]
    ) -> bool:
        return (
            self._write(
                "INSERT INTO control_action_results (firing_number, action, at_us, outcome)"
                " VALUES (?, ?, ?, ?)",
                (firing_number, action, at_us, json.dumps(outcome, sort_keys=True, default=str)),
                "firing_number",
                None,
            )
            is not None
        )

    def add_override(
        self,
        customer: str,
        kind: str,
        policy: str | None,
        amount: str | None,
        reason: str,
        actor: str,
        at_us: int,
        detail: dict[str, Any],
    ) -> StoredOverride:
        number = self._write(
            "INSERT INTO control_overrides (customer, kind, policy, amount, reason, actor,"
            " at_us, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (customer, kind, policy, amount, reason, actor, at_us, json.dumps(detail, default=str)),
            "override_number",
            customer,
            OVERRIDE_NUMBERS,
        )
        assert number is not None
        return StoredOverride(number, customer, kind, policy, amount, reason, actor, at_us, detail)

    def firings(self, customer: str | None = None) -> list[StoredFiring]:
        with self._lock:
            rows = rows_of(
                self._connection, "SELECT * FROM control_firings", "firing_number", customer
            )
        return [_firing(row) for row in rows]

    def rearms(self, customer: str | None = None) -> list[StoredRearm]:
        select = "SELECT customer, policy, level, ordinal, at_us, observed FROM control_rearms"
        with self._lock:
            rows = rows_of(self._connection, select, "rearm_number", customer)
        return [
            StoredRearm(row[0], row[1], row[2], row[3], row[4], json.loads(row[5])) for row in rows
        ]

    def results(self) -> dict[tuple[int, str], dict[str, Any]]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT firing_number, action, outcome FROM control_action_results"
            ).fetchall()
        return {(number, action): json.loads(outcome) for number, action, outcome in rows}

    def overrides(self, customer: str | None = None) -> list[StoredOverride]:
        query = (
            "SELECT override_number, customer, kind, policy, amount, reason, actor, at_us,"
            " detail FROM control_overrides"
        )
        with self._lock:
            rows = rows_of(self._connection, query, "override_number", customer)
        return [
            StoredOverride(
                row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], json.loads(row[8])
            )
            for row in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._connection.close()

"""Outgoing webhooks' storage, in the ledger's SQLite file beside the events.

Tables: ``webhook_endpoints`` (where to send, which kinds, the signing secret; disabled,
never deleted), ``webhook_deliveries`` (one work item per endpoint and event: the exact
bytes that are signed and sent, its status and schedule) and ``webhook_attempts`` (every
try, append-only: triggers refuse UPDATE and DELETE). A delivery is a mutable work item;
what happened to it is the attempt log. ``UNIQUE (endpoint_id, event_id)`` makes
publishing an event twice a no-op, across processes too. Every write is one transaction
under the store's lock, so a delivery claimed for sending and its attempt's outcome are
each all or nothing.

Locks (PostgreSQL; SQLite has one writer per file): an endpoint's deliveries are one
ordered queue, numbered in the order they commit, so ``add_deliveries`` and
``disable_endpoint`` hold that endpoint's ``webhook-endpoint`` lock (a publish to
another endpoint does not wait, and a disabled endpoint never gets a new pending
delivery). ``claim_due`` locks the rows it claims (``FOR UPDATE SKIP LOCKED``: two
claimers never take the same delivery and never wait for each other); an attempt's
outcome and a requeue rewrite one delivery row. Nothing here waits for the event
append, the control records or billing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from meterline.ledger.database import (
    Connection,
    PostgresConnection,
    WriteLock,
    take_locks,
)
from meterline.ledger.record_store import RecordStore

DeliveryStatus = Literal["pending", "delivered", "failed"]
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = ("pending", "delivered", "failed")
DELIVERIES_PAGE_MAX = 1000
"""Most deliveries one listing returns."""
ENDPOINT_LOCK = "webhook-endpoint"
"""The ``WriteLock`` purpose of one endpoint's queue (keyed by the endpoint id)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    endpoint_number INTEGER PRIMARY KEY,
    endpoint_id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    kinds TEXT NOT NULL,
    secret TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    disabled_at_us INTEGER
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    delivery_number INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL UNIQUE,
    endpoint_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at_us INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_us INTEGER,
    last_status_code INTEGER,
    last_error TEXT,
    delivered_at_us INTEGER,
    attempts_at_requeue INTEGER NOT NULL DEFAULT 0,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending
    ON webhook_deliveries (endpoint_id, delivery_number) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS webhook_attempts (
    attempt_row INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    attempt_number INTEGER NOT NULL,
    at_us INTEGER NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_by_delivery
    ON webhook_attempts (delivery_id, attempt_number);
CREATE TRIGGER IF NOT EXISTS webhook_attempts_append_only_update
BEFORE UPDATE ON webhook_attempts
BEGIN SELECT RAISE(ABORT, 'webhook_attempts are append-only: the log is never edited'); END;
CREATE TRIGGER IF NOT EXISTS webhook_attempts_append_only_delete
BEFORE DELETE ON webhook_attempts
BEGIN SELECT RAISE(ABORT, 'webhook_attempts are append-only: the log is never edited'); END;
"""

_ENDPOINT_COLUMNS = "endpoint_id, url, kinds, description, created_at_us, disabled_at_us"
_DELIVERY_COLUMNS = (
    "delivery_id, endpoint_id, kind, event_id, body, created_at_us, status, attempts,"
    " next_attempt_at_us, last_status_code, last_error, delivered_at_us, attempts_at_requeue"
)
_ATTEMPT_COLUMNS = "delivery_id, attempt_number, at_us, status_code, error, duration_us"
# The oldest pending delivery of each enabled endpoint, if it is due: one endpoint's
# deliveries go out in creation order, so a later one waits while an earlier one retries.
_DUE_HEADS = f"""
SELECT {", ".join("d." + column.strip() for column in _DELIVERY_COLUMNS.split(","))}
FROM webhook_deliveries AS d
JOIN webhook_endpoints AS e ON e.endpoint_id = d.endpoint_id AND e.disabled_at_us IS NULL
WHERE d.delivery_number IN (
    SELECT MIN(delivery_number) FROM webhook_deliveries
    WHERE status = 'pending' GROUP BY endpoint_id
) AND d.next_attempt_at_us <= ?
ORDER BY d.delivery_number
LIMIT ?
"""
_CLAIM_ROWS = " FOR UPDATE OF d SKIP LOCKED"
"""PostgreSQL: the due heads a concurrent claim holds are skipped, not waited for."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where deliveries go. Its signing secret is not here: ``WebhookStore.secret``."""

    endpoint_id: str
    url: str
    kinds: tuple[str, ...]
    description: str
    created_at_us: int
    disabled_at_us: int | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_at_us is None

    def subscribes_to(self, kind: str) -> bool:
        return "*" in self.kinds or kind in self.kinds


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event owed to one endpoint: the exact bytes sent, and where it stands."""

    delivery_id: str
    endpoint_id: str
    kind: str
    event_id: str
    body: bytes
    created_at_us: int
    status: DeliveryStatus
    attempts: int
    next_attempt_at_us: int | None
    last_status_code: int | None
    last_error: str | None
    delivered_at_us: int | None
    attempts_at_requeue: int = 0
    """``attempts`` when it was last redelivered by hand: the retry schedule restarts there."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a delivery: the HTTP status it got, or the error that stopped it."""

    delivery_id: str
    attempt_number: int
    at_us: int
    status_code: int | None
    error: str | None
    duration_us: int


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What to record after an attempt: the attempt, and the delivery's next state."""

    attempt: Attempt
    status: DeliveryStatus
    next_attempt_at_us: int | None


def _endpoint_lock(endpoint_id: str) -> WriteLock:
    return WriteLock(ENDPOINT_LOCK, endpoint_id)


def _endpoint(row: tuple[Any, ...]) -> Endpoint:
    endpoint_id, url, kinds, description, created, disabled = row
    return Endpoint(
        endpoint_id, url, tuple(msgspec.json.decode(kinds)), description, created, disabled
    )


def _delivery(row: tuple[Any, ...]) -> Delivery:
    delivery_id, endpoint_id, kind, event_id, body, created, status, attempts = row[:8]
    next_at, last_status_code, last_error, delivered, attempts_at_requeue = row[8:]
    return Delivery(
        delivery_id,
        endpoint_id,
        kind,
        event_id,
        body.encode() if isinstance(body, str) else bytes(body),
        created,
        status,
        attempts,
        next_at,
        last_status_code,
        last_error,
        delivered,
        attempts_at_requeue,
    )


class WebhookStore(RecordStore):
    """Webhook endpoints, deliveries and their attempt log in the ledger's file."""

    schema = _SCHEMA

    def _rows(self, query: str, parameters: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._connection.execute(query, parameters).fetchall())

    # -- endpoints ---------------------------------------------------------------------------

    def add_endpoint(self, endpoint: Endpoint, secret: str) -> None:
        with self._writing() as connection:
            connection.execute(
                f"INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS}, secret)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    endpoint.endpoint_id,
                    endpoint.url,
                    msgspec.json.encode(list(endpoint.kinds)).decode(),
                    endpoint.description,
                    endpoint.created_at_us,
                    endpoint.disabled_at_us,
                    secret,
                ),
            )

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        rows = self._rows(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = ?",
            (endpoint_id,),
        )
        return _endpoint(rows[0]) if rows else None

    def endpoints(self, enabled_only: bool = False) -> list[Endpoint]:
        """Endpoints in creation order (all, or only those not disabled)."""
        where = " WHERE disabled_at_us IS NULL" if enabled_only else ""
        rows = self._rows(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints{where} ORDER BY endpoint_number"
        )
        return [_endpoint(row) for row in rows]

    def secret(self, endpoint_id: str) -> str | None:
        """The endpoint's signing secret: the one place it is read back."""
        rows = self._rows(
            "SELECT secret FROM webhook_endpoints WHERE endpoint_id = ?", (endpoint_id,)
        )
        return str(rows[0][0]) if rows else None

    def disable_endpoint(self, endpoint_id: str, at_us: int) -> Endpoint | None:
        """Disable an endpoint (idempotent) and fail its pending deliveries, atomically;
        None if there is no such endpoint."""
        with self._writing(_endpoint_lock(endpoint_id)) as connection:
            connection.execute(
                "UPDATE webhook_endpoints SET disabled_at_us = ?"
                " WHERE endpoint_id = ? AND disabled_at_us IS NULL",
                (at_us, endpoint_id),
            )
            connection.execute(
                "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at_us = NULL,"
                " last_error = 'endpoint disabled' WHERE endpoint_id = ? AND status = 'pending'",
                (endpoint_id,),
            )
            row = connection.execute(
                f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = ?",
                (endpoint_id,),
            ).fetchone()
        return None if row is None else _endpoint(row)

    # -- deliveries --------------------------------------------------------------------------

    def add_deliveries(
        self,
        kind: str,
        event_id: str,
        body: bytes,
        created_at_us: int,
        new_id: Callable[[], str],
    ) -> tuple[list[str], int]:
        """One pending delivery of ``body``, due at once, per enabled endpoint subscribed
        to ``kind`` that does not have this event yet. Returns the deliveries of the event
        to those endpoints (in endpoint order) and how many of them are new."""
        delivery_ids, created = [], 0
        with self._writing() as connection:
            subscribed = self._subscribed(connection, kind)
            if subscribed:
                # the queues written, locked; then read again: one may have been disabled
                locked = {endpoint.endpoint_id for endpoint in subscribed}
                take_locks(connection, *map(_endpoint_lock, sorted(locked)))
                subscribed = [
                    endpoint
                    for endpoint in self._subscribed(connection, kind)
                    if endpoint.endpoint_id in locked
                ]
            for endpoint in subscribed:
                cursor = connection.execute(
                    f"INSERT OR IGNORE INTO webhook_deliveries ({_DELIVERY_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, NULL, NULL, NULL, 0)",
                    (
                        new_id(),
                        endpoint.endpoint_id,
                        kind,
                        event_id,
                        body,
                        created_at_us,
                        created_at_us,
                    ),
                )
                created += cursor.rowcount
                row = connection.execute(
                    "SELECT delivery_id FROM webhook_deliveries"
                    " WHERE endpoint_id = ? AND event_id = ?",
                    (endpoint.endpoint_id, event_id),
                ).fetchone()
                delivery_ids.append(row[0])
        return delivery_ids, created

    @staticmethod
    def _subscribed(connection: Connection, kind: str) -> list[Endpoint]:
        """The enabled endpoints subscribed to ``kind``, in creation order."""
        rows = connection.execute(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints"
            " WHERE disabled_at_us IS NULL ORDER BY endpoint_number"
        ).fetchall()
        return [e for e in map(_endpoint, rows) if e.subscribes_to(kind)]

    def delivery(self, delivery_id: str) -> Delivery | None:
        rows = self._rows(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE delivery_id = ?",
            (delivery_id,),
        )
        return _delivery(rows[0]) if rows else None

    def deliveries(
        self,
        endpoint_id: str | None = None,
        status: DeliveryStatus | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        """The newest ``limit`` deliveries (newest first), optionally of one endpoint or
        in one status."""
        if not 1 <= limit <= DELIVERIES_PAGE_MAX:
            raise ValueError(f"limit: must be 1 to {DELIVERIES_PAGE_MAX}, got {limit}")
        clauses, parameters = [], []
        for clause, value in (("endpoint_id = ?", endpoint_id), ("status = ?", status)):
            if value is not None:
                clauses.append(clause)
                parameters.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries{where}"
            " ORDER BY delivery_number DESC LIMIT ?",
            [*parameters, limit],
        )
        return [_delivery(row) for row in rows]

    def claim_due(self, now_us: int, lease_us: int, limit: int) -> list[Delivery]:
        """Claim up to ``limit`` due deliveries, at most one per endpoint (its oldest
        pending one), by moving their next attempt ``lease_us`` ahead: another process
        polling the same file skips them, and a crash mid-send only delays a retry."""
        claim = _DUE_HEADS
        if isinstance(self._connection, PostgresConnection):
            claim = claim.rstrip() + _CLAIM_ROWS
        with self._writing() as connection:
            rows = connection.execute(claim, (now_us, limit)).fetchall()
            connection.executemany(
                "UPDATE webhook_deliveries SET next_attempt_at_us = ? WHERE delivery_id = ?",
                [(now_us + lease_us, row[0]) for row in rows],
            )
        return [_delivery(row) for row in rows]

    def record_attempt(self, outcome: AttemptOutcome) -> Delivery:
        """Append the attempt to the log and move its delivery on, in one transaction."""
        attempt = outcome.attempt
        delivered_at = attempt.at_us if outcome.status == "delivered" else None
        with self._writing() as connection:
            connection.execute(
                f"INSERT INTO webhook_attempts ({_ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    attempt.delivery_id,
                    attempt.attempt_number,
                    attempt.at_us,
                    attempt.status_code,
                    attempt.error,
                    attempt.duration_us,
                ),
            )
            connection.execute(
                "UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at_us = ?,"
                " last_status_code = ?, last_error = ?,"
                " delivered_at_us = COALESCE(?, delivered_at_us) WHERE delivery_id = ?",
                (
                    outcome.status,
                    attempt.attempt_number,
                    outcome.next_attempt_at_us,
                    attempt.status_code,
                    attempt.error,
                    delivered_at,
                    attempt.delivery_id,
                ),
            )
            row = connection.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE delivery_id = ?",
                (attempt.delivery_id,),
            ).fetchone()
        return _delivery(row)

    def requeue(self, delivery_id: str, now_us: int) -> Delivery | None:
        """Make a delivery pending and due at ``now_us``; attempt numbers continue, and
        the retry schedule starts over from its next attempt."""
        with self._writing() as connection:
            connection.execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at_us = ?,"
                " attempts_at_requeue = attempts WHERE delivery_id = ?",
                (now_us, delivery_id),
            )
            row = connection.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE delivery_id = ?",
                (delivery_id,),
            ).fetchone()
        return None if row is None else _delivery(row)

    def attempts(self, delivery_id: str) -> list[Attempt]:
        rows = self._rows(
            f"SELECT {_ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = ?"
            " ORDER BY attempt_row",
            (delivery_id,),
        )
        return [Attempt(*row) for row in rows]

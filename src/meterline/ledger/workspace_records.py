"""The contract workspace's records beside the invoices (SQLite file or PostgreSQL
schema), append-only like them.

Tables: ``workspace_users`` (a name, its role, an optional customer binding and the
scrypt hash of its password; never the password), ``workspace_proposals`` (a proposed
contract change: who proposed it, why, on which revision, the change as canonical JSON)
and ``workspace_decisions`` (an approval or a rejection of one proposal: who, why, when,
and for an approval the configuration revision it became). Triggers refuse UPDATE and
DELETE on all three: history is appended to, never edited. A proposal has at most one
decision (``UNIQUE (proposal_id)``), so a second approval of the same proposal is refused
by the store itself. Proposal numbers are ``MAX + 1`` under the ``proposal-numbers`` lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meterline.ledger.append_only import append_only_triggers
from meterline.ledger.billing_records import BillingConflict
from meterline.ledger.database import (
    WriteLock,
    integrity_errors,
    rows_of,
)
from meterline.ledger.record_store import RecordStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workspace_users (
    user_number INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'editor', 'approver', 'admin')),
    customer TEXT,
    password_hash TEXT NOT NULL,
    created_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS workspace_proposals (
    proposal_number INTEGER PRIMARY KEY,
    proposal_id TEXT NOT NULL UNIQUE,
    customer TEXT NOT NULL,
    proposer TEXT NOT NULL,
    reason TEXT NOT NULL,
    base_revision INTEGER,
    change TEXT NOT NULL,
    created_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS workspace_decisions (
    decision_number INTEGER PRIMARY KEY,
    proposal_id TEXT NOT NULL UNIQUE,
    decision TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    decider TEXT NOT NULL,
    reason TEXT NOT NULL,
    revision INTEGER,
    decided_at_us INTEGER NOT NULL
);
"""
_TABLES = ("workspace_users", "workspace_proposals", "workspace_decisions")
_TRIGGERS = append_only_triggers(_TABLES, "the workspace history is appended to")
PROPOSAL_ID_FORMAT = "P-{:06d}"
_PROPOSAL_COLUMNS = (
    "proposal_number, proposal_id, customer, proposer, reason, base_revision, change, created_at_us"
)
_DECISION_COLUMNS = "proposal_id, decision, decider, reason, revision, decided_at_us"


class WorkspaceConflict(BillingConflict):
    """A user name already taken, or a proposal already decided."""

    code = "workspace_conflict"
    http_status = 409


@dataclass(frozen=True, slots=True)
class StoredProposal:
    """A proposal as stored: ``change`` is its canonical JSON."""

    number: int
    proposal_id: str
    customer: str
    proposer: str
    reason: str
    base_revision: int | None
    change: str
    created_at_us: int


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """An approval or rejection; ``revision``: what an approval was applied as."""

    proposal_id: str
    decision: str
    decider: str
    reason: str
    revision: int | None
    decided_at_us: int


def _proposal(row: tuple[Any, ...]) -> StoredProposal:
    number, proposal_id, customer, proposer, reason, base, change, created = row
    return StoredProposal(
        int(number),
        proposal_id,
        customer,
        proposer,
        reason,
        None if base is None else int(base),
        str(change),
        int(created),
    )


def _decision(row: tuple[Any, ...]) -> StoredDecision:
    proposal_id, decision, decider, reason, revision, decided = row
    return StoredDecision(
        proposal_id,
        decision,
        decider,
        reason,
        None if revision is None else int(revision),
        int(decided),
    )


class WorkspaceStore(RecordStore):
    """Users, proposals and decisions in the ledger's file (or PostgreSQL schema)."""

    schema = _SCHEMA + _TRIGGERS

    def put_user(
        self, name: str, password_hash: str, role: str, customer: str | None, created_at_us: int
    ) -> None:
        try:
            with self._writing(WriteLock("workspace-users")) as connection:
                connection.execute(
                    "INSERT INTO workspace_users (name, role, customer, password_hash,"
                    " created_at_us) VALUES (?, ?, ?, ?, ?)",
                    (name, role, customer, password_hash, created_at_us),
                )
        except integrity_errors():
            raise WorkspaceConflict(f"name: user {name!r} exists already") from None

    def get_user(self, name: str) -> tuple[str, str, str | None] | None:
        """A user's password hash, role and customer binding (None: no such user)."""
        with self._lock:
            row = self._connection.execute(
                "SELECT password_hash, role, customer FROM workspace_users WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]), row[2])

    def users(self) -> list[tuple[str, str, str | None, int]]:
        """Every user's name, role, customer binding and creation time, in order added."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT name, role, customer, created_at_us FROM workspace_users"
                " ORDER BY user_number"
            ).fetchall()
        return [(str(n), str(r), c, int(t)) for n, r, c, t in rows]

    def add_proposal(
        self,
        customer: str,
        proposer: str,
        reason: str,
        base_revision: int | None,
        change: str,
        created_at_us: int,
    ) -> StoredProposal:
        """Store a proposal under the next number."""
        with self._writing(WriteLock("proposal-numbers")) as connection:
            row = connection.execute(
                "SELECT COALESCE(MAX(proposal_number), 0) + 1 FROM workspace_proposals"
            ).fetchone()
            number = int(row[0])
            stored = connection.execute(
                "INSERT INTO workspace_proposals (proposal_number, proposal_id, customer,"
                " proposer, reason, base_revision, change, created_at_us)"
                f" VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_PROPOSAL_COLUMNS}",
                (
                    number,
                    PROPOSAL_ID_FORMAT.format(number),
                    customer,
                    proposer,
                    reason,
                    base_revision,
                    change,
                    created_at_us,
                ),
            ).fetchone()
        return _proposal(stored)

    def proposal(self, proposal_id: str) -> StoredProposal | None:
        with self._lock:
            row = self._connection.execute(
                f"SELECT {_PROPOSAL_COLUMNS} FROM workspace_proposals WHERE proposal_id = ?",
                (proposal_id,),
            ).fetchone()
        return None if row is None else _proposal(row)

    def proposals(self, customer: str | None = None) -> list[StoredProposal]:
        """Every proposal (or one customer's) in the order proposed."""
        select = f"SELECT {_PROPOSAL_COLUMNS} FROM workspace_proposals"
        with self._lock:
            rows = rows_of(self._connection, select, "proposal_number", customer)
        return [_proposal(row) for row in rows]

    def add_decision(self, decision: StoredDecision) -> StoredDecision:
        """Record a proposal's decision; ``WorkspaceConflict`` if it was decided already."""
        try:
            with self._writing(WriteLock("workspace-decision", decision.proposal_id)) as connection:
                connection.execute(
                    f"INSERT INTO workspace_decisions ({_DECISION_COLUMNS})"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        decision.proposal_id,
                        decision.decision,
                        decision.decider,
                        decision.reason,
                        decision.revision,
                        decision.decided_at_us,
                    ),
                )
        except integrity_errors():
            raise WorkspaceConflict(
                f"proposal {decision.proposal_id} was decided already"
            ) from None
        return decision

    def decisions(self) -> dict[str, StoredDecision]:
        """Every decision, by proposal id."""
        with self._lock:
            rows = self._connection.execute(
                f"SELECT {_DECISION_COLUMNS} FROM workspace_decisions ORDER BY decision_number"
            ).fetchall()
        return {row[0]: _decision(row) for row in rows}

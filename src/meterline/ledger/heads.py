"""Partition heads, batches and writer leases: the SQL both stores share.

Each partition has one row in ``partition_heads``: its last sequence, batch count, batch
chain hash and the frontier of its batch tree (``core.chain``), and its writer lease
(owner, epoch, expiry). An append locks the rows of the partitions it writes (SQLite:
the whole file, ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE`` on those rows
only, in partition order), so writers of different partitions never wait for each other
and nothing is counted across partitions.

**Fencing.** A writer that holds a lease passes it to ``append``; the append commits only
if the row still names that lease's epoch. Taking a lease over (after it expired)
increments the epoch in the same row, so a stale writer's commit is refused
(``LeaseLost``) however late it arrives. A writer without a lease may append to a
partition nobody holds an unexpired lease on (the embedded server, ``meterline ingest``);
otherwise it is refused (``PartitionLeased``).

Every batch becomes one row of ``batches`` (append-only, like ``events``); the head row
is rewritten in the same transaction. ``verify`` never trusts the head rows: it recomputes
them from the batches and events and names a head that disagrees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meterline.core.chain import BatchRecord, HeadState
from meterline.core.merkle import EMPTY_FRONTIER, frontier_from_bytes, frontier_to_bytes
from meterline.errors import StoreError

LEASE_SECONDS_DEFAULT = 10.0
"""How long a writer lease lasts unless renewed (workers renew it every second)."""

HEADS_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    partition_number INTEGER NOT NULL,
    batch_number INTEGER NOT NULL,
    first_sequence INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    root BLOB NOT NULL,
    chain_hash BLOB NOT NULL,
    committed_at_us INTEGER NOT NULL,
    lease_epoch INTEGER NOT NULL,
    PRIMARY KEY (partition_number, batch_number)
);
CREATE TABLE IF NOT EXISTS partition_heads (
    partition_number INTEGER NOT NULL PRIMARY KEY,
    sequence INTEGER NOT NULL,
    batches INTEGER NOT NULL,
    chain_hash BLOB NOT NULL,
    frontier BLOB NOT NULL,
    lease_owner TEXT,
    lease_epoch INTEGER NOT NULL,
    lease_expires_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    checkpoint_number INTEGER NOT NULL PRIMARY KEY,
    created_at_us INTEGER NOT NULL,
    note TEXT NOT NULL,
    hash BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS batches_append_only_update BEFORE UPDATE ON batches
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: batches cannot be updated'); END;
CREATE TRIGGER IF NOT EXISTS batches_append_only_delete BEFORE DELETE ON batches
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: batches cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: checkpoints cannot be updated'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: checkpoints cannot be deleted'); END;
"""

EMPTY_FRONTIER_BYTES = frontier_to_bytes(EMPTY_FRONTIER)

HEAD_COLUMNS = "partition_number, sequence, batches, chain_hash, frontier"
LEASE_COLUMNS = "lease_owner, lease_epoch, lease_expires_us"
HEAD_ROWS = f"SELECT {HEAD_COLUMNS}, {LEASE_COLUMNS} FROM partition_heads"
"""The head rows (``head_row`` reads one); each store adds which rows and how it locks them."""
INSERT_BATCH = (
    "INSERT INTO batches (partition_number, batch_number, first_sequence, last_sequence, root,"
    " chain_hash, committed_at_us, lease_epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_HEAD = (
    "UPDATE partition_heads SET sequence = ?, batches = ?, chain_hash = ?, frontier = ?"
    " WHERE partition_number = ?"
)


class LeaseLost(StoreError):
    """A writer's lease on a partition was taken over: its commit is refused."""

    code = "lease_lost"
    http_status = 409


class PartitionLeased(StoreError):
    """A writer without a lease tried a partition another writer holds."""

    code = "partition_leased"
    http_status = 409


@dataclass(frozen=True, slots=True)
class Lease:
    """A writer's hold on one partition: the fencing epoch its appends must match."""

    partition: int
    owner: str
    epoch: int
    expires_us: int


@dataclass(frozen=True, slots=True)
class HeadRow:
    """A partition's head row: its head and its lease."""

    partition: int
    head: HeadState
    lease_owner: str | None
    lease_epoch: int
    lease_expires_us: int


def initial_heads_sql(partitions: Iterable[int]) -> list[tuple[str, tuple[object, ...]]]:
    """Statements creating the empty head row of each of ``partitions`` (no-ops when
    they exist)."""
    from meterline.core.chain import GENESIS_HASH

    return [
        (
            "INSERT OR IGNORE INTO partition_heads VALUES (?, 0, 0, ?, ?, NULL, 0, 0)",
            (partition, GENESIS_HASH, EMPTY_FRONTIER_BYTES),
        )
        for partition in partitions
    ]


def head_row(row: tuple[Any, ...]) -> HeadRow:
    """A ``HEAD_COLUMNS, LEASE_COLUMNS`` row as a HeadRow."""
    partition, sequence, batches, chain, frontier, owner, epoch, expires = row
    head = HeadState(sequence, batches, bytes(chain), frontier_from_bytes(bytes(frontier)))
    return HeadRow(partition, head, owner, epoch, expires)


def check_leases(
    rows: Iterable[HeadRow], leases: Mapping[int, Lease] | None, now_us: int
) -> dict[int, int]:
    """The lease epoch each written partition's batch records; LeaseLost when a lease
    passed in is no longer the row's, PartitionLeased when an unleased writer meets a
    partition someone holds."""
    epochs: dict[int, int] = {}
    for row in rows:
        if leases is None:
            if row.lease_owner is not None and row.lease_expires_us > now_us:
                raise PartitionLeased(
                    f"partition {row.partition} is held by writer {row.lease_owner!r}"
                    " (a worker): send events through the stream, or stop the worker"
                )
            epochs[row.partition] = row.lease_epoch
            continue
        lease = leases.get(row.partition)
        if lease is None:
            raise PartitionLeased(f"this writer holds no lease on partition {row.partition}")
        if row.lease_epoch != lease.epoch or row.lease_owner != lease.owner:
            raise LeaseLost(
                f"partition {row.partition}: lease epoch {lease.epoch} of {lease.owner!r} was"
                f" taken over (now epoch {row.lease_epoch} of {row.lease_owner!r}):"
                " the commit is refused"
            )
        epochs[row.partition] = lease.epoch
    return epochs


def batch_rows(
    sealed: Iterable[BatchRecord], committed_at_us: int, epochs: Mapping[int, int]
) -> list[tuple[object, ...]]:
    """The ``batches`` rows of ``sealed`` batches (INSERT_BATCH's parameters)."""
    return [
        (
            batch.partition,
            batch.number,
            batch.first_sequence,
            batch.last_sequence,
            batch.root,
            batch.chain_hash,
            committed_at_us,
            epochs.get(batch.partition, 0),
        )
        for batch in sealed
    ]


def head_updates(heads: Mapping[int, HeadState]) -> list[tuple[object, ...]]:
    """UPDATE_HEAD's parameters for each new head."""
    return [
        (head.sequence, head.batches, head.chain_hash, frontier_to_bytes(head.frontier), partition)
        for partition, head in heads.items()
    ]

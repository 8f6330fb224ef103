"""The ledger's hash chain and its verification (pure).

Each record's hash is ``SHA-256(previous hash || canonical bytes)``, where the previous
hash is that of the record before it in the same partition; the first record of each
partition chains from ``GENESIS_HASH`` (32 zero bytes). The embedded store has one
partition, so one chain; the PostgreSQL store keeps one chain per partition (see
``core.partitions``) while ledger sequences stay one gap-free order across them.
Verification walks records in sequence order and reports the first sequence at which a
chain breaks, and its partition: a sequence that is missing or out of order, a hash that
does not match the bytes, or indexed columns that disagree with the bytes they were
derived from. It never raises on what it reads: bytes that do not decode are a finding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import NamedTuple

from meterline.core.events import event_document, timestamp_to_us
from meterline.core.findings import Finding

GENESIS_HASH = bytes(32)
_sha256 = hashlib.sha256


def chain_hash(previous_hash: bytes, body: bytes) -> bytes:
    """The hash of a record whose predecessor's hash is ``previous_hash``."""
    return _sha256(previous_hash + body).digest()


class StoredRecord(NamedTuple):
    """One ledger record as read back from storage, columns and bytes."""

    sequence: int
    customer: str
    id: str
    type: str
    timestamp_us: int
    body: bytes
    hash: bytes
    partition: int = 0
    """The chain this record belongs to (0 on a single-chain ledger)."""


class Checkpoint(NamedTuple):
    """A commit marker: the chain's last sequence and hash after one committed batch."""

    last_sequence: int
    last_hash: bytes


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of walking a chain: intact, or the first bad sequence (and its
    partition, when known) and why."""

    records: int
    head_sequence: int
    head_hash: bytes
    bad_sequence: int | None = None
    problem: str | None = None
    bad_partition: int | None = None
    """The chain the bad sequence belongs to (for a removed record: the chain that breaks
    after the gap; None when no record tells)."""
    check: str = "chain"
    """``chain`` (a record) or ``checkpoint`` (a commit checkpoint the chain contradicts)."""
    tails: dict[int, tuple[int, bytes]] = field(default_factory=dict, compare=False)
    """Each partition's last (sequence, hash) walked: the chain heads when intact."""

    @property
    def intact(self) -> bool:
        return self.bad_sequence is None

    @property
    def finding(self) -> Finding | None:
        """The first bad item as a finding (None when intact)."""
        if self.bad_sequence is None:
            return None
        return Finding(
            self.check,
            self.problem or "the chain breaks here",
            partition=self.bad_partition,
            sequence=self.bad_sequence,
        )


def _column_mismatch(record: StoredRecord) -> str | None:
    try:
        document = event_document(record.body)
    except ValueError as error:
        return f"bytes do not decode: {error}"
    moment = document.get("timestamp")
    try:
        timestamp_us = timestamp_to_us(datetime.fromisoformat(str(moment)))
    except ValueError:
        return "bytes hold no valid timestamp"
    expected = (document.get("customer"), document.get("id"), document.get("type"), timestamp_us)
    actual = (record.customer, record.id, record.type, record.timestamp_us)
    if expected != actual:
        return "indexed columns disagree with the hashed bytes"
    return None


def _broken(record: StoredRecord, previous_hash: bytes) -> str | None:
    """Why ``record`` does not chain from ``previous_hash`` (None when it does)."""
    if type(record.body) is not bytes or type(record.hash) is not bytes:
        return "stored bytes or hash are not binary (altered outside meterline)"
    if chain_hash(previous_hash, record.body) != record.hash:
        return "hash does not match SHA-256(previous hash || bytes)"
    return None


def _partition_after_gap(
    records: Iterable[StoredRecord], tails: dict[int, tuple[int, bytes]]
) -> int | None:
    """The partition whose chain breaks first in ``records`` (walked from ``tails``): the
    one a removed record belonged to (None if no later record of it was stored)."""
    heads = {partition: digest for partition, (_, digest) in tails.items()}
    for record in records:
        if _broken(record, heads.get(record.partition, GENESIS_HASH)) is not None:
            return record.partition
        heads[record.partition] = record.hash
    return None


def verify_chain(
    records: Iterable[StoredRecord], checkpoints: Iterable[Checkpoint] = ()
) -> ChainReport:
    """Walk ``records`` (in sequence order) and the commit ``checkpoints``.

    A removed record shows as a gap; a reordered or altered one as a hash mismatch; a
    truncated tail as a checkpoint that names a sequence or hash the chain does not have.
    """
    marks = {mark.last_sequence: mark.last_hash for mark in checkpoints}
    expected_sequence = 1
    tails: dict[int, tuple[int, bytes]] = {}
    previous_hash = GENESIS_HASH
    count = 0
    walked: Iterator[StoredRecord] = iter(records)

    def broken(problem: str, partition: int | None, check: str = "chain") -> ChainReport:
        return ChainReport(
            count,
            expected_sequence - 1,
            previous_hash,
            expected_sequence,
            problem,
            partition,
            check,
            tails,
        )

    for record in walked:
        tail = tails.get(record.partition)
        previous_hash = GENESIS_HASH if tail is None else tail[1]
        if record.sequence != expected_sequence:
            partition = _partition_after_gap(chain([record], walked), tails)
            return broken(
                f"expected sequence {expected_sequence}, found {record.sequence}", partition
            )
        problem = _broken(record, previous_hash) or _column_mismatch(record)
        if problem is not None:
            return broken(problem, record.partition)
        mark = marks.pop(record.sequence, None)
        if mark is not None and mark != record.hash:
            return broken(
                "commit checkpoint records a different hash", record.partition, "checkpoint"
            )
        tails[record.partition] = (record.sequence, record.hash)
        previous_hash = record.hash
        count += 1
        expected_sequence += 1
    if marks:
        missing = min(marks)
        return ChainReport(
            count,
            expected_sequence - 1,
            previous_hash,
            expected_sequence,
            f"commit checkpoint names sequence {missing}, beyond the chain's end",
            None,
            "checkpoint",
            tails,
        )
    return ChainReport(count, expected_sequence - 1, previous_hash, tails=tails)

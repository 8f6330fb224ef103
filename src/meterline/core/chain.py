"""The ledger's hash chain and its verification (pure).

Each record's hash is ``SHA-256(previous hash || canonical bytes)``, where the previous
hash is that of the record before it in the same partition; the first record of each
partition chains from ``GENESIS_HASH`` (32 zero bytes). The embedded store has one
partition, so one chain; the PostgreSQL store keeps one chain per partition (see
``core.partitions``) while ledger sequences stay one gap-free order across them.
Verification walks records in sequence order and reports the first sequence at which a
chain breaks: a sequence that is missing or out of order, a hash that does not match the
bytes, or indexed columns that disagree with the bytes they were derived from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from meterline.core.events import event_document, timestamp_to_us

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
    """The outcome of walking a chain: intact, or the first bad sequence and why."""

    records: int
    head_sequence: int
    head_hash: bytes
    bad_sequence: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.bad_sequence is None


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


def verify_chain(
    records: Iterable[StoredRecord], checkpoints: Iterable[Checkpoint] = ()
) -> ChainReport:
    """Walk ``records`` (in sequence order) and the commit ``checkpoints``.

    A removed record shows as a gap; a reordered or altered one as a hash mismatch; a
    truncated tail as a checkpoint that names a sequence or hash the chain does not have.
    """
    marks = {mark.last_sequence: mark.last_hash for mark in checkpoints}
    expected_sequence = 1
    tails: dict[int, bytes] = {}
    previous_hash = GENESIS_HASH
    count = 0
    for record in records:
        previous_hash = tails.get(record.partition, GENESIS_HASH)
        if record.sequence != expected_sequence:
            return ChainReport(
                count,
                expected_sequence - 1,
                previous_hash,
                expected_sequence,
                f"expected sequence {expected_sequence}, found {record.sequence}",
            )
        if type(record.body) is not bytes or type(record.hash) is not bytes:
            return ChainReport(
                count,
                expected_sequence - 1,
                previous_hash,
                record.sequence,
                "stored bytes or hash are not binary (altered outside meterline)",
            )
        if chain_hash(previous_hash, record.body) != record.hash:
            return ChainReport(
                count,
                expected_sequence - 1,
                previous_hash,
                record.sequence,
                "hash does not match SHA-256(previous hash || bytes)",
            )
        mismatch = _column_mismatch(record)
        if mismatch is not None:
            return ChainReport(
                count, expected_sequence - 1, previous_hash, record.sequence, mismatch
            )
        mark = marks.pop(record.sequence, None)
        if mark is not None and mark != record.hash:
            return ChainReport(
                count,
                expected_sequence - 1,
                previous_hash,
                record.sequence,
                "commit checkpoint records a different hash",
            )
        tails[record.partition] = previous_hash = record.hash
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
        )
    return ChainReport(count, expected_sequence - 1, previous_hash)

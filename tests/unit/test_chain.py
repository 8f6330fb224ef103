"""The hash chain: construction and tamper detection (pure core)."""

from __future__ import annotations

import hashlib

from meterline.core.chain import GENESIS_HASH, Checkpoint, StoredRecord, chain_hash, verify_chain
from meterline.core.events import PreparedEvent, prepare_event
from tests.conftest import FIXED_NOW_US, event


def build_chain(count: int) -> list[StoredRecord]:
    records, previous = [], GENESIS_HASH
    for number in range(1, count + 1):
        prepared = prepare_event(event(number), FIXED_NOW_US)
        assert isinstance(prepared, PreparedEvent)
        previous = chain_hash(previous, prepared.body)
        records.append(
            StoredRecord(
                number,
                prepared.customer,
                prepared.id,
                prepared.type,
                prepared.timestamp_us,
                prepared.body,
                previous,
            )
        )
    return records


def test_chain_hash_is_sha256_of_previous_and_bytes() -> None:
    """Each hash is SHA-256(previous hash || canonical bytes), from 32 zero bytes."""
    assert chain_hash(GENESIS_HASH, b"x") == hashlib.sha256(bytes(32) + b"x").digest()


def test_intact_chain_verifies() -> None:
    """An untouched chain verifies and reports its head."""
    records = build_chain(5)
    report = verify_chain(records, [Checkpoint(5, records[-1].hash)])
    assert report.intact and report.records == 5 and report.head_hash == records[-1].hash


def test_altered_byte_names_its_sequence() -> None:
    """Flipping one byte of an event's bytes breaks the chain at that sequence."""
    records = build_chain(5)
    body = bytearray(records[2].body)
    body[10] ^= 1
    records[2] = records[2]._replace(body=bytes(body))
    report = verify_chain(records)
    assert not report.intact and report.bad_sequence == 3


def test_removed_record_names_the_gap() -> None:
    """A removed record shows as the first missing sequence."""
    records = build_chain(5)
    del records[1]
    assert verify_chain(records).bad_sequence == 2


def test_reordered_records_are_detected() -> None:
    """Swapping two records' contents breaks the chain at the first swapped sequence."""
    records = build_chain(5)
    second, fourth = records[1], records[3]
    records[1] = fourth._replace(sequence=2)
    records[3] = second._replace(sequence=4)
    assert verify_chain(records).bad_sequence == 2


def test_rehashed_forgery_still_fails_on_columns() -> None:
    """Changing a column (customer) that the hashed bytes contradict is detected."""
    records = build_chain(3)
    records[1] = records[1]._replace(customer="someone-else")
    report = verify_chain(records)
    assert report.bad_sequence == 2 and "columns" in (report.problem or "")


def test_truncated_tail_is_caught_by_checkpoint() -> None:
    """Removing the last records is caught by the commit checkpoint beyond the end."""
    records = build_chain(5)
    report = verify_chain(records[:3], [Checkpoint(5, records[4].hash)])
    assert not report.intact and report.bad_sequence == 4

"""The hash chain: construction and tamper detection (pure core)."""

from __future__ import annotations

import hashlib

import pytest

from meterline.core.chain import GENESIS_HASH, Checkpoint, StoredRecord, chain_hash, verify_chain
from meterline.core.events import PreparedEvent, prepare_event
from meterline.core.findings import Finding
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


def build_partitioned(count: int, partitions: int) -> list[StoredRecord]:
    """``count`` records dealt round-robin over ``partitions`` chains (one customer each)."""
    records, tails = [], {}
    for number in range(1, count + 1):
        partition = number % partitions
        prepared = prepare_event(event(number, customer=f"c{partition}"), FIXED_NOW_US)
        assert isinstance(prepared, PreparedEvent)
        digest = chain_hash(tails.get(partition, GENESIS_HASH), prepared.body)
        tails[partition] = digest
        records.append(
            StoredRecord(
                number,
                prepared.customer,
                prepared.id,
                prepared.type,
                prepared.timestamp_us,
                prepared.body,
                digest,
                partition,
            )
        )
    return records


def test_partitioned_chain_reports_each_partition_tail() -> None:
    """An intact partitioned chain reports each partition's last sequence and hash."""
    records = build_partitioned(9, 3)
    report = verify_chain(records)
    assert report.intact and report.finding is None
    assert report.tails == {
        p: (records[s - 1].sequence, records[s - 1].hash) for p, s in ((0, 9), (1, 7), (2, 8))
    }


def test_altered_record_names_its_partition_and_sequence() -> None:
    """A broken record is named by partition and sequence, as a ``chain`` finding."""
    records = build_partitioned(9, 3)
    records[4] = records[4]._replace(body=records[4].body.replace(b"1205", b"9205"))
    report = verify_chain(records)
    assert (report.bad_partition, report.bad_sequence) == (2, 5)
    assert report.finding is not None
    assert report.finding.check == "chain"
    assert str(report.finding).startswith("partition 2, sequence 5: hash does not match")


def test_removed_record_names_the_partition_that_breaks_after_the_gap() -> None:
    """A removed record's partition is the one whose chain breaks next."""
    records = build_partitioned(9, 3)
    del records[3]  # sequence 4, partition 1; 5 and 6 chain fine, 7 (partition 1) breaks
    report = verify_chain(records)
    assert (report.bad_sequence, report.bad_partition) == (4, 1)
    assert report.problem == "expected sequence 4, found 5"


def test_bytes_that_do_not_decode_are_a_finding_not_an_error() -> None:
    """A record whose bytes are not JSON (and re-hashed to match) is reported, not raised."""
    records = build_chain(3)
    body = b"{not json"
    records[1] = records[1]._replace(body=body, hash=chain_hash(records[0].hash, body))
    records[2] = records[2]._replace(hash=chain_hash(records[1].hash, records[2].body))
    report = verify_chain(records)
    assert report.bad_sequence == 2 and "do not decode" in (report.problem or "")


def test_a_contradicted_checkpoint_is_a_checkpoint_finding() -> None:
    """A checkpoint whose hash the chain contradicts is named as a ``checkpoint`` finding."""
    records = build_chain(3)
    report = verify_chain(records, [Checkpoint(2, bytes(32))])
    assert report.finding is not None and report.finding.check == "checkpoint"
    assert report.finding.sequence == 2


def test_finding_names_the_item_and_renders_as_json() -> None:
    """A finding's ``where`` names the bad item; ``as_dict`` keeps only the fields that apply."""
    finding = Finding("invoice", "differs", invoice="INV-000002", line=3)
    assert str(finding) == "invoice INV-000002, line 3: differs"
    assert finding.as_dict() == {
        "check": "invoice",
        "where": "invoice INV-000002, line 3",
        "problem": "differs",
        "invoice": "INV-000002",
        "line": 3,
    }
    assert str(Finding("trigger", "is missing", table="events")) == "table events: is missing"
    assert str(Finding("chain head", "stale", partition=4)) == "chain head of partition 4: stale"
    assert str(Finding("revision", "edited", revision=2)) == "configuration revision 2: edited"
    with pytest.raises(ValueError, match="unknown check"):
        Finding("nonsense", "x")

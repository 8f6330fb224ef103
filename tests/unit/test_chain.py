"""The partitioned ledger's structure: event leaves, batch roots, batch chains, heads and
checkpoints, and the first bad item verification names (pure core)."""

from __future__ import annotations

import hashlib

from meterline.core.chain import (
    BatchRecord,
    HeadState,
    StoredRecord,
    event_hash,
    seal_batch,
    verify_chains,
)
from meterline.core.events import PreparedEvent, prepare_event
from meterline.core.merkle import leaf_hash, root_of_leaves
from tests.conftest import FIXED_NOW_US, event

Ledger = tuple[list[StoredRecord], list[BatchRecord], dict[int, HeadState]]


def build(partitions: int, batch_sizes: dict[int, list[int]]) -> Ledger:
    """Records and batches: for each partition, batches of the given sizes."""
    records: list[StoredRecord] = []
    batches: list[BatchRecord] = []
    heads: dict[int, HeadState] = {}
    number = 0
    for partition in range(partitions):
        head = HeadState()
        for size in batch_sizes.get(partition, []):
            leaves = []
            for _ in range(size):
                number += 1
                prepared = prepare_event(event(number, customer=f"c{partition}"), FIXED_NOW_US)
                assert isinstance(prepared, PreparedEvent)
                sequence = head.sequence + len(leaves) + 1
                digest = event_hash(prepared.body)
                leaves.append(digest)
                records.append(
                    StoredRecord(
                        sequence,
                        prepared.customer,
                        prepared.id,
                        prepared.type,
                        prepared.timestamp_us,
                        prepared.body,
                        digest,
                        partition,
                    )
                )
            batch, head = seal_batch(partition, head, leaves)
            batches.append(batch)
        heads[partition] = head
    return records, batches, heads


def test_event_hash_is_the_rfc6962_leaf_hash() -> None:
    assert event_hash(b"x") == hashlib.sha256(b"\x00x").digest() == leaf_hash(b"x")


def test_a_batch_root_is_the_merkle_root_of_its_events() -> None:
    records, batches, _ = build(1, {0: [3, 2]})
    assert batches[0].root == root_of_leaves([record.hash for record in records[:3]])
    assert (batches[1].first_sequence, batches[1].last_sequence) == (4, 5)


def test_intact_ledger_verifies_and_reports_heads() -> None:
    records, batches, heads = build(3, {0: [2, 3], 2: [4]})
    report = verify_chains(3, records, batches, heads)
    assert report.intact, report.problem
    assert report.records == 9 and report.head_sequence == 9
    assert report.heads[0].batches == 2 and report.heads[1] == HeadState()


def test_altered_bytes_name_partition_and_sequence() -> None:
    records, batches, heads = build(2, {0: [2], 1: [3]})
    body = bytearray(records[3].body)
    body[10] ^= 1
    records[3] = records[3]._replace(body=bytes(body))
    report = verify_chains(2, records, batches, heads)
    assert (report.bad_partition, report.bad_sequence) == (1, 2)
    assert "hash does not match" in (report.problem or "")


def test_a_rehashed_event_breaks_its_batch_root() -> None:
    records, batches, heads = build(1, {0: [3]})
    forged = records[1].body.replace(b"evt-2", b"evt-9")
    records[1] = records[1]._replace(body=forged, hash=event_hash(forged), id="evt-9")
    report = verify_chains(1, records, batches, heads)
    assert not report.intact and report.bad_batch == 1


def test_removed_record_names_the_gap() -> None:
    records, batches, heads = build(1, {0: [5]})
    del records[1]
    report = verify_chains(1, records, batches, heads)
    assert report.bad_sequence == 2 and "removed" in (report.problem or "")


def test_records_past_the_last_batch_are_named() -> None:
    records, batches, heads = build(1, {0: [2, 2]})
    report = verify_chains(1, records, batches[:1], heads)
    assert report.bad_sequence == 3 and "no committed batch" in (report.problem or "")


def test_a_stored_head_that_disagrees_is_named() -> None:
    records, batches, heads = build(1, {0: [2, 2]})
    stale = dict(heads)
    stale[0] = HeadState(2, 1, batches[0].chain_hash, stale[0].frontier)
    report = verify_chains(1, records, batches, stale)
    assert report.check == "partition head" and report.bad_partition == 0


def test_a_forged_batch_chain_is_named() -> None:
    records, batches, heads = build(1, {0: [2, 2]})
    batches[1] = batches[1]._replace(chain_hash=bytes(32))
    report = verify_chains(1, records, batches, heads)
    assert report.bad_batch == 2 and "chain hash" in (report.problem or "")


def test_truncation_is_caught_against_a_checkpoint() -> None:
    """Deleting the newest events with their batches and rewriting the head verifies on
    its own; a checkpoint that recorded them names the removal."""
    records, batches, heads = build(2, {0: [2, 3], 1: [1]})
    recorded = [
        ("checkpoint 7", tuple(head.partition_head(p) for p, head in sorted(heads.items())))
    ]
    kept, kept_batches = records[:2] + records[5:], [batches[0], batches[2]]
    short_heads = verify_chains(2, kept, kept_batches).heads  # the head rows, rewritten
    alone = verify_chains(2, kept, kept_batches, short_heads)
    assert alone.intact
    report = verify_chains(2, kept, kept_batches, short_heads, recorded)
    assert report.check == "checkpoint" and report.bad_partition == 0
    assert "checkpoint 7" in (report.problem or "") and "removed" in (report.problem or "")


def test_a_rewritten_history_contradicts_its_checkpoint() -> None:
    _, _, heads = build(1, {0: [2, 2]})
    recorded = [("checkpoint 1", (heads[0].partition_head(0),))]
    other, other_batches, _ = build(1, {0: [2, 2]})
    forged = other[3].body.replace(b"evt-4", b"evt-8")
    other[3] = other[3]._replace(body=forged, hash=event_hash(forged), id="evt-8")
    leaves = [record.hash for record in other[2:]]
    second, head = seal_batch(
        0, HeadState(2, 1, other_batches[0].chain_hash, _frontier(other)), leaves
    )
    report = verify_chains(1, other, [other_batches[0], second], {0: head}, recorded)
    assert not report.intact and report.check == "checkpoint"


def _frontier(records: list[StoredRecord]) -> tuple[int, tuple[bytes, ...]]:
    _, _, heads = build(1, {0: [2]})
    return heads[0].frontier

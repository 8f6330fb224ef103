"""Walking the chains in ranges (``core.chain_ranges``) gives ``verify_chains``' report:
the same first bad item, record count and heads, for every range size, on an intact
ledger and on one altered at and between the ranges' seams (in memory: pure)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from meterline.core.chain import (
    BatchRecord,
    ChainReport,
    HeadState,
    StoredRecord,
    event_hash,
    seal_batch,
    verify_chains,
)
from meterline.core.chain_ranges import (
    checkpoint_expectations,
    merge_ranges,
    plan_ranges,
    walk_range,
    with_batches,
)
from meterline.core.checkpoint_note import PartitionHead
from meterline.core.events import encode_canonical

PARTITIONS = 2
BATCHES = 9
BATCH_EVENTS = 4
Ledger = tuple[list[StoredRecord], list[BatchRecord]]


def _ledger() -> Ledger:
    records: list[StoredRecord] = []
    batches: list[BatchRecord] = []
    for partition in range(PARTITIONS):
        head = HeadState()
        for _ in range(BATCHES):
            hashes = []
            for _ in range(BATCH_EVENTS):
                sequence = head.sequence + len(hashes) + 1
                body = encode_canonical(
                    {
                        "customer": f"c{partition}",
                        "id": f"e-{partition}-{sequence}",
                        "type": "t",
                        "timestamp": "2026-10-01T00:00:00Z",
                        "properties": {"n": sequence},
                    }
                )
                record = StoredRecord(
                    sequence,
                    f"c{partition}",
                    f"e-{partition}-{sequence}",
                    "t",
                    1_790_812_800_000_000,
                    body,
                    event_hash(body),
                    partition,
                )
                records.append(record)
                hashes.append(record.hash)
            batch, head = seal_batch(partition, head, hashes)
            batches.append(batch)
    return records, batches


def _heads(batches: list[BatchRecord]) -> dict[int, HeadState]:
    """The stored heads of an intact ledger: each partition's last batch, walked."""
    return dict(verify_chains(PARTITIONS, _ledger()[0], batches).heads)


def _in_ranges(
    records: list[StoredRecord],
    batches: list[BatchRecord],
    stored: dict[int, HeadState],
    checkpoints: list[tuple[str, list[PartitionHead]]],
    size: int,
) -> ChainReport:
    expected = checkpoint_expectations(checkpoints)

    def outcomes():  # type: ignore[no-untyped-def]
        for partition in range(PARTITIONS):
            own = [b for b in batches if b.partition == partition]
            for planned in plan_ranges(partition, own, expected.get(partition, {}), size):
                chain_range = planned
                if planned.later_batches:  # the walker reads them with its records
                    later = [b for b in own if b.number > planned.start.batches]
                    chain_range = with_batches(planned, later)
                low, high = chain_range.after_sequence, chain_range.through_sequence
                chosen = [
                    r
                    for r in records
                    if r.partition == partition
                    and (low is None or r.sequence > low)
                    and (high is None or r.sequence <= high)
                ]
                head = stored.get(partition) if planned.later_batches else None
                ordered = sorted(chosen, key=lambda r: r.sequence)
                yield partition, walk_range(chain_range, ordered, head)

    stray = [r for r in records if r.partition >= PARTITIONS]
    return merge_ranges(PARTITIONS, outcomes(), checkpoints, lambda: stray[0] if stray else None)


def _edit_record(index: int, **changes: object) -> Callable[[Ledger], Ledger]:
    def edit(ledger: Ledger) -> Ledger:
        records, batches = ledger
        records = list(records)
        records[index] = records[index]._replace(**changes)
        return records, batches

    return edit


def _drop_record(index: int) -> Callable[[Ledger], Ledger]:
    return lambda ledger: (ledger[0][:index] + ledger[0][index + 1 :], ledger[1])


def _edit_batch(index: int, **changes: object) -> Callable[[Ledger], Ledger]:
    def edit(ledger: Ledger) -> Ledger:
        batches = list(ledger[1])
        batches[index] = batches[index]._replace(**changes)
        return ledger[0], batches

    return edit


ALTERATIONS: dict[str, Callable[[Ledger], Ledger] | None] = {
    "intact": None,
    "body-edited": _edit_record(13, body=b"{}"),
    "column-edited": _edit_record(40, customer="mallory"),
    "first-of-a-batch-removed": _drop_record(BATCH_EVENTS * 3),
    "last-record-removed": _drop_record(PARTITIONS * BATCHES * BATCH_EVENTS - 1),
    "chain-hash-at-a-seam": _edit_batch(2, chain_hash=bytes(32)),
    "batch-end-moved": _edit_batch(BATCHES + 4, last_sequence=BATCH_EVENTS * 5 + 1),
    "batch-root-edited": _edit_batch(7, root=bytes(32)),
    "stray-partition": _edit_record(5, partition=PARTITIONS + 1),
    "extra-record": lambda ledger: (
        [*ledger[0], ledger[0][-1]._replace(sequence=ledger[0][-1].sequence + 1)],
        ledger[1],
    ),
}


@pytest.mark.parametrize("name", list(ALTERATIONS))
@pytest.mark.parametrize("size", [1, 5, 8, 13, 10_000])
def test_ranges_report_what_the_single_walk_does(name: str, size: int) -> None:
    records, batches = _ledger()
    stored = _heads(batches)
    checkpoints = [("checkpoint 1", [stored[0].partition_head(0)])]
    alteration = ALTERATIONS[name]
    if alteration is not None:
        records, batches = alteration((records, batches))
    ordered = sorted(records, key=lambda r: (r.partition, r.sequence))
    single = verify_chains(PARTITIONS, ordered, batches, stored, checkpoints)
    ranged = _in_ranges(records, batches, stored, checkpoints, size)
    assert single.intact == (alteration is None), single
    assert ranged == single
    assert ranged.heads == single.heads
    assert ranged.finding == single.finding


def test_a_range_starts_from_the_head_before_it() -> None:
    _, batches = _ledger()
    own = [b for b in batches if b.partition == 0]
    ranges = list(plan_ranges(0, own, {}, BATCH_EVENTS * 2))
    assert [len(r.batches) for r in ranges] == [2, 2, 2, 2, 0]
    assert [r.later_batches for r in ranges] == [False] * 4 + [True]
    assert ranges[0].after_sequence is None and ranges[-1].through_sequence is None
    walked = verify_chains(1, [], [])
    assert ranges[0].start == walked.heads[0]
    assert ranges[1].start.chain_hash == own[1].chain_hash
    assert ranges[1].after_sequence == own[1].last_sequence


@pytest.mark.parametrize("size", [1, 13, 10_000])
def test_a_stale_stored_head_reads_the_same(size: int) -> None:
    records, batches = _ledger()
    stored = _heads(batches)
    stored[1] = HeadState(stored[1].sequence - 1, stored[1].batches)
    ordered = sorted(records, key=lambda r: (r.partition, r.sequence))
    single = verify_chains(PARTITIONS, ordered, batches, stored)
    assert single.check == "partition head"
    assert _in_ranges(records, batches, stored, [], size) == single

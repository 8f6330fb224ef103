"""Verifying the chains in ranges of batches, each walked on its own (pure).

``core.chain.verify_chains`` walks each partition from its first batch to its last. Here a
partition's stored batches are cut into consecutive ranges (``plan_ranges``), and each
range is walked alone (``walk_range``: the same per-batch and per-record checks), from the
head the stored batch just before it names: its number, last sequence and chain hash, and
the tree frontier over the stored batch leaves before it. The walks share nothing, so the
shell can run them in parallel processes; ``merge_ranges`` puts their outcomes back
together, in (partition, range) order, into the ``ChainReport`` the single walk makes.

Invariants:

* **The same report.** Up to the first bad item, every stored batch is what the walk
  computes (a batch that differs from it is a bad item), so each range's start head is
  the head the single walk reaches there, each range's records (sequences past the stored
  batch before it, up to its own last batch's; the first range unbounded below, the
  partition's last unbounded above) are the records the single walk meets there, and the
  first range with a problem holds the first bad item, found by the same check. Ranges
  after it are not looked at. The record count, the heads, the stored-head and
  checkpoint checks after the walks are those of ``verify_chains``.
* **Each range checks its start against the range before.** A range starts from the
  previous range's last stored batch; that range's walk recomputes that batch's chain
  hash and compares it with the stored one, so a broken seam is a bad item of the range
  before it.
* Records of a partition the ledger does not have are found by the shell (one query)
  and named as ``verify_chains`` names them, after every partition walked clean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from meterline.core.chain import (
    BatchRecord,
    ChainReport,
    HeadState,
    StoredRecord,
    _checkpoint_heads,
    _Finding,
    _PartitionWalk,
    _Problem,
    _problem_fields,
    _removed_events,
    _report,
    _stale_heads,
)
from meterline.core.checkpoint_note import PartitionHead
from meterline.core.merkle import frontier_append, leaf_hash


@dataclass(frozen=True, slots=True)
class ChainRange:
    """Consecutive stored batches of one partition and where their walk starts."""

    partition: int
    index: int
    """The range's place in its partition (0 first)."""
    start: HeadState
    """The head the stored batch before the range names (the empty head for the first)."""
    batches: tuple[BatchRecord, ...]
    expected: dict[int, PartitionHead]
    """What checkpoints recorded at the batch counts this range reaches."""
    after_sequence: int | None
    """The range's records have a sequence past this (None: no lower bound)."""
    through_sequence: int | None
    """... and up to this (None: no upper bound, the partition's last range)."""
    later_batches: bool = False
    """The partition's last range: its batches are every stored batch after ``start``'s,
    read by the walker with its records, in one snapshot (``batches`` is empty), so that
    events appended meanwhile come with their batches."""


@dataclass(frozen=True, slots=True)
class RangeOutcome:
    """A range's walk: the records it walked, the head it reached (the last good one when
    it met a problem), and the problem (None when none)."""

    records: int
    head: HeadState
    problem: str | None = None
    sequence: int | None = None
    batch: int | None = None
    check: str = "chain"
    """``chain``, or ``store`` when the store failed mid-range (the shell says so)."""
    stored_head: HeadState | None = None
    """The partition's last range: its stored head, read in the snapshot its batches and
    records were read in (None: the store keeps none for it)."""


def plan_ranges(
    partition: int,
    batches: Iterable[BatchRecord],
    expected: Mapping[int, PartitionHead],
    range_events: int,
) -> Iterator[ChainRange]:
    """The partition's stored batches (in batch order) cut into ranges of at least
    ``range_events`` events each (whole batches), with their start heads; the last range
    (``later_batches``) takes every batch after the last range cut, read by its walker.
    Reads the batches once, holding one range's at a time."""
    head = HeadState()
    after: int | None = None
    index = 0
    pending: list[BatchRecord] = []
    events = 0
    for batch in batches:
        pending.append(batch)
        events += batch.last_sequence - batch.first_sequence + 1
        if events >= range_events:
            yield _range(partition, index, head, pending, expected, after, batch.last_sequence)
            for sealed in pending:
                frontier = frontier_append(head.frontier, leaf_hash(sealed.leaf_bytes()))
                head = HeadState(sealed.last_sequence, sealed.number, sealed.chain_hash, frontier)
            after, index, pending, events = batch.last_sequence, index + 1, [], 0
    later = {count: head for count, head in expected.items() if count > head.batches}
    yield ChainRange(partition, index, head, (), later, after, None, later_batches=True)


def _range(
    partition: int,
    index: int,
    start: HeadState,
    batches: list[BatchRecord],
    expected: Mapping[int, PartitionHead],
    after: int | None,
    through: int | None,
) -> ChainRange:
    reached = range(start.batches + 1, start.batches + len(batches) + 1)
    wanted = {count: expected[count] for count in reached if count in expected}
    return ChainRange(partition, index, start, tuple(batches), wanted, after, through)


def with_batches(chain_range: ChainRange, batches: Iterable[BatchRecord]) -> ChainRange:
    """The partition's last range with the batches its walker read (``later_batches``)."""
    return replace(chain_range, batches=tuple(batches), later_batches=False)


def walk_range(
    chain_range: ChainRange,
    records: Iterable[StoredRecord | tuple[Any, ...]],
    stored_head: HeadState | None = None,
) -> RangeOutcome:
    """Walk one range's records (its partition's, in sequence order, within its bounds)
    against its batches, as ``verify_chains`` walks them (``stored_head``: the last
    range's, passed on to ``merge_ranges``). ``records`` may be plain row tuples in
    ``StoredRecord``'s column order."""
    walk = _PartitionWalk(chain_range.partition, chain_range.start)
    try:
        walk.walk(iter(records), iter(chain_range.batches), chain_range.expected)
    except _Problem as problem:
        return RangeOutcome(
            walk.records, walk.head, problem.problem, problem.sequence, problem.batch
        )
    return RangeOutcome(walk.records, walk.head, stored_head=stored_head)


def merge_ranges(
    partitions: int,
    outcomes: Iterable[tuple[int, RangeOutcome]],
    checkpoints: Iterable[tuple[str, Iterable[PartitionHead]]],
    stray: Callable[[], StoredRecord | None],
) -> ChainReport:
    """The ``ChainReport`` of the walks: ``outcomes`` are (partition, outcome) in
    (partition, range) order, stopping at the first with a problem (the rest are never
    read); ``stray`` answers the first record (in (partition, sequence) order) of a
    partition the ledger does not have, if any (asked only when every walk is clean).
    The stored heads checked are those the partitions' last ranges read
    (``RangeOutcome.stored_head``)."""
    wanted, names = _checkpoint_heads(checkpoints)
    walks = {partition: _PartitionWalk(partition) for partition in range(partitions)}
    finding: _Finding | None = None
    stored_heads: dict[int, HeadState] = {}
    for partition, outcome in outcomes:
        walk = walks[partition]
        walk.records += outcome.records
        walk.head = outcome.head
        if outcome.stored_head is not None:
            stored_heads[partition] = outcome.stored_head
        if outcome.problem is not None:
            problem = _Problem(outcome.problem, outcome.sequence, outcome.batch)
            fields = _problem_fields(partition, problem, names)
            if outcome.check != "chain":
                fields["check"] = outcome.check
            finding = walk, fields
            break
    if finding is None:
        found = stray()
        if found is not None:
            finding = (
                None,
                {
                    "bad_sequence": found.sequence,
                    "problem": f"a record names partition {found.partition};"
                    f" the ledger has {partitions}",
                },
            )
    if finding is None:
        finding = _removed_events(walks, wanted, names)
    if finding is None:
        finding = _stale_heads(walks, stored_heads)
    return _report(walks, partitions, finding)


def checkpoint_expectations(
    checkpoints: Iterable[tuple[str, Iterable[PartitionHead]]],
) -> dict[int, dict[int, PartitionHead]]:
    """Per partition, what the checkpoints recorded at each batch count (``plan_ranges``'
    ``expected``)."""
    return _checkpoint_heads(checkpoints)[0]

"""The ledger's tamper-evident structure and its verification (pure).

The ledger is split into partitions; each partition numbers its events 1, 2, ... without
gaps and commits them in *batches*:

* an event's hash is its RFC 6962 leaf hash, ``SHA-256(0x00 || canonical bytes)``;
* a batch covers consecutive sequences of one partition and stores the RFC 6962 root over
  its events' leaf hashes (``core.merkle``), so a per-event proof is O(log batch);
* the partition's batches are chained: ``chain hash = SHA-256(previous chain hash ||
  batch leaf bytes)`` (the first from ``GENESIS_HASH``, 32 zero bytes), where the batch
  leaf bytes name the partition, the batch number, its sequences and its root;
* the partition's batch leaves also form an RFC 6962 tree, kept as a frontier in the
  partition's head, so a batch's proof against a checkpoint is O(log batches);
* a checkpoint (``core.checkpoint_note``) records every partition's head.

Hashing costs about two hashes per event (its leaf and its share of the batch tree).

Verification walks each partition's records and batches in sequence order and reports
the first bad item: a record whose bytes do not match its hash or indexed columns, a gap,
a batch whose root or chain hash does not match, records no batch covers, a batch naming
records that are gone, a stored head that disagrees with the walk, or a checkpoint the
ledger no longer contains. It never raises on what it reads: bytes that do not decode
are a finding.

A batch's records are first checked all at once over plain row tuples
(``clean_batch_leaves``, no record object per event); a batch that does not pass is
checked record by record (``_record_problem``), which names its first bad item. The
fast check passes only what the record-by-record check passes, so the report is the
same either way (tested by tampering).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from itertools import islice
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from meterline.core.checkpoint_note import PartitionHead, head_leaf
from meterline.core.events import EPOCH, ONE_MICROSECOND, event_document, timestamp_to_us
from meterline.core.findings import Finding
from meterline.core.merkle import (
    EMPTY_FRONTIER,
    Frontier,
    batch_leaf_bytes,
    frontier_append,
    frontier_root,
    leaf_hash,
    root_of_hashes,
    root_of_leaves,
)

T = TypeVar("T")

GENESIS_HASH = bytes(32)
_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"


def event_hash(body: bytes) -> bytes:
    """An event's hash: its RFC 6962 leaf hash over the canonical bytes."""
    return _sha256(_LEAF_PREFIX + body).digest()


def chain_hash(previous_hash: bytes, body: bytes) -> bytes:
    """``SHA-256(previous || body)``: a batch's link in its partition's chain, where
    ``body`` is the batch's leaf bytes."""
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
    """The partition this record belongs to (0 on a single-partition ledger)."""


class BatchRecord(NamedTuple):
    """One committed batch of a partition."""

    partition: int
    number: int
    first_sequence: int
    last_sequence: int
    root: bytes
    chain_hash: bytes

    def leaf_bytes(self) -> bytes:
        """The batch's leaf in its partition's tree (``core.merkle.batch_leaf_bytes``)."""
        return batch_leaf_bytes(
            self.partition, self.number, self.first_sequence, self.last_sequence, self.root
        )


@dataclass(frozen=True, slots=True)
class HeadState:
    """A partition's head: its last sequence, batch count, chain hash and tree frontier."""

    sequence: int = 0
    batches: int = 0
    chain_hash: bytes = GENESIS_HASH
    frontier: Frontier = EMPTY_FRONTIER

    def partition_head(self, partition: int) -> PartitionHead:
        """The head as a checkpoint records it."""
        return PartitionHead(
            partition, self.sequence, self.batches, self.chain_hash, frontier_root(self.frontier)
        )


def seal_batch(
    partition: int, head: HeadState, leaf_hashes: list[bytes]
) -> tuple[BatchRecord, HeadState]:
    """The batch record of ``leaf_hashes`` (the events after ``head``, in order) and the
    partition's head after it."""
    if not leaf_hashes:
        raise ValueError("a batch holds at least one event")
    first = head.sequence + 1
    last = head.sequence + len(leaf_hashes)
    root = root_of_hashes(leaf_hashes)
    number = head.batches + 1
    leaf = batch_leaf_bytes(partition, number, first, last, root)
    link = chain_hash(head.chain_hash, leaf)
    record = BatchRecord(partition, number, first, last, root, link)
    return record, HeadState(last, number, link, frontier_append(head.frontier, leaf_hash(leaf)))


def ledger_head_hash(heads: Mapping[int, HeadState], partitions: int) -> bytes:
    """The ledger's head hash: the RFC 6962 root over every partition's head leaf (as a
    checkpoint computes it)."""
    return root_of_leaves(
        [
            leaf_hash(head_leaf(heads.get(partition, HeadState()).partition_head(partition)))
            for partition in range(partitions)
        ]
    )


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of walking the ledger: intact, or the first bad item and why."""

    records: int
    heads: dict[int, HeadState] = field(default_factory=dict, compare=False)
    """Each partition's head as walked (the stored heads must equal these)."""
    partitions: int = 1
    bad_sequence: int | None = None
    problem: str | None = None
    bad_partition: int | None = None
    check: str = "chain"
    """``chain`` (a record or batch), ``partition head`` (a stored partition head), ``checkpoint``
    (a checkpoint the ledger no longer contains) or ``store`` (an unreadable store)."""
    bad_batch: int | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None

    @property
    def head_sequence(self) -> int:
        """Events walked through the heads: the sum of the partitions' last sequences."""
        return sum(head.sequence for head in self.heads.values())

    @property
    def head_hash(self) -> bytes:
        return ledger_head_hash(self.heads, self.partitions)

    @property
    def tails(self) -> dict[int, tuple[int, bytes]]:
        """Each partition's last (sequence, chain hash) walked."""
        return {p: (head.sequence, head.chain_hash) for p, head in self.heads.items()}

    @property
    def finding(self) -> Finding | None:
        """The first bad item as a finding (None when intact)."""
        if self.problem is None:
            return None
        return Finding(
            self.check,
            self.problem,
            partition=self.bad_partition,
            sequence=self.bad_sequence,
        )


class _IndexedFields(msgspec.Struct, gc=False):
    """The fields of an event's bytes that its indexed columns repeat (the rest skipped,
    still parsed: bytes that are not JSON do not decode)."""

    customer: Any = None
    id: Any = None
    type: Any = None
    timestamp: Any = None


_INDEXED_DECODER = msgspec.json.Decoder(_IndexedFields, float_hook=Decimal)
"""Decodes those fields as ``event_document`` would (``float_hook``: the same values),
without building the properties: ~2x faster per event (measured)."""


def _column_mismatch(record: StoredRecord) -> str | None:
    try:
        fields = _INDEXED_DECODER.decode(record.body)
    except msgspec.MsgspecError:  # not JSON, or not an object: the full decode says which
        return _document_mismatch(record)
    try:
        timestamp_us = timestamp_to_us(datetime.fromisoformat(str(fields.timestamp)))
    except ValueError:
        return "bytes hold no valid timestamp"
    if (
        fields.customer != record.customer
        or fields.id != record.id
        or fields.type != record.type
        or timestamp_us != record.timestamp_us
    ):
        return "indexed columns disagree with the hashed bytes"
    return None


def _document_mismatch(record: StoredRecord) -> str | None:
    """``_column_mismatch`` over the whole document (bytes the fast decoder refused)."""
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


def _record_problem(record: StoredRecord) -> str | None:
    if type(record.body) is not bytes or type(record.hash) is not bytes:
        return "stored bytes or hash are not binary (altered outside meterline)"
    if event_hash(record.body) != record.hash:
        return "hash does not match SHA-256(0x00 || bytes)"
    return _column_mismatch(record)


FAST_BATCH_EVENTS_MAX = 100_000
"""A batch of at most this many events is read whole and checked by
``clean_batch_leaves`` (larger ones, only ever met in a tampered ledger, are streamed
record by record, in bounded memory)."""


def clean_batch_leaves(
    rows: list[Any], first_sequence: int, last_sequence: int
) -> list[bytes] | None:
    """The leaf hashes of a batch's rows (``StoredRecord`` column order) when every row
    passes what ``_record_problem`` checks and the rows are sequences ``first_sequence``
    to ``last_sequence``, each once, in order (None when any does not, or cannot be told here: the
    record-by-record check then names the first bad one). The same checks in one tight
    loop over plain tuples."""
    if [row[0] for row in rows] != list(range(first_sequence, last_sequence + 1)):
        return None
    sha256, decode, parse = _sha256, _INDEXED_DECODER.decode, datetime.fromisoformat
    leaves: list[bytes] = []
    append = leaves.append
    try:
        for row in rows:
            body, digest = row[5], row[6]
            if (
                type(body) is not bytes
                or type(digest) is not bytes
                or sha256(_LEAF_PREFIX + body).digest() != digest
            ):
                return None
            fields = decode(body)
            moment = parse(str(fields.timestamp))
            if (
                moment.tzinfo is None
                or fields.customer != row[1]
                or fields.id != row[2]
                or fields.type != row[3]
                or (moment - EPOCH) // ONE_MICROSECOND != row[4]
            ):
                return None
            append(digest)
    except Exception:  # whatever it is, the record-by-record check names it
        return None
    return leaves


def chain_rows(first: list[Any], rest: Iterator[Any]) -> Iterator[Any]:
    """``first``'s rows that are not None, then ``rest``."""
    yield from (row for row in first if row is not None)
    yield from rest


def _then_raise(rows: list[Any], error: Exception) -> Iterator[Any]:
    """``rows``, then ``error`` raised (a read that failed after them)."""
    yield from rows
    raise error


class _Problem(Exception):
    def __init__(self, problem: str, sequence: int | None, batch: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.sequence = sequence
        self.batch = batch


@dataclass(slots=True)
class _PartitionWalk:
    """One partition's walk: its records against its batches, batch by batch."""

    partition: int
    head: HeadState = field(default_factory=HeadState)
    records: int = 0

    def walk(
        self,
        records: Iterator[StoredRecord | tuple[Any, ...]],
        batches: Iterator[BatchRecord],
        expected: Mapping[int, PartitionHead],
    ) -> None:
        """Walk everything; raise _Problem at the first bad item. ``expected`` maps a
        batch count to the head a checkpoint recorded at it. ``records`` may be plain
        row tuples in ``StoredRecord``'s column order (the partition column optional).
        Rows are read as the record-by-record walk reads them (one ahead of the records
        checked, the next before a batch's root is), so a store that fails is met where
        that walk meets it."""
        pending = next(records, None)
        for batch in batches:
            if batch.number != self.head.batches + 1:
                raise _Problem(
                    f"batch {batch.number} follows batch {self.head.batches}",
                    batch.first_sequence,
                    batch.number,
                )
            if batch.first_sequence != self.head.sequence + 1 or (
                batch.last_sequence < batch.first_sequence
            ):
                raise _Problem(
                    f"batch {batch.number} covers sequences {batch.first_sequence}-"
                    f"{batch.last_sequence}, expected to start at {self.head.sequence + 1}",
                    batch.first_sequence,
                    batch.number,
                )
            size = batch.last_sequence - batch.first_sequence + 1
            if pending is None or size > FAST_BATCH_EVENTS_MAX:
                leaves = self._record_leaves(batch, chain_rows([pending], records))
            else:
                leaves = self._batch_leaves(batch, pending, records, size)
            pending = next(records, None)
            self._seal(batch, leaves, expected)
        if pending is not None:
            raise _Problem(
                f"sequence {pending[0]} is in no committed batch (after batch"
                f" {self.head.batches}, which ends at {self.head.sequence})",
                pending[0],
            )

    def _batch_leaves(
        self, batch: BatchRecord, first: Any, records: Iterator[Any], size: int
    ) -> list[bytes]:
        """The batch's rows (``first`` and the next ``size - 1``) read whole and checked
        at once; record by record when they do not all pass, or when a read fails (the
        rows read before it are checked first, then its error is raised)."""
        rows = [first]
        try:
            rows.extend(islice(records, size - 1))
        except Exception as error:  # raised where the record-by-record walk meets it
            return self._record_leaves(batch, _then_raise(rows, error))
        leaves = clean_batch_leaves(rows, batch.first_sequence, batch.last_sequence)
        if leaves is None:  # something to name: the record-by-record check names it
            return self._record_leaves(batch, iter(rows))
        self.records += size
        return leaves

    def _record_leaves(self, batch: BatchRecord, records: Iterator[Any]) -> list[bytes]:
        """The batch's records checked one by one, taken from ``records`` (exactly the
        batch's number of them); raise _Problem at the first bad one."""
        leaves: list[bytes] = []
        for sequence in range(batch.first_sequence, batch.last_sequence + 1):
            pending = next(records, None)
            if pending is None or pending[0] != sequence:
                found = "the partition ends" if pending is None else f"found {pending[0]}"
                raise _Problem(
                    f"batch {batch.number} names sequence {sequence}: {found}"
                    " (events removed or reordered)",
                    sequence,
                    batch.number,
                )
            record = StoredRecord._make(pending)
            problem = _record_problem(record)
            if problem is not None:
                raise _Problem(problem, sequence, batch.number)
            leaves.append(record.hash)
            self.records += 1
        return leaves

    def _seal(
        self, batch: BatchRecord, leaves: list[bytes], expected: Mapping[int, PartitionHead]
    ) -> None:
        """The batch's root and chain hash against what its events give; then the head
        after it (raise _Problem when they differ, or differ from a checkpoint)."""
        sealed, head = seal_batch(self.partition, self.head, leaves)
        if sealed.root != batch.root:
            raise _Problem(
                f"batch {batch.number}'s root does not match its events",
                batch.first_sequence,
                batch.number,
            )
        if sealed.chain_hash != batch.chain_hash:
            raise _Problem(
                f"batch {batch.number}'s chain hash does not follow from batch {batch.number - 1}",
                batch.first_sequence,
                batch.number,
            )
        self.head = head
        recorded = expected.get(head.batches)
        if recorded is not None and recorded != head.partition_head(self.partition):
            raise _Problem(
                f"batch {head.batches} differs from what a checkpoint recorded",
                batch.first_sequence,
                batch.number,
            )


def verify_chains(
    partitions: int,
    records: Iterable[StoredRecord],
    batches: Iterable[BatchRecord],
    stored_heads: Mapping[int, HeadState] | None = None,
    checkpoints: Iterable[tuple[str, Iterable[PartitionHead]]] = (),
) -> ChainReport:
    """Walk ``records`` and ``batches`` (each in (partition, sequence) order), then the
    ``stored_heads`` (the store's cached heads, when it keeps them) and ``checkpoints``
    (a name, e.g. ``checkpoint 41``, and the heads it recorded), naming the first bad
    item. A checkpoint whose head is beyond the walked partition names removed events."""
    wanted, names = _checkpoint_heads(checkpoints)
    walks = {partition: _PartitionWalk(partition) for partition in range(partitions)}
    finding = _walk_partitions(walks, records, batches, wanted, names)
    if finding is None:
        finding = _removed_events(walks, wanted, names)
    if finding is None and stored_heads is not None:
        finding = _stale_heads(walks, stored_heads)
    return _report(walks, partitions, finding)


def _report(
    walks: dict[int, _PartitionWalk], partitions: int, finding: _Finding | None
) -> ChainReport:
    """The report of the walks and the first bad item found (None: intact)."""
    walk, fields = finding or (None, {})
    return ChainReport(
        sum(w.records for w in walks.values()),
        {p: w.head for p, w in walks.items()},
        partitions,
        bad_partition=None if walk is None else walk.partition,
        **fields,  # type: ignore[arg-type]
    )


_Finding = tuple[_PartitionWalk | None, dict[str, object]]
"""The first bad item: the partition's walk it was found in (None: no partition's), and
the ``ChainReport`` fields that name it."""


def _checkpoint_heads(
    checkpoints: Iterable[tuple[str, Iterable[PartitionHead]]],
) -> tuple[dict[int, dict[int, PartitionHead]], dict[tuple[int, int], str]]:
    """The heads the checkpoints recorded, per partition and batch count, and the name
    of the first checkpoint that recorded each."""
    wanted: dict[int, dict[int, PartitionHead]] = {}
    names: dict[tuple[int, int], str] = {}
    for label, heads in checkpoints:
        for head in heads:
            if head.batches:
                wanted.setdefault(head.partition, {})[head.batches] = head
                names.setdefault((head.partition, head.batches), label)
    return wanted, names


def _walk_partitions(
    walks: dict[int, _PartitionWalk],
    records: Iterable[StoredRecord],
    batches: Iterable[BatchRecord],
    wanted: dict[int, dict[int, PartitionHead]],
    names: dict[tuple[int, int], str],
) -> _Finding | None:
    """Walk every partition's records and batches in order; the first problem met, or a
    record of a partition the ledger does not have."""
    by_partition_records = _Grouped(records, lambda record: record.partition)
    by_partition_batches = _Grouped(batches, lambda batch: batch.partition)
    for partition, walk in walks.items():
        try:
            walk.walk(
                by_partition_records(partition),
                by_partition_batches(partition),
                wanted.get(partition, {}),
            )
        except _Problem as problem:
            return walk, _problem_fields(partition, problem, names)
    stray = by_partition_records.leftover()
    if stray is not None:
        return None, {
            "bad_sequence": stray.sequence,
            "problem": f"a record names partition {stray.partition}; the ledger has {len(walks)}",
        }
    return None


def _problem_fields(
    partition: int, problem: _Problem, names: dict[tuple[int, int], str]
) -> dict[str, object]:
    """The ``ChainReport`` fields naming a problem met walking ``partition`` (a checkpoint
    it contradicts named by the checkpoint's label)."""
    found_label = names.get((partition, problem.batch or 0))
    against_checkpoint = found_label is not None and "checkpoint" in problem.problem
    text = f"{found_label}: {problem.problem}" if against_checkpoint else problem.problem
    return {
        "bad_sequence": problem.sequence,
        "problem": text,
        "check": "checkpoint" if against_checkpoint else "chain",
        "bad_batch": problem.batch,
    }


def _removed_events(
    walks: dict[int, _PartitionWalk],
    wanted: dict[int, dict[int, PartitionHead]],
    names: dict[tuple[int, int], str],
) -> _Finding | None:
    """The first partition a checkpoint recorded beyond the end of its walk."""
    for partition, walk in walks.items():
        beyond = [count for count in wanted.get(partition, {}) if count > walk.head.batches]
        if beyond:
            count = min(beyond)
            head = wanted[partition][count]
            return walk, {
                "bad_sequence": walk.head.sequence + 1,
                "problem": f"{names[(partition, count)]} recorded partition {partition} at"
                f" sequence {head.sequence} (batch {count}); the ledger ends at sequence"
                f" {walk.head.sequence} (batch {walk.head.batches}): events were removed",
                "check": "checkpoint",
                "bad_batch": walk.head.batches + 1,
            }
    return None


def _stale_heads(
    walks: dict[int, _PartitionWalk], stored_heads: Mapping[int, HeadState]
) -> _Finding | None:
    """The first partition whose stored head is not where its walk ended."""
    for partition, walk in walks.items():
        stored = stored_heads.get(partition, HeadState())
        if stored != walk.head:
            return walk, {
                "bad_sequence": stored.sequence,
                "problem": f"partition {partition}'s stored head (sequence {stored.sequence},"
                f" {stored.batches} batches) is not its last batch (sequence"
                f" {walk.head.sequence}, {walk.head.batches} batches)",
                "check": "partition head",
            }
    return None


class _Grouped(Generic[T]):
    """Items in ascending partition order, taken one partition at a time."""

    def __init__(self, items: Iterable[T], key: Callable[[T], int]) -> None:
        self._items = iter(items)
        self._key = key
        self._next: T | None = next(self._items, None)

    def __call__(self, partition: int) -> Iterator[T]:
        while self._next is not None and self._key(self._next) <= partition:
            item = self._next
            self._next = next(self._items, None)
            if self._key(item) == partition:
                yield item

    def leftover(self) -> T | None:
        """An item past the last partition taken (None when all were taken)."""
        return self._next

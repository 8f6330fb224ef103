"""The chain walk's batch-at-once check names what the record-by-record check names
(hypothesis).

``core.chain.clean_batch_leaves`` passes a whole batch's rows in one loop over plain
tuples; whatever it cannot pass goes to the record-by-record check. Whatever is done to
a ledger (bodies, hashes, columns, sequences changed, rows removed, duplicated or
swapped, stored bytes that are not ``bytes``, timestamps spelled another way, batches
re-sealed over the changed rows so the walk reaches the records' own checks, a read that
fails anywhere), the walk with it reports exactly what the walk before it reports
(841823a's record-by-record walk, copied here as the reference), and so does the walk
with the fast check turned off: the same first bad item (or the same read failure),
record count and heads; rows handed over as plain tuples (as range walkers read them) or
as ``StoredRecord``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core import chain
from meterline.core.chain import (
    BatchRecord,
    ChainReport,
    HeadState,
    StoredRecord,
    _Problem,
    _record_problem,
    event_hash,
    seal_batch,
    verify_chains,
)
from meterline.core.chain_ranges import plan_ranges, walk_range, with_batches
from tests.unit.test_chain import build

KINDS = (
    "body_field",
    "body_not_json",
    "body_array",
    "timestamp_offset",
    "timestamp_naive",
    "timestamp_digits",
    "timestamp_number",
    "hash",
    "column_customer",
    "column_id",
    "column_type",
    "column_time",
    "sequence",
    "remove",
    "duplicate",
    "swap",
    "not_bytes",
)


def _with_body(record: StoredRecord, document: Any, rehash: bool) -> StoredRecord:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    digest = event_hash(body) if rehash else record.hash
    return record._replace(body=body, hash=digest)


def _tampered(
    records: list[StoredRecord], kind: str, index: int, rehash: bool
) -> list[StoredRecord]:
    records = list(records)
    record = records[index]
    document = json.loads(record.body)
    stamp = document["timestamp"]
    if kind == "body_field":
        document["customer"] = record.customer + "x"
        records[index] = _with_body(record, document, rehash)
    elif kind == "body_not_json":
        records[index] = _with_body(record, b"not json", rehash)
    elif kind == "body_array":
        records[index] = _with_body(record, [document], rehash)
    elif kind.startswith("timestamp_"):
        document["timestamp"] = {
            "timestamp_offset": stamp.replace("Z", "+00:00"),
            "timestamp_naive": stamp.replace("Z", ""),
            "timestamp_digits": stamp.replace("Z", ".0000001Z")
            if "." not in stamp
            else stamp.replace("Z", "9Z"),
            "timestamp_number": 12,
        }[kind]
        records[index] = _with_body(record, document, rehash)
    elif kind == "hash":
        records[index] = record._replace(hash=bytes(32))
    elif kind.startswith("column_"):
        name = kind.removeprefix("column_")
        if name == "time":
            records[index] = record._replace(timestamp_us=record.timestamp_us + 1)
        else:
            field = {"customer": "customer", "id": "id", "type": "type"}[name]
            records[index] = record._replace(**{field: getattr(record, field) + "x"})
    elif kind == "sequence":
        records[index] = record._replace(sequence=record.sequence + 1)
    elif kind == "remove":
        del records[index]
    elif kind == "duplicate":
        records.insert(index, record)
    elif kind == "swap" and index + 1 < len(records):
        records[index], records[index + 1] = records[index + 1], records[index]
    elif kind == "not_bytes":
        records[index] = record._replace(body=bytearray(record.body))
    return records


def _resealed(records: list[StoredRecord], sizes: list[int]) -> list[BatchRecord]:
    """Batches over the rows as they are now (their stored hashes), in the given sizes:
    the walk then reaches each record's own checks."""
    batches: list[BatchRecord] = []
    head = HeadState()
    position = 0
    for size in sizes:
        leaves = [bytes(record.hash) for record in records[position : position + size]]
        position += size
        if not leaves:
            break
        batch, head = seal_batch(0, head, leaves)
        batches.append(batch)
    return batches


class StoreFailed(Exception):
    """A read that fails (a damaged page under the cursor)."""


def _read(records: list[StoredRecord], failing: int | None) -> Iterator[StoredRecord]:
    """The records as a cursor gives them; the read of record ``failing`` fails."""
    for index, record in enumerate(records):
        if index == failing:
            raise StoreFailed(f"cannot read record {index}")
        yield record


def _walk(
    records: list[StoredRecord],
    batches: list[BatchRecord],
    heads: dict[int, HeadState],
    failing: int | None,
) -> tuple[ChainReport, dict[int, HeadState]] | str:
    """The report (and heads), or the read failure the walk met first."""
    try:
        report = verify_chains(1, _read(records, failing), batches, heads)
    except StoreFailed as error:
        return str(error)
    return report, report.heads


def record_by_record(
    self: Any,
    records: Iterator[StoredRecord],
    batches: Iterator[BatchRecord],
    expected: Any,
) -> None:
    """``_PartitionWalk.walk`` as it was before batches were checked at once (841823a):
    the reference every report here is compared with."""
    pending = next(records, None)
    for batch in batches:
        leaves: list[bytes] = []
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
        for sequence in range(batch.first_sequence, batch.last_sequence + 1):
            if pending is None or pending.sequence != sequence:
                found = "the partition ends" if pending is None else f"found {pending.sequence}"
                raise _Problem(
                    f"batch {batch.number} names sequence {sequence}: {found}"
                    " (events removed or reordered)",
                    sequence,
                    batch.number,
                )
            problem = _record_problem(pending)
            if problem is not None:
                raise _Problem(problem, sequence, batch.number)
            leaves.append(pending.hash)
            self.records += 1
            pending = next(records, None)
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
    if pending is not None:
        raise _Problem(
            f"sequence {pending.sequence} is in no committed batch (after batch"
            f" {self.head.batches}, which ends at {self.head.sequence})",
            pending.sequence,
        )


def _reports(
    records: list[StoredRecord],
    batches: list[BatchRecord],
    heads: dict[int, HeadState],
    failing: int | None = None,
) -> tuple[Any, Any]:
    fast = _walk(records, batches, heads, failing)
    with mock.patch.object(chain._PartitionWalk, "walk", record_by_record):
        slow = _walk(records, batches, heads, failing)
    with mock.patch.object(chain, "clean_batch_leaves", lambda *_: None):
        assert _walk(records, batches, heads, failing) == slow
    return fast, slow


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    kind=st.sampled_from(KINDS),
    place=st.floats(0, 0.999),
    rehash=st.booleans(),
    reseal=st.booleans(),
    as_tuples=st.booleans(),
)
def test_batch_at_once_names_what_record_by_record_names(
    sizes: list[int], kind: str, place: float, rehash: bool, reseal: bool, as_tuples: bool
) -> None:
    records, batches, heads = build(1, {0: sizes})
    records = _tampered(records, kind, int(place * len(records)), rehash)
    if reseal:
        batches = _resealed(records, sizes)
    fast, slow = _reports(records, batches, heads)
    assert fast == slow
    assert not isinstance(fast, str)
    fast = fast[0]
    # the range walk (of plain tuples, as the workers read them, or of records) meets
    # the same first item
    rows: list[Any] = [tuple(record) for record in records] if as_tuples else records
    whole = with_batches(next(plan_ranges(0, batches, {}, 10**9)), batches)
    outcome = walk_range(whole, iter(rows))
    assert (outcome.records, outcome.head) == (fast.records, fast.heads[0])
    if outcome.problem is not None:
        assert (outcome.problem, outcome.sequence) == (fast.problem, fast.bad_sequence)


def test_an_untampered_ledger_is_passed_batch_at_once() -> None:
    """The fast check is what runs on a sound ledger (no batch falls back)."""
    records, batches, heads = build(1, {0: [3, 5, 1]})
    with mock.patch.object(chain, "_record_problem", side_effect=AssertionError):
        report = verify_chains(1, iter(records), batches, heads)
    assert report.intact and report.records == 9


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    kind=st.sampled_from(KINDS),
    place=st.floats(0, 0.999),
    failing=st.floats(0, 1.2),
    reseal=st.booleans(),
)
def test_a_read_that_fails_is_met_where_record_by_record_meets_it(
    sizes: list[int], kind: str, place: float, failing: float, reseal: bool
) -> None:
    """A store failing under the walk (and a tampered record before or after it, or
    none): the same first bad item, or the same failure, as record by record."""
    records, batches, heads = build(1, {0: sizes})
    records = _tampered(records, kind, int(place * len(records)), rehash=True)
    if reseal:
        batches = _resealed(records, sizes)
    fast, slow = _reports(records, batches, heads, int(failing * len(records)))
    assert fast == slow

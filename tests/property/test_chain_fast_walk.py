"""The chain walk's batch-at-once check names what the record-by-record check names
(hypothesis).

``core.chain.clean_batch_leaves`` passes a whole batch's rows in one loop over plain
tuples; whatever it cannot pass goes to the record-by-record check. Whatever is done to
a ledger (bodies, hashes, columns, sequences changed, rows removed, duplicated or
swapped, stored bytes that are not ``bytes``, timestamps spelled another way, batches
re-sealed over the changed rows so the walk reaches the records' own checks), the walk
with it reports exactly what the walk without it (every batch checked record by record)
reports: the same first bad item, record count and heads; rows handed over as plain
tuples (as range walkers read them) or as ``StoredRecord``.
"""

from __future__ import annotations

import json
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


def _reports(
    records: list[StoredRecord], batches: list[BatchRecord], heads: dict[int, HeadState]
) -> tuple[ChainReport, ChainReport]:
    fast = verify_chains(1, iter(records), batches, heads)
    with mock.patch.object(chain, "clean_batch_leaves", lambda *_: None):
        slow = verify_chains(1, iter(records), batches, heads)
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
    assert fast.heads == slow.heads
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

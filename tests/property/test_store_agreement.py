"""Both stores answer every event alike (hypothesis): generated batches with control
characters, NUL, lone surrogates, huge, tiny and over-precise numbers and deep nesting go
to a SQLite ledger and to this run's store (PostgreSQL on its run); every event gets the
outcome the core predicts (status, sequence, errors) on both, and the valid events beside
rejected ones are stored, byte for byte the same."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meterline import Ledger
from meterline.core.events import (
    PreparedEvent,
    event_source,
    prepare_event,
    same_event,
    source_idempotency_key,
)
from meterline.core.partitions import partition_of
from meterline.ledger.event_ledger import open_store
from meterline.ledger.store import DEDUP_KEYS, DedupKey
from tests.conftest import FIXED_NOW_US, Databases
from tests.property.event_strategies import (
    UNSTORABLE,
    nested_values,
    tricky_numbers,
    tricky_texts,
)

Answer = tuple[str, str | None, int | None, list[tuple[str, str]]]
"""One event's outcome: status, id answered, sequence, errors as (field, reason)."""


def nested(depth: int, leaf: object) -> object:
    """``leaf`` under ``depth`` levels of objects and arrays."""
    value = leaf
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


one_unusual = st.tuples(
    st.sampled_from(["", "evt-", "acme "]), st.sampled_from(UNSTORABLE), st.text(max_size=3)
).map("".join)
"""Text with one character a store could treat differently (maybe more in the tail)."""
values = st.one_of(
    tricky_numbers,
    tricky_texts,
    one_unusual,
    nested_values,
    st.builds(nested, st.integers(0, 9), st.one_of(tricky_numbers, one_unusual)),
)
MUTATIONS = ("id", "customer", "type", "source", "timestamp", "value", "name")


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid native event, then (mostly) one field or property made unusual."""
    raw: dict[str, Any] = {
        "id": draw(st.sampled_from(["e0", "e1", "e2", "e3"])),
        "customer": draw(st.sampled_from(["acme", "globex"])),
        "type": draw(st.sampled_from(["llm.completion", "gpu.runtime"])),
        "timestamp": draw(st.sampled_from(["2026-11-01T10:00:00Z", "2026-11-23T12:00:00+01:00"])),
        "properties": {"input_tokens": draw(st.integers(0, 10**6)), "model": "gpt-4o"},
    }
    source = draw(st.sampled_from([None, "/a", "/b"]))
    if source is not None:
        raw["source"] = source
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), max_size=2)):
        if mutation in ("id", "customer", "type", "source"):
            raw[mutation] = draw(st.one_of(one_unusual, tricky_texts))
        elif mutation == "timestamp":
            raw["timestamp"] = draw(tricky_texts)
        elif mutation == "value":
            raw["properties"][draw(st.sampled_from(["input_tokens", "cost", "usage"]))] = draw(
                values
            )
        else:
            raw["properties"][draw(one_unusual)] = 1
    return raw


def predicted(
    batches: list[list[dict[str, Any]]], dedup_key: DedupKey, partitions: int = 1
) -> list[list[Answer]]:
    """What the core says each event's outcome is: rejected with its errors, or accepted,
    duplicate or conflict by the ledger's idempotency key, with the sequence its
    customer's partition gives it (each partition numbers its own events)."""
    stored: dict[tuple[str, ...], tuple[int, bytes]] = {}
    counts: dict[int, int] = {}
    answers = []
    for batch in batches:
        batch_answers: list[Answer] = []
        for raw in batch:
            prepared = prepare_event(raw, FIXED_NOW_US)
            if not isinstance(prepared, PreparedEvent):
                errors = [(error.field, error.reason) for error in prepared]
                # the id is answered back unless it is not Unicode text
                answered = None if _has_surrogate(raw["id"]) else raw["id"]
                batch_answers.append(("rejected", answered, None, errors))
                continue
            key: tuple[str, ...] = (prepared.customer, prepared.id)
            if dedup_key == "source_id":
                source = event_source(prepared.body)
                key = source_idempotency_key(prepared.customer, prepared.id, source)
            found = stored.get(key)
            if found is not None:
                status = "duplicate" if same_event(found[1], prepared.body) else "conflict"
                batch_answers.append((status, prepared.id, found[0], []))
                continue
            partition = partition_of(prepared.customer, partitions)
            counts[partition] = counts.get(partition, 0) + 1
            stored[key] = (counts[partition], prepared.body)
            batch_answers.append(("accepted", prepared.id, counts[partition], []))
        answers.append(batch_answers)
    return answers


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= character <= "\udfff" for character in text)


def ingested(
    location: Path | str, batches: list[list[dict[str, Any]]], dedup_key: DedupKey
) -> tuple[list[list[Answer]], list[tuple[int, str, str, bytes]], int]:
    """Every event's answer from a ledger at ``location``, what it stored (in (partition,
    sequence) order) and its partition count."""
    with Ledger(open_store(location, dedup_key=dedup_key), lambda: FIXED_NOW_US) as ledger:
        partitions = ledger.store.partitions
        answers = []
        for batch in batches:
            outcome = ledger.ingest(batch)
            answers.append(
                [
                    (
                        result.status,
                        result.id,
                        result.sequence,
                        [(error.field, error.reason) for error in result.errors or []],
                    )
                    for result in outcome.results
                ]
            )
        records = [(r.sequence, r.customer, r.id, r.body) for r in ledger.store.records()]
        assert ledger.verify().intact
    return answers, records, partitions


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    batches=st.lists(st.lists(events(), min_size=1, max_size=8), min_size=1, max_size=3),
    replayed=st.lists(st.integers(0, 23), max_size=4),
    dedup_key=st.sampled_from(DEDUP_KEYS),
)
def test_sqlite_and_this_store_answer_every_event_alike(
    databases: Databases,
    batches: list[list[dict[str, Any]]],
    replayed: list[int],
    dedup_key: DedupKey,
) -> None:
    """Every event gets the same status, sequence and errors on SQLite and on this run's
    store, as the core predicts; the valid events beside rejected ones are stored."""
    sent = [raw for batch in batches for raw in batch]
    if replayed:  # a last batch re-sends some events: duplicates
        batches = [*batches, [sent[number % len(sent)] for number in replayed]]
    with tempfile.TemporaryDirectory() as folder:
        answers, records, partitions = ingested(
            databases.new(Path(folder), "agree"), batches, dedup_key
        )
        expected = predicted(batches, dedup_key, partitions)
        assert answers == expected
        if databases.kind != "sqlite":
            reference, stored, _ = ingested(Path(folder) / "reference.db", batches, dedup_key)
            assert reference == predicted(batches, dedup_key, 1)
            assert sorted(row[1:] for row in stored) == sorted(row[1:] for row in records)
    accepted = [answer for batch in expected for answer in batch if answer[0] == "accepted"]
    assert sorted((record[0], record[2]) for record in records) == sorted(
        (answer[2], answer[1]) for answer in accepted
    )

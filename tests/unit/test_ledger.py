"""The ledger over a real SQLite file and a real PostgreSQL schema: idempotency,
atomicity, queries, tampering."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from meterline import BatchTooLarge, EventQuery, IngestLimits, Ledger
from meterline.errors import StoreError
from meterline.ledger.database import integrity_errors
from meterline.ledger.event_ledger import open_store
from meterline.ledger.location import is_postgres
from meterline.ledger.sqlite import SqliteStore
from tests.conftest import FIXED_NOW_US, Location, event
from tests.stores import rows, tamper

NewDb = Callable[..., Location]


def statuses(outcome: object) -> list[str]:
    return [result.status for result in outcome.results]  # type: ignore[attr-defined]


def test_accepted_events_get_dense_sequences(ledger: Ledger) -> None:
    """Accepted events are numbered 1, 2, 3... in batch order."""
    outcome = ledger.ingest([event(1), event(2), event(3)])
    assert [result.sequence for result in outcome.results] == [1, 2, 3]
    assert ledger.head()[0] == 3


def test_replay_is_duplicate_and_changes_nothing(ledger: Ledger) -> None:
    """Sending a batch again answers duplicate with the original sequences."""
    ledger.ingest([event(1), event(2)])
    head = ledger.head()
    replay = ledger.ingest([event(2), event(1)])
    assert statuses(replay) == ["duplicate", "duplicate"]
    assert [result.sequence for result in replay.results] == [2, 1]
    assert ledger.head() == head


def test_same_id_different_payload_is_conflict(ledger: Ledger) -> None:
    """The same id with other content answers conflict and stores nothing."""
    ledger.ingest([event(1)])
    outcome = ledger.ingest([event(1, properties={"input_tokens": 1})])
    assert statuses(outcome) == ["conflict"] and outcome.results[0].sequence == 1
    assert ledger.head()[0] == 1


def test_id_is_scoped_per_customer(ledger: Ledger) -> None:
    """The same id under two customers is two events."""
    outcome = ledger.ingest([event(1, customer="acme"), event(1, customer="globex")])
    assert statuses(outcome) == ["accepted", "accepted"]


def test_duplicates_within_one_batch(ledger: Ledger) -> None:
    """An id repeated inside one batch is stored once; the repeat is duplicate or conflict."""
    outcome = ledger.ingest([event(1), event(1), event(1, type="other")])
    assert statuses(outcome) == ["accepted", "duplicate", "conflict"]
    assert ledger.head()[0] == 1


def test_mixed_batch_keeps_valid_and_leaves_no_trace_of_invalid(ledger: Ledger) -> None:
    """Rejected events are answered in place; valid ones around them are stored densely."""
    outcome = ledger.ingest([event(1), event(2, customer=""), event(3)])
    assert statuses(outcome) == ["accepted", "rejected", "accepted"]
    assert [result.sequence for result in outcome.results] == [1, None, 2]
    stored = ledger.query(EventQuery(limit=10)).events
    assert [item.record.id for item in stored] == ["evt-1", "evt-3"]
    outcome.check()


UNSTORABLE = [
    ("id", event(2, id="evt\x00-2")),
    ("customer", event(3, customer="acme\x00")),
    ("type", event(4, type="llm\x01completion")),
    ("source", event(5, source="svc\x00")),
    ("id", event(6, id="evt-\ud800")),
    ("properties.model", event(7, properties={"model": "gpt\x00"})),
    ("properties", event(8, properties={"a\x00": 1})),
    ("properties.prompt", event(9, properties={"prompt": "\udc00"})),
    ("properties.input_tokens", event(10, properties={"input_tokens": Decimal("1E+400")})),
    ("properties.usage[0]", event(11, properties={"usage": [10**18]})),
]


def test_unstorable_events_are_rejected_alike_and_their_batch_is_kept(ledger: Ledger) -> None:
    """NUL, control characters, lone surrogates and unratable numbers are rejected per
    event on both stores, naming the field; the valid events beside them are stored."""
    batch = [event(1), *(raw for _, raw in UNSTORABLE), event(12)]
    outcome = ledger.ingest(batch)
    assert statuses(outcome) == ["accepted", *["rejected"] * len(UNSTORABLE), "accepted"]
    rejected = outcome.results[1:-1]
    assert [result.errors[0].field for result in rejected] == [f for f, _ in UNSTORABLE]
    assert all(len(result.errors) == 1 for result in rejected)
    assert rejected[0].id == "evt\x00-2" and rejected[4].id is None  # no surrogate answered
    stored = ledger.query(EventQuery(limit=100)).events
    assert [item.record.id for item in stored] == ["evt-1", "evt-12"]
    assert ledger.verify().intact


def _cloudevent(number: int, **changes: object) -> dict[str, object]:
    """A structured CloudEvent without ``time`` (stamped at receipt)."""
    envelope: dict[str, object] = {
        "specversion": "1.0",
        "id": f"ce-{number}",
        "source": "/services/chat",
        "type": "llm.completion",
        "subject": "acme",
        "data": {"input_tokens": number},
    }
    envelope.update(changes)
    return envelope


def test_cloudevent_without_time_is_stamped_and_its_replay_is_a_duplicate(new_db: NewDb) -> None:
    """A time-less CloudEvent takes the batch's clock reading; re-sent later, it is a
    duplicate of the first receipt (not a conflict), and other data is a conflict."""
    location = new_db()
    with Ledger(open_store(location), lambda: FIXED_NOW_US) as first:
        assert statuses(first.ingest_cloudevents([_cloudevent(1)])) == ["accepted"]
    with Ledger(open_store(location), lambda: FIXED_NOW_US + 3_600_000_000) as later:
        replay = later.ingest_cloudevents(
            [_cloudevent(1), _cloudevent(1, data={"input_tokens": 2}), _cloudevent(3)]
        )
        assert statuses(replay) == ["duplicate", "conflict", "accepted"]
        assert [result.sequence for result in replay.results] == [1, 1, 2]
        stored = later.query(EventQuery(limit=10)).events
        assert [item.record.timestamp_us for item in stored] == [
            FIXED_NOW_US,
            FIXED_NOW_US + 3_600_000_000,
        ]
        assert [item.ingested_at_us for item in stored] == [
            item.record.timestamp_us for item in stored
        ]
        assert all(b'"timestamp_origin":"receipt"' in item.record.body for item in stored)
        assert later.verify().intact


# -- the idempotency key: (customer, id) or (source, id) -------------------------------------


def test_default_dedup_key_is_customer_and_id(new_db: NewDb) -> None:
    """A new ledger deduplicates by (customer, id): sources do not matter, customers do."""
    location = new_db()
    with Ledger(open_store(location), lambda: FIXED_NOW_US) as ledger:
        assert ledger.store.dedup_key == "customer_id"
        outcome = ledger.ingest(
            [event(1, source="/a"), event(1, source="/b"), event(1, customer="globex")]
        )
        assert statuses(outcome) == ["accepted", "conflict", "accepted"]
    assert rows(location, "SELECT value FROM meta WHERE name = 'dedup_key'") == [("customer_id",)]


def test_source_dedup_key_keys_on_source_and_id(new_db: NewDb) -> None:
    """With dedup_key="source_id", (source, id) is the event, whatever its customer; an
    event without a source keeps (customer, id); the choice survives reopening."""
    location = new_db()
    batch = [
        event(1, source="/a"),
        event(1, source="/a", customer="globex"),  # same (source, id), other customer
        event(1, source="/b"),  # same id, other source
        event(1),  # no source: (customer, id) in its own namespace
        event(1, customer="globex"),
        event(1, source="/a"),  # replay
    ]
    with Ledger(open_store(location, dedup_key="source_id"), lambda: FIXED_NOW_US) as ledger:
        assert ledger.store.dedup_key == "source_id"
        outcome = ledger.ingest(batch)
        assert statuses(outcome) == [
            "accepted",
            "conflict",
            "accepted",
            "accepted",
            "accepted",
            "duplicate",
        ]
        assert [result.sequence for result in outcome.results] == [1, 1, 2, 3, 4, 1]
        cloud = ledger.ingest_cloudevents([_cloudevent(1, id="evt-1", source="/b")])
        assert statuses(cloud) == ["conflict"] and cloud.results[0].sequence == 2
    with Ledger(open_store(location), lambda: FIXED_NOW_US) as reopened:
        assert reopened.store.dedup_key == "source_id"
        again = reopened.ingest(batch)
        assert statuses(again) == ["duplicate", "conflict", *["duplicate"] * 4]
        assert reopened.head()[0] == 4
        assert reopened.verify().intact


def test_dedup_key_is_fixed_when_the_ledger_is_created(new_db: NewDb) -> None:
    """Another dedup key for an existing ledger is refused; one made before the setting
    existed is keyed by (customer, id); an unknown key is a ValueError."""
    location = new_db()
    open_store(location, dedup_key="source_id").close()
    with pytest.raises(StoreError, match="deduplicates by source_id, not customer_id"):
        open_store(location, dedup_key="customer_id")
    older = new_db("older")
    with Ledger(open_store(older), lambda: FIXED_NOW_US) as ledger:
        ledger.ingest([event(1)])
    tamper(older, "DELETE FROM meta WHERE name = 'dedup_key'")
    with pytest.raises(StoreError, match="deduplicates by customer_id, not source_id"):
        open_store(older, dedup_key="source_id")
    store = open_store(older)
    assert store.dedup_key == "customer_id"
    store.close()
    with pytest.raises(ValueError, match="customer_id, source_id"):
        open_store(new_db("other"), dedup_key="event_id")  # type: ignore[arg-type]


def test_source_keyed_hash_collisions_never_drop_events(tmp_path: Path) -> None:
    """On the embedded store keyed by (source, id), colliding keys are still told apart."""
    path = tmp_path / "collide.db"
    batch = [event(1, source="/a"), event(1, source="/b"), event(1), event(1, customer="globex")]
    store = SqliteStore(path, key_function=lambda key: 7, dedup_key="source_id")
    with Ledger(store, lambda: FIXED_NOW_US) as ledger:
        assert statuses(ledger.ingest(batch)) == ["accepted"] * 4
    reopened = SqliteStore(path, key_function=lambda key: 7)
    with Ledger(reopened, lambda: FIXED_NOW_US) as ledger:
        assert statuses(ledger.ingest(batch)) == ["duplicate"] * 4


def test_batch_over_limit_is_refused_whole(new_db: NewDb) -> None:
    """A batch with more events than batch_events_max raises and writes nothing."""
    limits = IngestLimits(batch_events_max=3)
    with Ledger(open_store(new_db()), lambda: FIXED_NOW_US, limits) as small:
        with pytest.raises(BatchTooLarge, match="limit is 3"):
            small.ingest([event(n) for n in range(4)])
        assert small.head()[0] == 0


def test_hash_collisions_never_drop_events(tmp_path: Path) -> None:
    """With every key colliding, distinct events are all kept and replays still dedupe."""
    store = SqliteStore(tmp_path / "collide.db", key_function=lambda pair: 7)
    with Ledger(store, lambda: FIXED_NOW_US) as colliding:
        first = colliding.ingest([event(n) for n in range(50)])
        assert first.accepted == 50
        again = colliding.ingest([event(n) for n in range(60)])
        assert (again.duplicate, again.accepted) == (50, 10)
        assert colliding.ingest([event(3, type="changed")]).conflict == 1
    reopened = SqliteStore(tmp_path / "collide.db", key_function=lambda pair: 7)
    with Ledger(reopened, lambda: FIXED_NOW_US) as colliding:
        assert colliding.ingest([event(n) for n in range(60)]).duplicate == 60
        assert colliding.verify().intact


@pytest.mark.parametrize("dedup_key", ["customer_id", "source_id"])
def test_batch_and_event_staging_store_the_same_rows(tmp_path: Path, dedup_key: str) -> None:
    """The embedded store stages a batch of new events column by column and a batch with
    a replay event by event (every key colliding forces it): both store the same rows,
    batches and heads, and answer alike."""
    batches = [
        [event(n, source="/s") if n % 2 else event(n) for n in range(5)],
        [event(3, source="/s"), event(9), event(9), event(2, type="changed"), event(10)],
        [event(n) for n in range(11, 14)],
    ]
    answers, stored = [], []
    for name, key_function in (("columns", hash), ("each", lambda key: 7)):
        store = SqliteStore(tmp_path / f"{name}.db", key_function, dedup_key)  # type: ignore[arg-type]
        with Ledger(store, lambda: FIXED_NOW_US) as ledger:
            answers.append([ledger.ingest(batch) for batch in batches])
            assert ledger.verify().intact
            events = rows(store.path, "SELECT * FROM events ORDER BY sequence")
            stored.append((events, ledger.head(), list(store.batches())))
    assert answers[0] == answers[1]
    assert stored[0] == stored[1]
    assert [outcome.accepted for outcome in answers[0]] == [5, 2, 3]


def test_dedup_survives_reopen(new_db: NewDb) -> None:
    """After closing and reopening the ledger, old ids are still duplicates."""
    location = new_db()
    with Ledger(open_store(location), lambda: FIXED_NOW_US) as first:
        first.ingest([event(n) for n in range(20)])
    with Ledger(open_store(location), lambda: FIXED_NOW_US) as second:
        assert second.ingest([event(n) for n in range(20)]).duplicate == 20


def test_two_writers_on_one_ledger_stay_exact(new_db: NewDb) -> None:
    """Two ledgers on one store see each other's appends: no double count, intact chains."""
    path = new_db("shared")
    with (
        Ledger(open_store(path), lambda: FIXED_NOW_US) as one,
        Ledger(open_store(path), lambda: FIXED_NOW_US) as two,
    ):
        one.ingest([event(n) for n in range(10)])
        outcome = two.ingest([event(n) for n in range(15)])
        assert (outcome.duplicate, outcome.accepted) == (10, 5)
        assert one.ingest([event(n) for n in range(15)]).duplicate == 15
        assert [r.sequence for r in outcome.results[10:]] == [11, 12, 13, 14, 15]
        assert one.verify().intact


def test_events_cannot_be_updated_or_deleted(ledger: Ledger) -> None:
    """The events table refuses UPDATE and DELETE, even from plain SQL."""
    ledger.ingest([event(1)])
    for statement in (
        "UPDATE events SET customer = 'x'",
        "DELETE FROM events",
        "DELETE FROM batches",
        "UPDATE batches SET root = root",
    ):
        with pytest.raises(integrity_errors(), match="append-only"):
            rows(ledger.store.path, statement)
    assert ledger.verify().intact


def test_query_filters_and_pages(ledger: Ledger) -> None:
    """Queries filter by customer, type and time range and page by sequence cursor."""
    ledger.ingest(
        [
            event(n, customer="acme" if n % 2 else "globex", timestamp=f"2026-11-01T10:00:{n:02d}Z")
            for n in range(1, 21)
        ]
    )
    seen, after = [], 0
    while True:
        page = ledger.query(EventQuery(customer="acme", after_sequence=after, limit=3))
        seen += [item.record.id for item in page.events]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [f"evt-{n}" for n in range(1, 21, 2)]
    window = ledger.query(
        EventQuery(start_us=1_793_527_205_000_000, end_us=1_793_527_208_000_000, limit=100)
    )
    # pages run partition by partition (no order across partitions), each in sequence
    assert sorted(item.record.id for item in window.events) == ["evt-5", "evt-6", "evt-7"]
    assert ledger.query(EventQuery(type="nothing", limit=5)).events == []


def _verify_cli(path: Location) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterline", "verify", "--db", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


_REWRITE_BODY = {  # event 4 holds "1204", event 5 "1205"; SQLite's text is a type change
    "sqlite": {
        "as_text": "replace(body, X'31323034', X'39393939')",
        "as_bytes": "CAST(replace(body, X'31323035', X'39393939') AS BLOB)",
    },
    "postgresql": {
        "as_text": "convert_to(replace(convert_from(body, 'UTF8'), '1204', '9999'), 'UTF8')",
        "as_bytes": "convert_to(replace(convert_from(body, 'UTF8'), '1205', '9999'), 'UTF8')",
    },
}


@pytest.mark.parametrize(
    ("statement", "bad_sequence"),
    [
        ("UPDATE events SET body = {as_text} WHERE sequence = 4", 4),
        ("UPDATE events SET body = {as_bytes} WHERE sequence = 5", 5),
        ("DELETE FROM events WHERE sequence = 6", 6),
        ("DELETE FROM events WHERE sequence >= 9", 9),
        ("UPDATE events SET customer = 'mallory' WHERE sequence = 2", 2),
        ("UPDATE events SET sequence = sequence + 100 WHERE sequence = 3", 3),
    ],
)
def test_verify_cli_names_first_bad_sequence(
    new_db: NewDb, statement: str, bad_sequence: int
) -> None:
    """`meterline verify` exits 1 naming the first altered, removed or moved record."""
    path = new_db()
    with Ledger(open_store(path), lambda: FIXED_NOW_US) as fresh:
        for number in range(1, 11):
            fresh.ingest([event(number)])
    assert _verify_cli(path).returncode == 0
    store = "postgresql" if is_postgres(path) else "sqlite"
    tamper(path, statement.format(**_REWRITE_BODY[store]))
    finished = _verify_cli(path)
    assert finished.returncode == 1
    assert f"sequence {bad_sequence}" in finished.stderr


def test_verify_cli_on_intact_ledger_prints_head(new_db: NewDb) -> None:
    """An intact ledger verifies with exit 0 and prints its head hash."""
    path = new_db()
    with Ledger(open_store(path), lambda: FIXED_NOW_US) as fresh:
        fresh.ingest([event(n) for n in range(5)])
        head_hash = fresh.head()[1].hex()
    finished = _verify_cli(path)
    assert finished.returncode == 0 and head_hash in finished.stdout.replace("\n", "")


def test_background_checkpointer_copies_wal_and_stops_on_close(tmp_path: Path) -> None:
    """Committed WAL frames reach the database file off the commit path; close stops it."""
    import time

    path = tmp_path / "wal.db"
    store = SqliteStore(path)
    with Ledger(store, lambda: FIXED_NOW_US) as busy:
        for start in range(0, 5000, 500):
            busy.ingest([event(n) for n in range(start, start + 500)])
        # ~2 MB of WAL is far below the writer's own checkpoint threshold, so only the
        # background thread can move these pages into the main file.
        deadline = time.monotonic() + 10
        while path.stat().st_size < 1_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size > 1_000_000
    assert not store._checkpointer.is_alive()


def test_dropped_store_stops_its_checkpointer(tmp_path: Path) -> None:
    """A store garbage-collected without close() stops its background thread."""
    import gc

    store = SqliteStore(tmp_path / "dropped.db")
    thread = store._checkpointer
    del store
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()

"""The ledger facade: validate a batch, append what is valid, answer per event.

Gathers the inputs (the clock, the limits), asks the pure core to validate and
canonicalize each event, hands the valid ones to the store in one atomic, durable append,
and merges the answers back into input order. Rejected events leave no trace but their
error; a batch over the size limit is refused whole before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

from meterline.clock import Clock, system_clock_us
from meterline.core.chain import ChainReport, StoredRecord, verify_chains
from meterline.core.checkpoint_note import PartitionHead
from meterline.core.cloudevents import prepare_cloudevent
from meterline.core.dict_batches import prepare_dict_batch
from meterline.core.event_batches import prepare_plain_batch
from meterline.core.events import FieldError, PreparedEvent, prepare_event
from meterline.core.limits import DEFAULT_LIMITS, IngestLimits
from meterline.core.outcomes import BatchOutcome, EventOutcome
from meterline.errors import BatchTooLarge
from meterline.ledger.database import database_errors
from meterline.ledger.location import describe, is_postgres
from meterline.ledger.sqlite import SqliteStore
from meterline.ledger.store import DedupKey, EventPage, EventQuery, LedgerStore

Preparer = Callable[[object, int, IngestLimits], PreparedEvent | list[FieldError]]
AppendListener = Callable[[list[tuple[int, PreparedEvent]]], None]
"""Called after each durable append with the (sequence, event) pairs it accepted."""
_ONLY_PREPARED = {PreparedEvent}
_customer_of = attrgetter("customer")


def _raw_id(raw: object) -> str | None:
    """The id a rejected event was sent with, if it had a usable one (both shapes use "id"):
    a string that is Unicode text (a lone surrogate could not be answered in JSON)."""
    value = raw.get("id") if isinstance(raw, dict) else None
    if type(value) is not str or (not value.isprintable() and _has_surrogate(value)):
        return None
    return value


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= character <= "\udfff" for character in text)


def merge_outcomes(stored: list[EventOutcome], rejected: list[EventOutcome]) -> BatchOutcome:
    """One batch's answer: the stored (or queued) outcomes and the rejected ones, in input
    order."""
    if not rejected:
        return BatchOutcome.of(stored)
    return BatchOutcome.of(sorted(stored + rejected, key=lambda outcome: outcome.index))


class Ledger:
    """The event ledger: ingestion, queries and verification over one store."""

    def __init__(
        self,
        store: LedgerStore,
        clock: Clock = system_clock_us,
        limits: IngestLimits = DEFAULT_LIMITS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits
        self.listeners: list[AppendListener] = []

    def ingest(self, events: Sequence[Any], only_customer: str | None = None) -> BatchOutcome:
        """Ingest native events ``{id, customer, type, timestamp, properties}``.

        With ``only_customer``, events for any other customer are rejected.
        """
        return self._ingest(events, prepare_event, only_customer, "customer")

    def ingest_cloudevents(
        self, envelopes: Sequence[Any], only_customer: str | None = None
    ) -> BatchOutcome:
        """Ingest CloudEvents 1.0 envelopes (structured mode, decoded)."""
        return self._ingest(envelopes, prepare_cloudevent, only_customer, "subject")

    def _ingest(
        self,
        raws: Sequence[Any],
        prepare: Preparer,
        only_customer: str | None,
        customer_field: str,
    ) -> BatchOutcome:
        valid, rejected, now_us = self.prepare_batch(raws, prepare, only_customer, customer_field)
        stored = self.store.append(valid, now_us)
        if self.listeners:
            appended = [
                (outcome.sequence, valid[number][1])
                for number, outcome in enumerate(stored)
                if outcome.status == "accepted" and outcome.sequence is not None
            ]
            if appended:
                for listener in self.listeners:
                    listener(appended)
        return merge_outcomes(stored, rejected)

    def prepare_batch(
        self,
        raws: Sequence[Any],
        prepare: Preparer = prepare_event,
        only_customer: str | None = None,
        customer_field: str = "customer",
    ) -> tuple[list[tuple[int, PreparedEvent]], list[EventOutcome], int]:
        """Validate a batch without storing it: the valid events with their positions, an
        outcome per rejected event, and the clock reading they were checked against.
        Native events (``prepare_event``) go through the batch path
        (``core.dict_batches.prepare_dict_batch``), which answers the same."""
        limit = self.limits.batch_events_max
        if len(raws) > limit:
            raise BatchTooLarge(f"batch has {len(raws)} events, the limit is {limit}")
        now_us = self.clock()
        limits = self.limits
        if prepare is prepare_event:
            answers = prepare_dict_batch(raws, now_us, limits)
        else:
            answers = [prepare(raw, now_us, limits) for raw in raws]
        if set(map(type, answers)) == _ONLY_PREPARED and (
            only_customer is None or set(map(_customer_of, answers)) == {only_customer}
        ):
            return list(enumerate(answers)), [], now_us  # type: ignore[arg-type]
        valid: list[tuple[int, PreparedEvent]] = []
        rejected: list[EventOutcome] = []
        for position, prepared in enumerate(answers):
            if type(prepared) is PreparedEvent:
                if only_customer is None or prepared.customer == only_customer:
                    valid.append((position, prepared))
                    continue
                prepared = [
                    FieldError(
                        customer_field, f"this key may only send events for {only_customer!r}"
                    )
                ]
            rejected.append(
                EventOutcome(position, "rejected", _raw_id(raws[position]), errors=prepared)  # type: ignore[arg-type]
            )
        return valid, rejected, now_us

    def prepare_plain(
        self, body: bytes, only_customer: str | None = None
    ) -> tuple[list[tuple[int, PreparedEvent]], list[EventOutcome], int] | None:
        """``prepare_batch`` of the native events in the JSON text ``body`` on the compiled
        batch path (``core.event_batches.prepare_plain_batch``): the same answer when every event
        is plainly valid and ``only_customer``'s (or there is none) and the batch is
        within its limit; None otherwise, and the caller decodes ``body`` and calls
        ``prepare_batch``, which answers every case."""
        now_us = self.clock()
        events = prepare_plain_batch(body, now_us, self.limits)
        if events is None or len(events) > self.limits.batch_events_max:
            return None
        if only_customer is not None:
            for event in events:
                if event.customer != only_customer:
                    return None
        return list(enumerate(events)), [], now_us

    def query(self, query: EventQuery) -> EventPage:
        """One bounded page of events matching ``query``."""
        return self.store.query(query)

    def head(self) -> tuple[int, bytes]:
        """The last sequence and its hash."""
        return self.store.head()

    def verify(
        self, checkpoints: Iterable[tuple[str, Iterable[PartitionHead]]] = ()
    ) -> ChainReport:
        """Re-walk every partition's events and batches, the stored heads, and the
        ``checkpoints`` given (label and heads; see ``ledger.checkpoints``). Never raises
        on what it reads: a store that fails mid-walk (a damaged file) is reported at the
        first sequence it could not check."""
        store = self.store
        walked = _Walked(store.records())
        try:
            return verify_chains(
                store.partitions, walked, store.batches(), store.partition_heads(), checkpoints
            )
        except database_errors() as error:
            return ChainReport(
                walked.count,
                {},
                store.partitions,
                bad_sequence=walked.last_sequence + 1,
                problem=f"{describe(store.path)} cannot be read past sequence"
                f" {walked.last_sequence} of partition {walked.last_partition} ({error})",
                bad_partition=walked.last_partition,
                check="store",
            )

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Walked:
    """The records a verification walks, remembering the last one read (so a read that
    fails can name where it stopped)."""

    def __init__(self, records: Iterable[StoredRecord]) -> None:
        self._records = records
        self.count = 0
        self.last_sequence = 0
        self.last_partition = 0

    def __iter__(self) -> Iterator[StoredRecord]:
        for record in self._records:
            self.count += 1
            self.last_sequence, self.last_partition = record.sequence, record.partition
            yield record


def open_ledger(
    path: str | Path,
    clock: Clock = system_clock_us,
    limits: IngestLimits = DEFAULT_LIMITS,
    dedup_key: DedupKey | None = None,
    create: bool = True,
) -> Ledger:
    """Open (creating if needed) the ledger at ``path``: a SQLite file, or a PostgreSQL
    database named by a ``postgresql://`` URL. ``dedup_key`` (``"customer_id"``, the
    default, or ``"source_id"``) is fixed when the ledger is created; asking an existing
    ledger for another is an error, None takes the ledger's own. ``create=False``: see
    ``open_store``."""
    return Ledger(open_store(path, dedup_key=dedup_key, create=create), clock=clock, limits=limits)


def open_store(
    location: str | Path,
    partitions: int | None = None,
    dedup_key: DedupKey | None = None,
    create: bool = True,
) -> LedgerStore:
    """The ledger store at ``location``: SQLite for a path (one chain), PostgreSQL for a
    ``postgresql://`` URL (``partitions`` chains, fixed when the ledger is created);
    ``dedup_key`` as for ``open_ledger``. ``create=False`` (the proof tools) leaves a
    SQLite file's schema as found (PostgreSQL runs its schema script once per ledger, so
    reopening changes nothing there)."""
    if is_postgres(location):
        from meterline.ledger.postgres import PostgresStore

        return PostgresStore(str(location), partitions, dedup_key)
    if partitions not in (None, 1):
        raise ValueError("partitions: a SQLite ledger has one chain; use PostgreSQL for more")
    return SqliteStore(location, dedup_key=dedup_key, create=create)

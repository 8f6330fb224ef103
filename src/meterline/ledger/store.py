"""The interface every ledger store satisfies (SQLite now, PostgreSQL next).

A store owns durability, the hash chain's tail, idempotency and the API keys. The ledger
facade validates and the store appends; both stay behind this one protocol so a second
store changes nothing above it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from meterline.core.chain import BatchRecord, HeadState, StoredRecord
from meterline.core.cuts import Cut
from meterline.core.events import PreparedEvent
from meterline.core.outcomes import EventOutcome
from meterline.keys import KeyStore
from meterline.ledger.heads import Lease

PAGE_EVENTS_MAX = 1000
"""The most events one query page returns."""

SCAN_ROWS_MAX = 200_000
"""The most ledger rows one query page examines; past it the page ends with a cursor."""

DedupKey = Literal["customer_id", "source_id"]
DEDUP_KEYS: tuple[DedupKey, ...] = ("customer_id", "source_id")
DEFAULT_DEDUP_KEY: DedupKey = "customer_id"
"""What makes two events the same event (the idempotency key), fixed when a ledger is
created: ``customer_id`` = ``(customer, id)``; ``source_id`` = ``(source, id)`` as
CloudEvents defines it (an event without a source keeps ``(customer, id)``; see
``core.events.source_idempotency_key``)."""


def check_dedup_key(value: object) -> DedupKey:
    """``value`` as a dedup key setting, or ValueError naming the choices."""
    if value not in DEDUP_KEYS:
        raise ValueError(f"dedup_key must be one of {', '.join(DEDUP_KEYS)}, got {value!r}")
    return value


def settled_dedup_key(stored: str | None, existing: bool, wanted: DedupKey | None) -> DedupKey:
    """The dedup key a ledger keeps: the one its ``meta`` holds (``stored``); without one,
    ``(customer, id)`` for an ``existing`` ledger (created before the setting existed),
    else ``wanted`` or the default (a new ledger, which then stores it)."""
    if stored is not None:
        return check_dedup_key(stored)
    if existing:
        return DEFAULT_DEDUP_KEY
    return wanted or DEFAULT_DEDUP_KEY


SEQUENCE_MAX = 2**63 - 1
"""The largest cursor either store takes (a signed 64-bit integer); past it is refused."""

POSITION_SEQUENCE_BITS = 40
"""A query cursor is a *position*: ``partition << 40 | sequence`` (on a single-partition
ledger, the sequence itself), so one integer pages across partitions in order."""


def position(partition: int, sequence: int) -> int:
    """The query cursor of event ``sequence`` of ``partition``."""
    return (partition << POSITION_SEQUENCE_BITS) | sequence


def split_position(value: int) -> tuple[int, int]:
    """(partition, sequence) of a query cursor."""
    return value >> POSITION_SEQUENCE_BITS, value & ((1 << POSITION_SEQUENCE_BITS) - 1)


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A bounded filter over the ledger, paged by ledger sequence."""

    customer: str | None = None
    type: str | None = None
    start_us: int | None = None
    end_us: int | None = None
    after_sequence: int = 0
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= PAGE_EVENTS_MAX:
            raise ValueError(f"limit must be between 1 and {PAGE_EVENTS_MAX}")
        if not 0 <= self.after_sequence <= SEQUENCE_MAX:
            raise ValueError(f"after must be between 0 and {SEQUENCE_MAX}")
        if self.start_us is not None and self.end_us is not None and self.end_us < self.start_us:
            raise ValueError("end must not be before start")


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A ledger record with its ingest time, as queries return it."""

    record: StoredRecord
    ingested_at_us: int


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of a query; ``next_after`` continues it, None when the ledger is exhausted."""

    events: list[StoredEvent]
    next_after: int | None


AppendBatch = Sequence[tuple[int, PreparedEvent]]
"""What ``LedgerStore.append`` takes: events, each with its position in the request."""
Leases = Mapping[int, Lease] | None
"""The write leases an appender holds, by partition (``ledger.heads``); None: no lease."""


class LedgerStore(KeyStore, Protocol):
    """Durable, append-only storage of the chained ledger and the API keys."""

    path: str
    """Where the store is: a SQLite file, or a ``postgresql://`` URL."""
    partitions: int
    """How many hash chains new events are spread over (``core.partitions``)."""
    dedup_key: DedupKey
    """The ledger's idempotency key (``DEDUP_KEYS``), fixed when it was created."""

    def append(
        self,
        batch: AppendBatch,
        ingested_at_us: int,
        leases: Leases = None,
    ) -> list[EventOutcome]:
        """Append the new events of ``batch`` atomically and durably, in order, one
        committed batch per partition written.

        ``batch`` pairs each event with its index in the caller's batch. Returns one outcome
        per pair: accepted (with its sequence in its partition), duplicate or conflict.
        With ``leases`` the commit is fenced (``ledger.heads``): refused with LeaseLost
        when a lease was taken over.
        """
        ...

    def head(self) -> tuple[int, bytes]:
        """The events held and the head hash (0 and the empty ledger's root when empty)."""
        ...

    def cut(self) -> Cut:
        """The ledger's current heads: a consistent cut holding every committed event."""
        ...

    def records(
        self, after: Cut | None = None, partitions: list[int] | None = None
    ) -> Iterator[StoredRecord]:
        """Every record past ``after`` (all when None), of ``partitions`` only when given,
        in (partition, sequence) order: there is no order across partitions."""
        ...

    def batches(self, partitions: list[int] | None = None) -> Iterator[BatchRecord]:
        """Every committed batch, in (partition, batch number) order."""
        ...

    def partition_heads(self) -> dict[int, HeadState]:
        """Each partition's stored head."""
        ...

    def checkpoint_notes(self, after_number: int = 0) -> list[tuple[int, str]]:
        """The stored checkpoints past ``after_number``: (number, signed note)."""
        ...

    def query(self, query: EventQuery) -> EventPage:
        """One bounded page of events matching ``query``."""
        ...

    def close(self) -> None: ...

"""The interface every ledger store satisfies (SQLite now, PostgreSQL next).

A store owns durability, the hash chain's tail, idempotency and the API keys. The ledger
facade validates and the store appends; both stay behind this one protocol so a second
store changes nothing above it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from meterline.core.chain import Checkpoint, StoredRecord
from meterline.core.cuts import Cut
from meterline.core.events import PreparedEvent
from meterline.core.outcomes import EventOutcome
from meterline.keys import KeyStore

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


SEQUENCE_MAX = 2**63 - 1
"""The largest ledger sequence either store can hold (a signed 64-bit integer); a cursor
past it is refused."""


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


class LedgerStore(KeyStore, Protocol):
    """Durable, append-only storage of the chained ledger and the API keys."""

    path: str
    """Where the store is: a SQLite file, or a ``postgresql://`` URL."""
    partitions: int
    """How many hash chains new events are spread over (``core.partitions``)."""
    dedup_key: DedupKey
    """The ledger's idempotency key (``DEDUP_KEYS``), fixed when it was created."""

    def append(
        self, batch: Sequence[tuple[int, PreparedEvent]], ingested_at_us: int
    ) -> list[EventOutcome]:
        """Append the new events of ``batch`` atomically and durably, in order.

        ``batch`` pairs each event with its index in the caller's batch. Returns one outcome
        per pair: accepted (with its sequence), duplicate or conflict.
        """
        ...

    def head(self) -> tuple[int, bytes]:
        """The last sequence and its hash (0 and the genesis hash when empty)."""
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

    def checkpoints(self) -> list[Checkpoint]:
        """The commit checkpoints, in order."""
        ...

    def query(self, query: EventQuery) -> EventPage:
        """One bounded page of events matching ``query``."""
        ...

    def close(self) -> None: ...

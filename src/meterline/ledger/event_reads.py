"""The reads of the ``events`` table that the layers above the stores make.

Billing, live engines, finance exports and the benchmarks read events by *cut*
(``core.cuts``), by customer or by (partition, sequence); every such statement lives here,
in the ledger package, so the table's shape (one partition column on PostgreSQL, none on
a single-chain SQLite ledger) is known in one place. An event is named by its partition
and its sequence within that partition; nothing here compares sequences across
partitions or orders by sequence across them.

Functions take a ``ledger.database`` connection (a helper process of the billing scan
opens its own from a location string) and, where the partition column matters, the
ledger's partition count (or a cut, which names it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from meterline.core.cuts import Cut
from meterline.core.partitions import partition_of
from meterline.ledger.cut_sql import cut_condition
from meterline.ledger.database import Connection, stream_rows

LOOKUP_CHUNK = 500
"""Events named per ``IN (...)`` lookup (well under either store's parameter limit)."""


def ledger_order(partitions: int) -> str:
    """The ``ORDER BY`` terms of ledger order: by partition, then sequence within it (a
    single-partition ledger has no partition column)."""
    return "partition_number, sequence" if partitions > 1 else "sequence"


def _partition_column(partitions: int) -> str:
    return "partition_number" if partitions > 1 else "0"


def scan_rows(
    connection: Connection,
    through: Cut,
    after: Cut | None,
    start_us: int,
    end_us: int,
    customers: list[str] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """The rating scan's rows ``(sequence, customer, type, timestamp_us, body, hash)``:
    events past ``after`` and inside ``through``, timed in [start_us, end_us), of
    ``customers`` only when given, in ledger order (partition, then sequence)."""
    partitions = None
    if customers is not None:
        partitions = sorted({partition_of(c, through.partitions) for c in customers})
    condition, parameters = cut_condition(through, after, partitions)
    query = (
        "SELECT sequence, customer, type, timestamp_us, body, hash FROM events"
        f" WHERE {condition} AND timestamp_us >= ? AND timestamp_us < ?"
    )
    parameters += [start_us, end_us]
    if customers is not None and len(customers) == 1:
        query += " AND customer = ?"
        parameters.append(customers[0])
    elif customers is not None:
        query += f" AND customer IN ({','.join('?' * len(customers))})"
        parameters.extend(customers)
    # Ledger order, explicitly: PostgreSQL may read through the (customer, event_id) index
    # (SQLite walks the rowid, so this costs it no sort).
    return stream_rows(
        connection, f"{query} ORDER BY {ledger_order(through.partitions)}", parameters
    )


def customer_event_counts(connection: Connection, through: Cut) -> dict[str, int]:
    """Each customer's number of events inside ``through`` (one grouped scan, in the
    store): how a check that reads customers a set at a time sizes its sets."""
    condition, parameters = cut_condition(through, None)
    rows = connection.execute(
        f"SELECT customer, count(*) FROM events WHERE {condition} GROUP BY customer", parameters
    ).fetchall()
    return {customer: int(count) for customer, count in rows}


def late_candidates(
    connection: Connection, after: Cut, through: Cut, before_us: int
) -> list[tuple[str, int, int]]:
    """``(customer, timestamp_us, sequence)`` of every event past ``after`` and inside
    ``through`` timed before ``before_us``: the events that may be late for a finalized
    period (the sequence is within the customer's partition)."""
    condition, parameters = cut_condition(through, after)
    rows = connection.execute(
        f"SELECT customer, timestamp_us, sequence FROM events WHERE {condition}"
        " AND timestamp_us < ?",
        [*parameters, before_us],
    ).fetchall()
    return [
        (str(customer), int(timestamp), int(sequence)) for customer, timestamp, sequence in rows
    ]


def customer_event_hashes(
    connection: Connection,
    customer: str,
    after: Cut | None,
    through: Cut,
    start_us: int,
    end_us: int,
) -> list[tuple[int, bytes]]:
    """``(sequence, hash)`` of ``customer``'s events past ``after`` and inside ``through``
    timed in [start_us, end_us), in sequence order (one customer is one partition)."""
    partition = partition_of(customer, through.partitions)
    condition, parameters = cut_condition(through, after, [partition])
    rows = connection.execute(
        f"SELECT sequence, hash FROM events WHERE {condition} AND customer = ?"
        " AND timestamp_us >= ? AND timestamp_us < ? ORDER BY sequence",
        [*parameters, customer, start_us, end_us],
    ).fetchall()
    return [(int(sequence), bytes(event_hash)) for sequence, event_hash in rows]


def customer_event_times(
    connection: Connection, customer: str, start_us: int, end_us: int
) -> dict[int, int]:
    """``customer``'s events timed in [start_us, end_us): sequence (within its partition)
    to timestamp."""
    rows = connection.execute(
        "SELECT sequence, timestamp_us FROM events WHERE customer = ?"
        " AND timestamp_us >= ? AND timestamp_us < ?",
        (customer, start_us, end_us),
    ).fetchall()
    return {int(sequence): int(timestamp) for sequence, timestamp in rows}


def _at(
    connection: Connection,
    partitions: int,
    columns: str,
    events: Iterable[tuple[int, int]],
) -> list[tuple[Any, ...]]:
    """Rows ``(partition, sequence, columns...)`` of the named events, looked up in chunks,
    in ledger order."""
    by_partition: dict[int, list[int]] = {}
    for partition, sequence in sorted(set(events)):
        by_partition.setdefault(partition, []).append(sequence)
    found: list[tuple[Any, ...]] = []
    for partition, sequences in sorted(by_partition.items()):
        for start in range(0, len(sequences), LOOKUP_CHUNK):
            chunk = sequences[start : start + LOOKUP_CHUNK]
            query = (
                f"SELECT sequence, {columns} FROM events"
                f" WHERE sequence IN ({','.join('?' * len(chunk))})"
            )
            parameters: list[Any] = list(chunk)
            if partitions > 1:
                query += " AND partition_number = ?"
                parameters.append(partition)
            rows = connection.execute(query + " ORDER BY sequence", parameters).fetchall()
            found.extend((partition, *row) for row in rows)
    return found


def records_at(
    connection: Connection, partitions: int, events: Iterable[tuple[int, int]]
) -> list[tuple[int, int, str, str, int, bytes, bytes]]:
    """``(partition, sequence, event_id, type, timestamp_us, body, hash)`` of each named
    ``(partition, sequence)`` event that exists, in ledger order."""
    rows = _at(connection, partitions, "event_id, type, timestamp_us, body, hash", events)
    return [(p, s, str(i), str(t), int(ts), bytes(b), bytes(h)) for p, s, i, t, ts, b, h in rows]


def event_summaries(
    connection: Connection, partitions: int, events: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], tuple[str, str, int]]:
    """``(partition, sequence)`` to ``(event_id, type, timestamp_us)`` of each named event
    that exists."""
    rows = _at(connection, partitions, "event_id, type, timestamp_us", events)
    return {(p, s): (str(i), str(t), int(ts)) for p, s, i, t, ts in rows}


def event_bodies(
    connection: Connection, partitions: int, events: Iterable[tuple[int, int]]
) -> dict[tuple[int, int], bytes]:
    """``(partition, sequence)`` to the stored body of each named event that exists."""
    rows = _at(connection, partitions, "body", events)
    return {(p, s): bytes(body) for p, s, body in rows}


def event_by_id(
    connection: Connection, partitions: int, customer: str, event_id: str
) -> tuple[int, int, bytes, bytes] | None:
    """``(partition, sequence, body, hash)`` of ``customer``'s event ``event_id``, or
    None."""
    row = connection.execute(
        "SELECT sequence, body, hash FROM events WHERE customer = ? AND event_id = ?",
        (customer, event_id),
    ).fetchone()
    if row is None:
        return None
    sequence, body, event_hash = row
    return partition_of(customer, partitions), int(sequence), bytes(body), bytes(event_hash)


def usage_candidates(
    connection: Connection, through: Cut, customer: str | None = None, after: Cut | None = None
) -> Iterator[tuple[int, int, str, str, int]]:
    """``(partition, sequence, customer, type, timestamp_us)`` of every event inside
    ``through`` (and past ``after``, when given; of ``customer`` only, when named), in
    ledger order."""
    partitions = None if customer is None else [partition_of(customer, through.partitions)]
    condition, parameters = cut_condition(through, after, partitions)
    column = _partition_column(through.partitions)
    query = f"SELECT {column}, sequence, customer, type, timestamp_us FROM events WHERE {condition}"
    if customer is not None:
        query += " AND customer = ?"
        parameters.append(customer)
    return stream_rows(
        connection, f"{query} ORDER BY {ledger_order(through.partitions)}", parameters
    )


def rows_since(
    connection: Connection, through: Cut, start_us: int
) -> Iterator[tuple[int, int, str, str, int, bytes]]:
    """``(partition, sequence, customer, type, timestamp_us, body)`` of every event inside
    ``through`` timed at or after ``start_us``, in ledger order."""
    condition, parameters = cut_condition(through)
    column = _partition_column(through.partitions)
    return stream_rows(
        connection,
        f"SELECT {column}, sequence, customer, type, timestamp_us, body FROM events"
        f" WHERE {condition} AND timestamp_us >= ? ORDER BY {ledger_order(through.partitions)}",
        [*parameters, start_us],
    )


def stamped_from(connection: Connection, at_us: int) -> list[tuple[str, int]]:
    """``(customer, timestamp_us)`` of every event timed at or after ``at_us``."""
    rows = connection.execute(
        "SELECT customer, timestamp_us FROM events WHERE timestamp_us >= ?", (at_us,)
    ).fetchall()
    return [(str(customer), int(timestamp)) for customer, timestamp in rows]


def chained_rows(connection: Connection, partitions: int) -> Iterator[tuple[Any, ...]]:
    """Every event ``(sequence, event_id, customer, type, timestamp_us, ingested_at_us,
    body, hash, partition)`` in ledger order (partition, then sequence): what an export
    walks to give each event its predecessor's hash."""
    column = _partition_column(partitions)
    return stream_rows(
        connection,
        "SELECT sequence, event_id, customer, type, timestamp_us, ingested_at_us, body, hash,"
        f" {column} FROM events ORDER BY {ledger_order(partitions)}",
    )


def all_rows(connection: Any) -> list[tuple[Any, ...]]:
    """The stored columns of every event of a single-partition (SQLite) ledger, in
    sequence order (sequence, customer, event_id, type, timestamp_us, ingested_at_us,
    body, hash): the ingest benchmark's copy of a prepared ledger."""
    rows: list[tuple[Any, ...]] = connection.execute(
        "SELECT sequence, customer, event_id, type, timestamp_us, ingested_at_us, body, hash"
        " FROM events ORDER BY sequence"
    ).fetchall()
    return rows


def event_count(connection: Any) -> int:
    """How many events the ledger holds (every partition)."""
    row = connection.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def customers_between(connection: Connection, after: Cut, through: Cut) -> set[str]:
    """The customers of the events past ``after`` and inside ``through`` (what a kept
    result recomputes when only events were appended: ``finance.kept_economics``)."""
    condition, parameters = cut_condition(through, after)
    rows = connection.execute(
        f"SELECT DISTINCT customer FROM events WHERE {condition}", parameters
    ).fetchall()
    return {str(customer) for (customer,) in rows}

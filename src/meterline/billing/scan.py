"""One pass over the ledger feeding raters: the I/O half of rating.

Each ``RatingJob`` is one customer's billing period, rated with the events whose time
falls in the period and whose ledger sequence is at most ``through_sequence`` (the
ledger's head when the invoice was, or is being, made: later arrivals are late events,
handled by adjustments). ``run_jobs`` reads the events of every job in a single scan in
ledger order, decodes only the properties of each body, exactly (non-integers become
``Decimal``), and hands them to the job's ``Rater``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from meterline.core.model import Configuration, Segment
from meterline.core.periods import BillingPeriod
from meterline.core.rating import Rater

SCAN_BATCH_ROWS = 10_000
"""Rows fetched from SQLite per round trip."""


class _Body(msgspec.Struct):
    properties: dict[str, Any] = {}


_DECODER = msgspec.json.Decoder(_Body, float_hook=Decimal)


@dataclass
class RatingJob:
    customer: str
    period: BillingPeriod
    segments: list[Segment]
    through_sequence: int
    configuration: Configuration
    after_sequence: int = 0
    """Only events with a sequence above this count (adjustments rate just late events)."""
    keep_events: bool = False
    rater: Rater = field(init=False)

    def __post_init__(self) -> None:
        self.rater = Rater(self.configuration, self.segments, self.keep_events)


def run_jobs(connection: sqlite3.Connection, jobs: Iterable[RatingJob]) -> None:
    """Feed every job its events in one ledger scan."""
    by_customer: dict[str, list[RatingJob]] = {}
    for job in jobs:
        if job.segments:
            by_customer.setdefault(job.customer, []).append(job)
    if not by_customer:
        return
    all_jobs = [job for group in by_customer.values() for job in group]
    start = min(job.period.start_us for job in all_jobs)
    end = max(job.period.end_us for job in all_jobs)
    through = max(job.through_sequence for job in all_jobs)
    after = min(job.after_sequence for job in all_jobs)
    query = (
        "SELECT sequence, customer, type, timestamp_us, body, hash FROM events"
        " WHERE sequence > ? AND sequence <= ? AND timestamp_us >= ? AND timestamp_us < ?"
    )
    parameters: list[Any] = [after, through, start, end]
    if len(by_customer) == 1:
        query += " AND customer = ?"
        parameters.append(next(iter(by_customer)))
    cursor = connection.execute(query, parameters)
    decode = _DECODER.decode
    single = {customer: group[0] for customer, group in by_customer.items() if len(group) == 1}
    while rows := cursor.fetchmany(SCAN_BATCH_ROWS):
        for sequence, customer, event_type, timestamp_us, body, event_hash in rows:
            only = single.get(customer)
            if only is not None:
                period = only.period
                if (
                    period.start_us <= timestamp_us < period.end_us
                    and only.after_sequence < sequence <= only.through_sequence
                ):
                    only.rater.add(
                        sequence, timestamp_us, event_type, decode(body).properties, event_hash
                    )
                continue
            group = by_customer.get(customer)
            if group is None:
                continue
            properties = None
            for job in group:
                period = job.period
                if (
                    period.start_us <= timestamp_us < period.end_us
                    and job.after_sequence < sequence <= job.through_sequence
                ):
                    if properties is None:
                        properties = decode(body).properties
                    job.rater.add(sequence, timestamp_us, event_type, properties, event_hash)

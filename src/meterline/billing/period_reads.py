"""Many customers' open periods read from the day buckets at once (unit economics).

``period_buckets`` reads the day buckets of every chosen customer period in one
statement (``bucket_records.read_span_buckets``) and keeps each customer's own rows (its
period's days, its segments' rows), the rows ``buckets.job_buckets`` reads customer by
customer. From those rows it makes what a draft and unit economics price, without a
bucket object per row:

- ``PeriodRead.lines``: each line's state over the period, equal to
  ``core.buckets.merge_buckets`` of the decoded rows (the first row decoded by
  ``bucket_from_row``, each further one's state taken as ``Accumulator.take`` takes it);
- ``local_days``: each line's events per local day, equal to ``buckets.line_days`` of the
  same rows (None where that falls back to hours);
- ``PeriodRead.found``: the decoded buckets themselves, made only when they are needed
  one by one (a credit window's usage, the hours fallback).

Invariants: every figure read here equals the per-customer read of the same rows (a
differential test holds the two paths equal); a row this module cannot merge itself is
merged the general way, which raises what it raises; nothing is written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import msgspec

from meterline.billing import buckets
from meterline.billing.context import BillingContext, Loaded, cost_meters
from meterline.core.buckets import (
    DAY_US,
    DIGEST_MODULUS,
    Bucket,
    BucketScope,
    Group,
    LineKey,
    bucket_from_row,
    merge_buckets,
)
from meterline.core.meters import Accumulator
from meterline.core.model import Contract, Segment
from meterline.core.money import MONEY_CONTEXT
from meterline.core.periods import BillingPeriod, local_date
from meterline.ledger import bucket_records

__all__ = ["OpenPeriod", "PeriodRead", "local_days", "merged_lines", "period_buckets"]

OpenPeriod = tuple[Contract, BillingPeriod, list[Segment]]
"""A customer's open period as of an instant: its contract, period and segments."""

Row = tuple[Any, ...]
LineDays = dict[tuple[int, str, Group], Counter[date]]
_decode = msgspec.json.decode
_add = MONEY_CONTEXT.add


@dataclass(slots=True)
class PeriodRead:
    """One customer period's day-bucket rows as read, and its lines merged once (priced
    by the draft and by economics alike)."""

    scope: BucketScope
    rows: list[Row]
    lines: dict[LineKey, Bucket]
    days: LineDays | None
    """Each line's events per local day in ``timezone`` (``local_days``)."""
    timezone: str

    def found(self) -> buckets.Found:
        """The rows decoded, as ``buckets.job_buckets`` gives them."""
        return self.scope, dict(bucket_from_row(row) for row in self.rows), DAY_US


def period_buckets(
    context: BillingContext, loaded: Loaded, chosen: Sequence[OpenPeriod]
) -> dict[str, PeriodRead]:
    """The day buckets of every ``chosen`` period under ``loaded`` (the current revision),
    built and caught up first, read in one statement (one customer's by the key); each
    customer's rows those of its own period's days and segments. Empty when the buckets
    are not built (the periods are then re-rated)."""
    connection = context.connection
    if not chosen or not buckets.ensure_built(context):
        return {}
    if loaded.revision not in bucket_records.built_revisions(connection):
        return {}  # a failed fold dropped them
    low = min(period.start_us for _, period, _ in chosen)
    high = max(period.end_us for _, period, _ in chosen)
    customers = {contract.customer for contract, _, _ in chosen}
    only = next(iter(customers)) if len(customers) == 1 else None  # by its key, not a scan
    rows_of: dict[str, list[Row]] = {}
    read = bucket_records.read_span_buckets
    for row in read(connection, loaded.revision, low, high, customer=only):
        rows_of.setdefault(row[0], []).append(row)
    meters = cost_meters(loaded)
    groups: dict[str, Group] = {}
    dated: dict[tuple[str, int], date | None] = {}
    found: dict[str, PeriodRead] = {}
    for contract, period, spans in chosen:
        starts = {segment.start_us for segment in spans}
        first = period.start_us - period.start_us % DAY_US
        rows = [
            row
            for row in rows_of.get(contract.customer, ())
            if first <= row[5] < period.end_us and int(row[2]) in starts
        ]
        scope = BucketScope(contract.customer, loaded.revision, loaded.configuration, spans, meters)
        lines = merged_lines(rows, groups)
        days = _local_days(rows, spans, contract.timezone, groups, dated)
        found[contract.customer] = PeriodRead(scope, rows, lines, days, contract.timezone)
    return found


def _group(text: str, groups: dict[str, Group]) -> Group:
    """A row's group (JSON text) as a key holds it, decoded once per distinct text."""
    group = groups.get(text)
    if group is None:
        group = groups[text] = tuple(_decode(text))
    return group


def merged_lines(
    rows: Sequence[Row], groups: dict[str, Group] | None = None
) -> dict[LineKey, Bucket]:
    """``merge_buckets`` of the rows decoded (the same lines in the same order, equal
    states): each line's first row decoded, the others' states taken into it. Any row
    that does not merge so sends the whole period the general way."""
    known = {} if groups is None else groups
    gathered: dict[LineKey, list[Row]] = {}
    try:
        for row in rows:
            line = (int(row[2]), row[3], _group(row[4], known))
            gathered.setdefault(line, []).append(row)
        return {line: _merged(line_rows) for line, line_rows in gathered.items()}
    except Exception:  # a row the general way decodes or merges otherwise: it decides
        return merge_buckets(bucket_from_row(row) for row in rows)


def _merged(rows: list[Row]) -> Bucket:
    """``Bucket.merged_all`` of the rows decoded: the first row's bucket taking the rest."""
    _, bucket = bucket_from_row(rows[0])
    if len(rows) == 1:
        return bucket
    usage = bucket.accumulator  # decoded here, shared with nothing: taken into in place
    fees, bases, cost, digest = bucket.fees, bucket.bases, bucket.cost, bucket.digest
    for row in rows[1:]:
        state = _decode(row[11])
        _take(usage, state, int(row[6]))
        fees = _add(fees, _number(row[8]))
        bases = _add(bases, _number(state["bases"]))
        cost = _add(cost, _number(row[9]))
        digest += int(row[10], 16)
    return Bucket(usage, fees, bases, cost, digest % DIGEST_MODULUS)


PARSED_KEPT_MAX = 4_096
"""Distinct decimal texts ``_number`` keeps parsed (most rows repeat a few: ``0``, the
same fees): past this many the memory starts over."""

_parsed: dict[str, Decimal] = {}


def _number(text: str) -> Decimal:
    """A stored exact decimal (Decimals are immutable: a text parsed once serves every
    row that holds it); a text ``to_decimal`` would refuse (not finite) raises, so the
    general way reads the period and reports it as it does."""
    number = _parsed.get(text)
    if number is None:
        number = Decimal(text)
        if not number.is_finite():
            raise ValueError(f"{text!r} is not a finite number")
        if len(_parsed) >= PARSED_KEPT_MAX:
            _parsed.clear()
        _parsed[text] = number
    return number


def _take(usage: Accumulator, state: dict[str, Any], events: int) -> None:
    """``usage.take`` of the accumulator ``bucket_from_row`` would decode from ``state``."""
    usage._total = _add(usage._total, _number(state["total"]))
    usage.events += events
    first, last = state["first"], state["last"]
    if first is not None and (usage.first_sequence is None or first < usage.first_sequence):
        usage.first_sequence = first
    if last is not None and (usage.last_sequence is None or last > usage.last_sequence):
        usage.last_sequence = last
    usage._whole += int(state["whole"])
    if state["maximum"] is not None:
        maximum = _number(state["maximum"])
        if usage._maximum is None or maximum > usage._maximum:
            usage._maximum = maximum
    if state["seen"]:
        usage._seen |= set(state["seen"])
    if state["latest"] is not None:
        at, sequence, value = state["latest"]
        latest = (at, sequence, _number(value))
        if usage._latest is None or latest[:2] > usage._latest[:2]:
            usage._latest = latest
    daily = usage._daily
    for day, at, sequence, value in state["daily"]:
        candidate = (at, sequence, _number(value))
        held = daily.get(day)
        if held is None or candidate[:2] > held[:2]:
            daily[day] = candidate


def local_days(read: PeriodRead, timezone: str) -> LineDays | None:
    """Each line's events per local day in ``timezone`` from ``read``'s day rows (keyed
    like ``Rater.members``), as ``buckets.line_days`` counts them from days; None when a
    UTC day spans two local days (that reads hours)."""
    return _local_days(read.rows, read.scope.segments, timezone, {}, {})


def _local_days(
    rows: Sequence[Row],
    segments: Sequence[Segment],
    timezone: str,
    groups: dict[str, Group],
    dated: dict[tuple[str, int], date | None],
) -> LineDays | None:
    """``local_days`` of ``rows``; ``groups`` and ``dated`` (each zone's UTC day's local
    day, None when it spans two) are kept across the customers of one read."""
    index_of = {segment.start_us: index for index, segment in enumerate(segments)}
    days: LineDays = {}
    for row in rows:
        place = (timezone, row[5])
        if place not in dated:
            first = local_date(timezone, int(row[5]))
            last = local_date(timezone, int(row[5]) + DAY_US - 1)
            dated[place] = first if first == last else None
        day = dated[place]
        if day is None:
            return None
        line = (index_of[int(row[2])], row[3], _group(row[4], groups))
        days.setdefault(line, Counter())[day] += int(row[6])
    return days

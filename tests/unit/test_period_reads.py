"""``billing.period_reads``: a period's day rows merged per line without a bucket object
per row equal ``core.buckets.merge_buckets`` of the decoded rows, digit for digit, for
every aggregation (sums of ints and decimals, counts, maxima, unique counts, latest
values and daily gauges), and a row that does not decode is left to the general way."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.billing.period_reads import merged_lines
from meterline.core.buckets import (
    DAY_US,
    Bucket,
    BucketKey,
    bucket_from_row,
    bucket_row,
    merge_buckets,
)
from meterline.core.meters import Accumulator
from meterline.core.money import MoneyError

AGGREGATIONS = ("sum", "count", "max", "unique_count", "latest")
START_US = 1_790_000_000_000_000 - 1_790_000_000_000_000 % DAY_US

numbers = st.one_of(
    st.integers(-50, 10_000),
    st.decimals(min_value=-100, max_value=10_000, places=3, allow_nan=False),
)
events = st.lists(st.tuples(st.integers(0, 1_000), numbers), min_size=1, max_size=6)


def bucket_of(aggregation: str, taken: list[tuple[int, Any]], daily: bool) -> Bucket:
    usage = Accumulator(aggregation, days=(START_US, START_US + DAY_US) if daily else None)
    for sequence, number in taken:
        value = number if aggregation == "sum" and type(number) is int else Decimal(number)
        usage.add(sequence, START_US + sequence, value, str(number))
    usage.days = None  # stored buckets keep no day edges
    fees = Decimal(sum(sequence for sequence, _ in taken)) / 100
    return Bucket(usage, fees, Decimal(len(taken)) / 8, fees / 4, sum(s for s, _ in taken))


@st.composite
def period_rows(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    rows = []
    for line in range(draw(st.integers(1, 4))):
        aggregation = draw(st.sampled_from(AGGREGATIONS))
        daily = aggregation == "latest" and draw(st.booleans())
        group = draw(st.sampled_from([("m",), ("n",), (None,), ()]))
        for day in sorted(draw(st.sets(st.integers(0, 30), min_size=1, max_size=5))):
            bucket = bucket_of(aggregation, draw(events), daily)
            key = BucketKey("c0", 1, START_US, f"meter{line}", group, START_US + day * DAY_US)
            rows.append(bucket_row(key, bucket))
    return rows


def as_rows(lines: dict[Any, Bucket]) -> list[tuple[Any, ...]]:
    """Lines as stored rows: every Decimal as its text (1.0 and 1.00 differ)."""
    return [bucket_row(BucketKey("c0", 1, *line, 0), bucket) for line, bucket in lines.items()]


@settings(max_examples=150, deadline=None)
@given(period_rows())
def test_merged_lines_equal_merge_buckets_of_the_decoded_rows(rows: list[tuple[Any, ...]]) -> None:
    expected = merge_buckets(bucket_from_row(row) for row in rows)
    found = merged_lines(rows)
    assert list(found) == list(expected)  # the same lines in the same order
    assert as_rows(found) == as_rows(expected)


def test_a_row_that_does_not_decode_raises_as_the_general_way_does() -> None:
    key = BucketKey("c0", 1, START_US, "meter0", ("m",), START_US)
    good = bucket_row(key, bucket_of("sum", [(1, 5)], False))
    later = bucket_row(
        BucketKey("c0", 1, START_US, "meter0", ("m",), START_US + DAY_US),
        bucket_of("sum", [(2, 7)], False),
    )
    broken = (*later[:8], "NaN", *later[9:])  # fees not finite
    with pytest.raises(MoneyError):
        merged_lines([good, broken])
    assert as_rows(merged_lines([good, later])) == as_rows(
        merge_buckets(bucket_from_row(row) for row in [good, later])
    )

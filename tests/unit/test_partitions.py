"""Partitions: stable, even, and named exactly (pure)."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.partitions import (
    PARTITIONS_MAX,
    check_partition_count,
    parse_partitions,
    partition_of,
)


def test_partition_is_the_documented_hash() -> None:
    """The first 8 bytes of SHA-256, big-endian, modulo the count: the same in every
    process and on every machine (Python's hash() is salted per process)."""
    digest = hashlib.sha256(b"acme").digest()
    assert partition_of("acme", 8) == int.from_bytes(digest[:8], "big") % 8
    assert partition_of("acme", 1) == 0


def test_customers_spread_evenly() -> None:
    counts = Counter(partition_of(f"customer-{n}", 8) for n in range(8000))
    assert set(counts) == set(range(8))
    assert max(counts.values()) < 1.1 * 1000 and min(counts.values()) > 0.9 * 1000


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=PARTITIONS_MAX))
def test_a_partition_is_always_in_range(customer: str, count: int) -> None:
    assert 0 <= partition_of(customer, count) < count


def test_parse_ranges_lists_and_all() -> None:
    assert parse_partitions("0-2,5", 8) == [0, 1, 2, 5]
    assert parse_partitions("3,1,1", 4) == [1, 3]
    assert parse_partitions("all", 3) == [0, 1, 2]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0-8", "outside 0-7"),
        ("3-1", "runs backwards"),
        ("a", "not a number"),
        ("1,,2", "empty item"),
        ("-1", "not a number"),
    ],
)
def test_bad_partition_lists_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_partitions(text, 8)


@pytest.mark.parametrize("count", [0, PARTITIONS_MAX + 1, True, 2.0])
def test_partition_counts_are_bounded(count: object) -> None:
    with pytest.raises(ValueError, match="partitions must be an integer"):
        check_partition_count(count)  # type: ignore[arg-type]


def test_a_partition_map_answers_as_partition_of_and_forgets_when_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from meterline.core import partitions as module

    monkeypatch.setattr(module, "PARTITION_MEMORY_MAX", 3)
    mapped = module.PartitionMap(8)
    customers = [f"customer-{n}" for n in range(10)]
    for customer in customers + customers:
        assert mapped(customer) == module.partition_of(customer, 8)
    assert len(mapped._known) <= 3
    with pytest.raises(ValueError, match="partitions"):
        module.PartitionMap(0)

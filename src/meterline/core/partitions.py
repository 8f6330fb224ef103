"""Which partition a customer's events belong to (pure).

The ledger keeps one hash chain per partition and the distributed ingest path keeps one
stream subject, and one durable consumer, per partition. A customer's partition is
``first 8 bytes of SHA-256(customer), big-endian, modulo the partition count``: stable
across processes, machines and Python versions (unlike ``hash``), and even across
customers. Every event of a customer lands in the same partition, so one worker owns a
customer's live state and controls.
"""

from __future__ import annotations

import hashlib

PARTITIONS_MAX = 1024
"""The most partitions a ledger or stream may have."""

DEFAULT_PARTITIONS = 8
"""Partitions of a new distributed ledger unless told otherwise: room for 8 workers."""


def check_partition_count(count: int) -> int:
    """``count`` if it is a valid partition count, else ValueError naming the limit."""
    if type(count) is not int or not 1 <= count <= PARTITIONS_MAX:
        raise ValueError(f"partitions must be an integer from 1 to {PARTITIONS_MAX}, got {count!r}")
    return count


def partition_of(customer: str, count: int) -> int:
    """The partition of ``customer`` among ``count`` partitions."""
    if count == 1:
        return 0
    digest = hashlib.sha256(customer.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


PARTITION_MEMORY_MAX = 1_000_000
"""Customers a ``PartitionMap`` remembers; past it, it forgets them all and hashes again."""


class PartitionMap:
    """``partition_of`` for one partition count, remembering each customer's partition (a
    SHA-256 each otherwise) up to ``PARTITION_MEMORY_MAX`` customers. The one memory of
    partitions every hot path uses (the API's packing, the PostgreSQL append, the live
    projection)."""

    __slots__ = ("_known", "count")

    def __init__(self, count: int) -> None:
        self.count = check_partition_count(count)
        self._known: dict[str, int] = {}

    def __call__(self, customer: str) -> int:
        partition = self._known.get(customer)
        if partition is None:
            if len(self._known) >= PARTITION_MEMORY_MAX:
                self._known.clear()
            partition = self._known[customer] = partition_of(customer, self.count)
        return partition


def parse_partitions(text: str, count: int) -> list[int]:
    """Partitions named like ``0-3,6`` (or ``all``), each below ``count``, sorted, unique."""
    if text.strip() == "all":
        return list(range(count))
    chosen: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"partitions: empty item in {text!r}")
        first_text, dash, last_text = part.partition("-")
        try:
            first = int(first_text)
            last = int(last_text) if dash else first
        except ValueError:
            raise ValueError(f"partitions: {part!r} is not a number or a range like 0-3") from None
        if first > last:
            raise ValueError(f"partitions: range {part!r} runs backwards")
        if first < 0 or last >= count:
            raise ValueError(f"partitions: {part!r} is outside 0-{count - 1}")
        chosen.update(range(first, last + 1))
    return sorted(chosen)

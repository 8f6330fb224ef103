"""Consistent cuts of a partitioned ledger (pure).

Each partition of the ledger numbers its events with its own gap-free sequence (1, 2,
...), so no counter is shared across partitions on the write path. A *cut* names, for
every partition, the last sequence it includes: ``Cut((1200, 980))`` holds events 1-1200
of partition 0 and 1-980 of partition 1. A cut read from the store's partition heads is
consistent: every event it names is committed, and an event appended later falls outside
it. Period close, drafts, live engines, reconciliation and exports read *through* a cut;
an event past the cut an invoice was closed through is a late event.

Invariants: a cut has at least one partition; every head is a non-negative integer.
A single-partition ledger's cut is its last sequence, ``Cut((n,))``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from meterline.core.partitions import PARTITIONS_MAX

SEQUENCE_MAX = 2**63 - 1
"""The largest sequence a partition can hold (a signed 64-bit integer)."""


@dataclass(frozen=True, slots=True)
class Cut:
    """Each partition's last included sequence, by partition number."""

    heads: tuple[int, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.heads) <= PARTITIONS_MAX:
            raise ValueError(f"a cut names 1 to {PARTITIONS_MAX} partitions, got {len(self.heads)}")
        for partition, head in enumerate(self.heads):
            if type(head) is not int or not 0 <= head <= SEQUENCE_MAX:
                raise ValueError(f"cut: partition {partition}'s head must be 0 to {SEQUENCE_MAX}")

    @classmethod
    def empty(cls, partitions: int) -> Cut:
        """The cut before any event (every head 0)."""
        return cls((0,) * partitions)

    @classmethod
    def of(cls, heads: Iterable[int]) -> Cut:
        return cls(tuple(heads))

    @property
    def partitions(self) -> int:
        return len(self.heads)

    @property
    def events(self) -> int:
        """How many events the cut holds (sequences are gap-free from 1)."""
        return sum(self.heads)

    def head(self, partition: int) -> int:
        return self.heads[partition]

    def covers(self, partition: int, sequence: int) -> bool:
        """Whether event ``sequence`` of ``partition`` is inside the cut."""
        return sequence <= self.heads[partition]

    def includes(self, other: Cut) -> bool:
        """Whether every event of ``other`` is inside this cut."""
        self._same_shape(other)
        return all(mine >= theirs for mine, theirs in zip(self.heads, other.heads, strict=True))

    def advanced(self, partition: int, sequence: int) -> Cut:
        """This cut with ``partition``'s head moved up to ``sequence`` (never down)."""
        if sequence <= self.heads[partition]:
            return self
        heads = list(self.heads)
        heads[partition] = sequence
        return Cut(tuple(heads))

    def union(self, other: Cut) -> Cut:
        """The smallest cut including both."""
        self._same_shape(other)
        return Cut(tuple(max(a, b) for a, b in zip(self.heads, other.heads, strict=True)))

    def intersection(self, other: Cut) -> Cut:
        """The largest cut both include."""
        self._same_shape(other)
        return Cut(tuple(min(a, b) for a, b in zip(self.heads, other.heads, strict=True)))

    def between(self, after: Cut) -> list[tuple[int, int, int]]:
        """``(partition, after head, this head)`` for each partition with events past
        ``after`` and inside this cut."""
        self._same_shape(after)
        return [
            (partition, low, high)
            for partition, (low, high) in enumerate(zip(after.heads, self.heads, strict=True))
            if high > low
        ]

    def to_json(self) -> list[int]:
        """The cut as stored in documents: a list of heads by partition number."""
        return list(self.heads)

    @classmethod
    def from_json(cls, value: object, field: str = "through") -> Cut:
        """A cut from its document form (a list of heads; a bare integer is read as a
        single-partition cut). ValueError names ``field`` and what is wrong."""
        if type(value) is int:
            value = [value]
        if not isinstance(value, Sequence) or isinstance(value, str | bytes):
            raise ValueError(f"{field}: a cut is a list of partition heads, got {value!r}")
        try:
            return cls(tuple(value))
        except ValueError as error:
            raise ValueError(f"{field}: {error}") from None

    def __str__(self) -> str:
        if len(self.heads) == 1:
            return str(self.heads[0])
        return "[" + ", ".join(str(head) for head in self.heads) + "]"

    def _same_shape(self, other: Cut) -> None:
        if len(other.heads) != len(self.heads):
            raise ValueError(
                f"cuts of {len(self.heads)} and {len(other.heads)} partitions do not compare"
            )

"""What the ledger answers for each event of a batch (pure data).

A batch answers per event, in input order: ``accepted`` (appended, with its ledger
sequence), ``duplicate`` (same id and same bytes already stored: nothing changed),
``conflict`` (same id, different bytes: nothing changed) or ``rejected`` (invalid: the
errors name each field). The summary counts always add up to the batch size.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from meterline.core.events import FieldError

Status = Literal["accepted", "duplicate", "conflict", "rejected"]
STATUSES: tuple[Status, ...] = ("accepted", "duplicate", "conflict", "rejected")


class EventOutcome(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """The answer for one event of a batch (never in a reference cycle, so untracked by
    the cyclic GC: a batch makes one per event)."""

    index: int
    status: Status
    id: str | None = None
    sequence: int | None = None
    errors: list[FieldError] | None = None


class BatchOutcome(msgspec.Struct, frozen=True):
    """The answer for a whole batch: per-event outcomes in input order and their counts."""

    accepted: int
    duplicate: int
    conflict: int
    rejected: int
    results: list[EventOutcome]

    @classmethod
    def of(cls, results: list[EventOutcome]) -> BatchOutcome:
        counts = dict.fromkeys(STATUSES, 0)
        for result in results:
            counts[result.status] += 1
        return cls(results=results, **counts)

    def check(self) -> None:
        """Raise if the counts do not add up or results are out of input order."""
        total = self.accepted + self.duplicate + self.conflict + self.rejected
        if total != len(self.results):
            raise ValueError("batch outcome counts do not add up to the number of results")
        for position, result in enumerate(self.results):
            if result.index != position:
                raise ValueError("batch outcome results are not in input order")

"""What a process remembers between the batches it folds into rated-usage buckets
(``billing.buckets.catch_up``), so a batch does less than the first.

- **Fold scopes** (``FoldScopes``): each customer period's ``FoldingScope`` (segments,
  routes, meter readers), a pure function of the revision's configuration, kept per
  revision (number and content hash) up to ``SCOPES_CACHED_MAX``.
- **Rows known to be stored** (``KnownRows``): having folded a build from its empty
  start, a process knows each line's last stored hour and day; a place past it is stored
  nowhere, so the fold reads only the others (at most the first hours a batch shares with
  the one before). Invariant: what it knows holds at exactly one watermark (revision,
  generation, cut): the rows at a watermark are a function of it, whoever folded them,
  since every write of bucket rows moves the watermark in its transaction and folds are
  deterministic. It is taken out while a batch folds (no other thread uses it meanwhile)
  and kept again, at the batch's watermark, only once the batch is stored; anything else
  (another generation, a process that did not see the build start, more than
  ``LINES_KNOWN_MAX`` lines) reads every place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from meterline.billing.context import Loaded
from meterline.core.bucket_folding import FoldingScope
from meterline.core.buckets import BucketScope
from meterline.core.cuts import Cut
from meterline.core.periods import BillingPeriod
from meterline.ledger.bucket_records import BucketPlace, Watermark

__all__ = [
    "LINES_KNOWN_MAX",
    "SCOPES_CACHED_MAX",
    "FoldScopes",
    "KnownRows",
    "fold_scopes",
    "keep_known",
    "take_known",
]

SCOPES_CACHED_MAX = 100_000
"""Customer periods whose fold scopes a process keeps between batches of one revision;
past it they are made again."""

LINES_KNOWN_MAX = 500_000
"""Lines (per table) whose last stored hour or day a process remembers; past it the
fold reads every place it touches, as a process that did not see the build start does."""

ScopeMaker = Callable[[Loaded, str, int], tuple[BucketScope, BillingPeriod] | None]


class FoldScopes:
    """One revision's fold scopes: each customer's periods met so far, and which
    customers have a contract at all."""

    def __init__(self, loaded: Loaded, make: ScopeMaker) -> None:
        self.loaded = loaded
        self.make = make
        self.contracted = frozenset(c.customer for c in loaded.configuration.contracts)
        self.periods: dict[str, list[tuple[FoldingScope, BillingPeriod]]] = {}
        self.count = 0

    def find(self, customer: str, at_us: int) -> tuple[FoldingScope, BillingPeriod] | None:
        """The customer's period containing ``at_us``, prepared; None without one."""
        if customer not in self.contracted:
            return None
        known = self.periods.get(customer)
        if known is not None:
            for item in known:
                if item[1].contains(at_us):
                    return item
        made = self.make(self.loaded, customer, at_us)
        if made is None or not made[1].contains(at_us):
            return None
        if self.count >= SCOPES_CACHED_MAX:
            self.periods.clear()
            self.count = 0
        found = (FoldingScope(made[0]), made[1])
        self.periods.setdefault(customer, []).append(found)
        self.count += 1
        return found


_scopes: dict[tuple[int, str], FoldScopes] = {}


def fold_scopes(loaded: Loaded, make: ScopeMaker) -> FoldScopes:
    """``loaded``'s kept scopes (one revision's at a time: the last folded)."""
    key = (loaded.revision, loaded.content_sha256)
    found = _scopes.get(key)
    if found is None:
        found = FoldScopes(loaded, make)
        _scopes.clear()
        _scopes[key] = found
    return found


class KnownRows:
    """Each table's lines (customer, segment start, meter, group) and the last hour
    (day) stored for each, at one watermark (see the module)."""

    def __init__(self) -> None:
        self.last: dict[str, dict[tuple[Any, ...], int]] = {}

    def unknown(self, table: str, places: Iterable[BucketPlace]) -> list[BucketPlace]:
        """The places that may be stored: those at or before their line's last."""
        last = self.last.get(table, {})
        return [place for place in places if place[4] <= last.get(place[:4], -1)]

    def add(self, table: str, rows: Sequence[Sequence[Any]]) -> bool:
        """Take ``table``'s written rows in; False once past ``LINES_KNOWN_MAX`` lines."""
        last = self.last.setdefault(table, {})
        for row in rows:
            line = (row[0], row[2], row[3], row[4])
            if row[5] > last.get(line, -1):
                last[line] = row[5]
        return len(last) <= LINES_KNOWN_MAX


_known: dict[int, tuple[str, Cut, KnownRows]] = {}
_known_lock = threading.Lock()


def take_known(revision: int, since: Watermark) -> KnownRows | None:
    """What is known stored at ``since`` (taken out: kept again by ``keep_known``), a
    fresh record at a build's empty start; None when nothing is known there."""
    with _known_lock:
        found = _known.pop(revision, None)
    if since.through.events == 0:
        return KnownRows()
    if found is None or (found[0], found[1]) != (since.generation, since.through):
        return None
    return found[2]


def keep_known(
    revision: int,
    generation: str,
    through: Cut,
    known: KnownRows | None,
    written: Sequence[tuple[str, Sequence[Sequence[Any]]]],
) -> None:
    """Once a batch folded from ``known`` is stored at watermark ``through``: what is
    known stored there (the written rows taken in)."""
    if known is None:
        return
    if all([known.add(table, rows) for table, rows in written]):
        with _known_lock:
            _known.clear()
            _known[revision] = (generation, through, known)

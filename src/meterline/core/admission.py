"""Admission control on ingest lag: the ingest lag bound (pure).

In stream mode an API replica acknowledges a batch (``202``) once JetStream stored it;
the decisions made on it (a block, the kill switch) come later, from the live engine of
the worker owning its partition. The ingest lag bound caps how far acknowledged usage
may run ahead of those decisions: a replica refuses a batch (``429``) while a partition
the batch touches lags past the bound, so a backlog of seconds can never build up
behind an acknowledged event.

``LagBook`` is one replica's view. Invariants:

* only the replica's own readings are ever compared: the moments (when JetStream
  acknowledged a message this replica published, and now) come from the replica's
  clock, and the workers contribute only stream sequences (the newest message of a
  partition whose events their live engine has decided on), so no two machines'
  clocks meet in a comparison;
* a partition's lag is how long the oldest message this replica published to it, and no
  worker has reported decided, has been outstanding; with nothing outstanding it is 0.
  A worker that is down reports nothing: the lag grows and the replica refuses, which
  is the point (clients retry; nothing acknowledged waits behind a dead worker);
* a batch is admitted whole or refused whole (``admit``): refused when any partition it
  touches lags past the bound, so a refusal never leaves a batch half acknowledged;
  a bound of 0 admits everything. ``lagging`` lists the refusals ``admit`` can give at
  a moment, so a replica can refuse a batch before preparing all of it: the first of
  them whose partition the batch touches is ``admit``'s answer;
* memory is bounded: at most ``OUTSTANDING_MAX`` messages are remembered per partition
  (past it the newest are not recorded, so the lag, read from the oldest, stays true);
* between two progress reports of a partition its lag only grows (its oldest outstanding
  message stays the oldest), so a refused batch is refused again until the next report.
  The retry hint is therefore the time left until that report is due, from the interval
  between the partition's past reports while it had work outstanding (``decided`` with
  ``at_us``, the replica's clock again; an average weighted ``PROGRESS_INTERVAL_WEIGHT``
  to the newest), and half the bound until an interval is known. A client retrying
  sooner is only refused again, and every refusal costs the replica the batch's
  receipt and a look at its customers (BENCHMARKS.md, "Refusals timed to the workers'
  progress").
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

LAG_MAX_MS_DEFAULT = 50
"""The default bound (milliseconds): ``meterline bench scale`` on 2 loaded cores kept the
kill switch's p99 within 100 ms with it while losing little throughput (BENCHMARKS.md,
"Kill switch under load")."""

RETRY_AFTER_MS_MIN = 10
"""The shortest retry hint given with a refusal."""

RETRY_AFTER_MS_MAX = 1000
"""The longest retry hint given with a refusal (a worker that is down: retry each second)."""

OUTSTANDING_MAX = 100_000
"""Messages per partition a replica remembers as published and not yet decided."""

PROGRESS_INTERVAL_WEIGHT = 0.25
"""The weight of the newest interval between a partition's progress reports in their
running average (the retry hint's estimate of when the next report comes)."""

OVERDUE_SHARE = 0.25
"""A report overdue is expected within this share of the usual interval (the hint's
floor while waiting for it)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a batch was refused: the partition lagging most, its lag, and a retry hint."""

    partition: int
    lag_ms: float
    bound_ms: int
    retry_after_ms: int


@dataclass(slots=True)
class _PartitionLag:
    outstanding: list[tuple[int, int]] = field(default_factory=list)
    """A heap of (stream sequence, stored at µs) published and not decided yet."""
    decided: int = 0
    """The highest stream sequence a worker reported decided."""
    reported_us: int | None = None
    """When the decided sequence last moved (the replica's clock), if told."""
    busy: bool = False
    """Messages were still outstanding when it last moved (the next interval is a
    worker's pace, not an idle stretch)."""
    interval_us: float | None = None
    """The running average of the intervals between moves while busy."""


class LagBook:
    """One replica's outstanding messages and the workers' progress, per partition."""

    def __init__(self, partitions: int) -> None:
        self._partitions = [_PartitionLag() for _ in range(partitions)]

    def stored(self, partition: int, sequence: int, at_us: int) -> None:
        """JetStream stored this replica's message ``sequence`` of ``partition`` at ``at_us``."""
        lag = self._partitions[partition]
        if sequence > lag.decided and len(lag.outstanding) < OUTSTANDING_MAX:
            heapq.heappush(lag.outstanding, (sequence, at_us))

    def decided(self, partition: int, sequence: int, at_us: int | None = None) -> None:
        """A worker decided on every message of ``partition`` through ``sequence``
        (reported at ``at_us``: the interval between reports, for the retry hints)."""
        lag = self._partitions[partition]
        if sequence <= lag.decided:
            return
        lag.decided = sequence
        outstanding = lag.outstanding
        while outstanding and outstanding[0][0] <= sequence:
            heapq.heappop(outstanding)
        if at_us is None:
            return
        if lag.busy and lag.reported_us is not None and at_us >= lag.reported_us:
            interval = at_us - lag.reported_us
            average = lag.interval_us
            lag.interval_us = (
                interval
                if average is None
                else average + (interval - average) * PROGRESS_INTERVAL_WEIGHT
            )
        lag.reported_us = at_us
        lag.busy = bool(outstanding)

    def next_report_ms(self, partition: int, now_us: int) -> float | None:
        """When the next progress report of ``partition`` is expected, in milliseconds
        from ``now_us`` (at least ``OVERDUE_SHARE`` of the usual interval); None while
        no interval is known."""
        lag = self._partitions[partition]
        if lag.interval_us is None or lag.reported_us is None:
            return None
        left_us = lag.interval_us - (now_us - lag.reported_us)
        return max(left_us, lag.interval_us * OVERDUE_SHARE) / 1000

    def _refusal(self, partition: int, lag_us: int, now_us: int, bound_ms: int) -> Refusal:
        lag_ms = lag_us / 1000
        hint = retry_after_ms(lag_ms, bound_ms, self.next_report_ms(partition, now_us))
        return Refusal(partition, lag_ms, bound_ms, hint)

    def lag_us(self, partition: int, now_us: int) -> int:
        """How long the oldest undecided message of ``partition`` has waited (0: none)."""
        outstanding = self._partitions[partition].outstanding
        return max(0, now_us - outstanding[0][1]) if outstanding else 0

    def outstanding(self, partition: int) -> int:
        """Messages of ``partition`` this replica published that are not decided yet."""
        return len(self._partitions[partition].outstanding)

    def admit(self, partitions: Iterable[int], now_us: int, bound_ms: int) -> Refusal | None:
        """None when a batch touching ``partitions`` may be acknowledged, else why not."""
        if bound_ms <= 0:
            return None
        worst: tuple[int, int] | None = None
        for partition in partitions:
            lag = self.lag_us(partition, now_us)
            if lag > bound_ms * 1000 and (worst is None or lag > worst[1]):
                worst = (partition, lag)
        if worst is None:
            return None
        partition, lag = worst
        return self._refusal(partition, lag, now_us, bound_ms)

    def lagging(self, now_us: int, bound_ms: int) -> list[Refusal]:
        """The refusal ``admit`` would give for each partition lagging past the bound at
        ``now_us``, the one lagging most first (ties: the lowest partition, as ``admit``
        names it); empty when none lags or the bound is 0. For any batch, ``admit`` of
        its partitions is the first of these whose partition it touches, or None."""
        if bound_ms <= 0:
            return []
        bound_us = bound_ms * 1000
        lags = [
            (now_us - lag.outstanding[0][1], partition)
            for partition, lag in enumerate(self._partitions)
            if lag.outstanding and now_us - lag.outstanding[0][1] > bound_us
        ]
        lags.sort(key=lambda found: (-found[0], found[1]))
        return [self._refusal(partition, lag, now_us, bound_ms) for lag, partition in lags]


def retry_after_ms(lag_ms: float, bound_ms: int, next_report_ms: float | None = None) -> int:
    """The retry hint for a partition ``lag_ms`` behind: until its next progress report
    is expected (``next_report_ms``; unknown: half the bound, about how often a worker
    keeping up reports), longer the further the partition is behind (a quarter of the
    excess: a worker that is down is asked again about every second), within
    ``RETRY_AFTER_MS_MIN`` .. ``RETRY_AFTER_MS_MAX``. The time already waited is no
    estimate of the time left: most of it has passed."""
    soonest = bound_ms / 2 if next_report_ms is None else next_report_ms
    hint = max(soonest, (lag_ms - bound_ms) / 4)
    return int(min(RETRY_AFTER_MS_MAX, max(RETRY_AFTER_MS_MIN, hint)))


def retry_after_header(milliseconds: int) -> str:
    """The ``Retry-After`` header (whole seconds, at least 1) for a hint in milliseconds."""
    return str(max(1, -(-milliseconds // 1000)))


def parse_lag_bound(text: str) -> int:
    """The bound in milliseconds of ``--lag-max-ms``: a whole number >= 0, or ``off`` (0)."""
    value = text.strip().lower()
    if value == "off":
        return 0
    if not value.isdigit() or len(value) > 9:
        raise ValueError(f"{text!r} is not a whole number of milliseconds (>= 0) or 'off'")
    return int(value)

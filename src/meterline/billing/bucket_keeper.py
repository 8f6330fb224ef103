"""The background keeper of the rated-usage buckets (``billing.buckets``): a thread that
catches them up while yielding to appends, started by the embedded server and the stream
workers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from meterline.billing.buckets import CATCH_UP_BATCH_ROWS, catch_up
from meterline.billing.context import BillingContext
from meterline.core.cuts import Cut
from meterline.ledger import bucket_records

_log = logging.getLogger(__name__)

__all__ = [
    "CATCH_UP_INTERVAL_S",
    "HELD_KEPT_MAX",
    "KEEPER_BACKLOG_MAX_EVENTS",
    "KEEPER_IDLE_S",
    "BucketKeeper",
    "start_keeper",
]

CATCH_UP_INTERVAL_S = 0.5
"""How often a ``BucketKeeper`` catches up when nothing nudges it."""

KEEPER_IDLE_S = 0.2
"""How long the ledger must stand still (no append) before a ``BucketKeeper`` folds:
appends at full speed are never more than a few milliseconds apart, so it stays out of
their way; a pause this long is enough to fold a batch in."""

KEEPER_BACKLOG_MAX_EVENTS = 5 * CATCH_UP_BATCH_ROWS
"""Events past the watermark a ``BucketKeeper`` lets stand while appends go on; past it,
it folds (one batch at a time) even though they do not pause, so the fold a read does
first stays bounded (about two seconds at the fold rates BENCHMARKS.md measures)."""

HELD_KEPT_MAX = 10_000
"""Write-lock hold times a ``BucketKeeper`` remembers (its last batches': a keeper that
runs for months keeps no more)."""


class BucketKeeper(threading.Thread):
    """Catches the buckets up in the background, yielding to appends: it folds once the
    ledger has stood still for ``idle_s`` (no append moved its cut), or, while appends
    go on, once the backlog (events past the watermark) passes ``backlog_max`` events,
    one batch at a time, so a read never has more than about that much to fold first. It
    looks every ``interval_s`` and whenever ``nudge``d (a stream worker nudges after each
    committed batch). A failed catch-up is logged and tried again next time; ``stop``
    ends the thread. A batch is at most ``batch_rows`` events (``catch_up``'s default unless given).

    In one CPython process the fold and the appends share one interpreter lock: a keeper
    folding beside full-speed appends takes that share from them, so it waits for a
    pause instead (BENCHMARKS.md, bench finance)."""

    def __init__(
        self,
        context: BillingContext,
        interval_s: float = CATCH_UP_INTERVAL_S,
        idle_s: float = KEEPER_IDLE_S,
        backlog_max: int = KEEPER_BACKLOG_MAX_EVENTS,
        clock: Callable[[], float] = time.monotonic,
        batch_rows: int | None = None,
    ) -> None:
        super().__init__(name="meterline-buckets", daemon=True)
        self._context = context
        self._interval_s = interval_s
        self._idle_s = idle_s
        self._backlog_max = backlog_max
        self._clock = clock
        self._batch_rows = batch_rows
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._seen: Cut | None = None
        self._moved_at = clock()
        self.folded = 0
        """Events folded so far."""
        self.held: deque[float] = deque(maxlen=HELD_KEPT_MAX)
        """The seconds each of the last batches' write transactions held the store's write
        lock (``catch_up``'s ``held``), the latest last."""

    def run(self) -> None:
        wait_s = self._interval_s
        while not self._stopping.is_set():
            self._wake.wait(wait_s)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                wait_s = self.look()
            except Exception:  # a projection: tried again at the next tick
                _log.exception("rated-usage buckets: catch-up failed")
                wait_s = self._interval_s

    def look(self) -> float:
        """One look at the ledger: fold a batch when it is idle or the backlog is past
        the bound; the seconds until the next look (0: at once, more may be behind)."""
        context = self._context
        cut = context.ledger_cut()
        now = self._clock()
        if cut != self._seen:
            self._seen, self._moved_at = cut, now
        loaded = context.load()
        since = (
            None
            if loaded is None
            else bucket_records.watermark(context.connection, loaded.revision)
        )
        if loaded is None or since is None or since.through.partitions != cut.partitions:
            return self._interval_s
        backlog = cut.events - since.through.events
        if backlog <= 0:
            return self._interval_s
        quiet_s = now - self._moved_at
        if quiet_s < self._idle_s and backlog <= self._backlog_max:
            return self._idle_s - quiet_s  # appends are flowing: look again when they may stop
        folded = catch_up(context, loaded, self._stopping, 1, self.held, self._batch_rows)
        self.folded += folded
        return 0.0 if folded else self._interval_s

    def nudge(self) -> None:
        """Look now (new events committed)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout=30)


def start_keeper(context: BillingContext) -> BucketKeeper | None:
    """A running ``BucketKeeper`` over ``context`` when it keeps buckets; None otherwise."""
    if not context.keeps_buckets:
        return None
    keeper = BucketKeeper(context)
    keeper.start()
    return keeper

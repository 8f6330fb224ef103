"""The ledger sequences behind a finalized invoice line, cached (a finalized line never
changes, and finding its events costs a re-rating of its period)."""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict

from meterline.billing.service import Billing

LINEAGE_CACHE_LINES = 16
"""Lines whose sequences are kept (least recently used leaves first)."""


class LineSequences:
    """``sequences(invoice, line)``: the line's event sequences, ascending; thread-safe."""

    def __init__(self, billing: Billing, capacity: int = LINEAGE_CACHE_LINES) -> None:
        self.billing = billing
        self.capacity = capacity
        self._lines: OrderedDict[tuple[str, int], array[int]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, invoice_id: str, number: int) -> array[int]:
        key = (invoice_id, number)
        with self._lock:
            cached = self._lines.get(key)
            if cached is not None:
                self._lines.move_to_end(key)
                return cached
        members = self.billing.line_events(invoice_id, number)
        found = array("q", sorted(sequence for sequence, _ in members))
        with self._lock:
            self._lines[key] = found
            while len(self._lines) > self.capacity:
                self._lines.popitem(last=False)
        return found

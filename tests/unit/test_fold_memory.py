"""What a process remembers between fold batches holds at one watermark only."""

from __future__ import annotations

import pytest

from meterline.billing import fold_memory
from meterline.billing.fold_memory import KnownRows, keep_known, take_known
from meterline.core.cuts import Cut
from meterline.ledger.bucket_records import DAYS, HOURS, Watermark

HOUR = 3_600_000_000


def row(customer: str, meter: str, hour_us: int) -> tuple[object, ...]:
    return (customer, 1, 0, meter, "[]", hour_us, 1, "1", "0", "0", "0" * 64, "{}")


def test_a_build_starts_knowing_nothing_is_stored() -> None:
    known = take_known(1, Watermark(Cut.empty(2), "g"))
    assert known is not None
    assert known.unknown(HOURS, [("acme", 0, "tokens", "[]", 5 * HOUR)]) == []


def test_places_at_or_before_a_lines_last_are_read_the_rest_are_not() -> None:
    known = KnownRows()
    assert known.add(HOURS, [row("acme", "tokens", 3 * HOUR), row("acme", "tokens", HOUR)])
    places = [
        ("acme", 0, "tokens", "[]", 2 * HOUR),  # before the last stored hour: may be stored
        ("acme", 0, "tokens", "[]", 3 * HOUR),  # the last one itself
        ("acme", 0, "tokens", "[]", 4 * HOUR),  # after it: stored nowhere
        ("acme", 0, "calls", "[]", HOUR),  # a line never written
    ]
    assert known.unknown(HOURS, places) == places[:2]
    assert known.unknown(DAYS, places) == []


def test_what_is_known_is_taken_only_at_the_watermark_it_was_kept_for() -> None:
    through = Cut.of((4, 0))
    known = KnownRows()
    keep_known(7, "g", through, known, [(HOURS, [row("acme", "tokens", HOUR)])])
    assert take_known(7, Watermark(Cut.of((5, 0)), "g")) is None  # another cut: forgotten
    keep_known(7, "g", through, known, [])
    assert take_known(7, Watermark(through, "other build")) is None  # another generation
    keep_known(7, "g", through, known, [])
    assert take_known(7, Watermark(through, "g")) is known
    assert take_known(7, Watermark(through, "g")) is None  # taken out while a batch folds


def test_past_the_bound_nothing_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fold_memory, "LINES_KNOWN_MAX", 1)
    known = KnownRows()
    rows = [row("acme", "tokens", HOUR), row("acme", "calls", HOUR)]
    keep_known(8, "g", Cut.of((2,)), known, [(HOURS, rows)])
    assert take_known(8, Watermark(Cut.of((2,)), "g")) is None

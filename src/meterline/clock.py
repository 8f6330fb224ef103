"""The shell's clock: the only place meterline reads the time of day.

The core never reads a clock; the shell passes ``now`` in as integer microseconds since
the Unix epoch (UTC). Tests inject a fixed or stepping clock instead.

A process (and every process it starts) can be told another "now", like a test clock in
Stripe: ``METERLINE_NOW=2027-03-15T12:00:00Z`` makes the clock read that instant when it is
first read and run on in real time from there. The first read records the real instant it
happened in ``METERLINE_NOW_SINCE_US``, which child processes inherit, so a server and the
live worker it starts keep one clock. It exists for replays, demos and tests that must hold
on any date; ``meterline serve`` says so loudly when it is set.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime

from meterline.core.events import timestamp_to_us
from meterline.errors import MeterlineError

Clock = Callable[[], int]

NOW_VARIABLE = "METERLINE_NOW"
"""Environment variable: an RFC 3339 instant (with a zone) the clock starts from."""
SINCE_VARIABLE = "METERLINE_NOW_SINCE_US"
"""Environment variable: the real instant (µs) at which ``METERLINE_NOW`` was read first."""

_offset_us: int | None = None


class ClockSettingError(MeterlineError, ValueError):
    """``METERLINE_NOW`` is not an RFC 3339 instant with a zone."""

    code = "invalid_clock_setting"
    http_status = 500


def _real_us() -> int:
    return time.time_ns() // 1000


def parse_instant_us(text: str) -> int:
    """An RFC 3339 instant with a zone (``Z`` or an offset) as µs since the epoch."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as error:
        raise ClockSettingError(f"{NOW_VARIABLE}: {text!r} is not an RFC 3339 instant") from error
    if moment.tzinfo is None:
        raise ClockSettingError(f"{NOW_VARIABLE}: {text!r} has no zone (add Z or an offset)")
    return timestamp_to_us(moment)


def clock_offset_us() -> int:
    """How far this process's clock runs from the system's (0 unless ``METERLINE_NOW``)."""
    global _offset_us
    if _offset_us is None:
        _offset_us = _read_offset_us()
    return _offset_us


def _read_offset_us() -> int:
    setting = os.environ.get(NOW_VARIABLE, "").strip()
    if not setting:
        return 0
    start_us = parse_instant_us(setting)
    since = os.environ.get(SINCE_VARIABLE, "").strip()
    if since.isdigit():
        since_us = int(since)
    else:
        since_us = _real_us()
        os.environ[SINCE_VARIABLE] = str(since_us)  # children run on the same clock
    return start_us - since_us


def system_clock_us() -> int:
    """Microseconds since the Unix epoch: the system's wall clock, or the test clock."""
    offset_us = clock_offset_us()  # first: its first read anchors the real instant
    return _real_us() + offset_us

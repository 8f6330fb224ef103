"""The shell's clock: the only place meterline reads the time of day.

The core never reads a clock; the shell passes ``now`` in as integer microseconds since
the Unix epoch (UTC). Tests inject a fixed or stepping clock instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def system_clock_us() -> int:
    """Microseconds since the Unix epoch, from the system's wall clock."""
    return time.time_ns() // 1000

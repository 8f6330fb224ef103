"""The shell's clock: METERLINE_NOW starts it at an instant and child processes share it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meterline.clock import (
    NOW_VARIABLE,
    SINCE_VARIABLE,
    ClockSettingError,
    parse_instant_us,
)

_PRINT_CLOCK = "from meterline.clock import system_clock_us; print(system_clock_us())"


def _clock_of(env: dict[str, str]) -> int:
    finished = subprocess.run(
        [sys.executable, "-c", _PRINT_CLOCK], capture_output=True, text=True, env=env, check=True
    )
    return int(finished.stdout)


def test_instants_need_a_zone() -> None:
    """An RFC 3339 instant parses to µs; a naive one or a word is refused."""
    assert parse_instant_us("1970-01-01T00:00:01Z") == 1_000_000
    assert parse_instant_us("2026-11-23T13:00:00+01:00") == 1_795_435_200_000_000
    for bad in ("2026-11-23T12:00:00", "tomorrow"):
        with pytest.raises(ClockSettingError, match=NOW_VARIABLE):
            parse_instant_us(bad)


def test_a_process_clock_starts_at_the_instant_and_children_share_the_anchor() -> None:
    """Two processes given the same anchor read the same clock, which runs forward."""
    start = parse_instant_us("2027-03-15T12:00:00Z")
    env = {**os.environ, NOW_VARIABLE: "2027-03-15T12:00:00Z"}
    env.pop(SINCE_VARIABLE, None)
    first = _clock_of(env)
    assert start <= first < start + 30_000_000
    anchored = {**env, SINCE_VARIABLE: str(parse_instant_us("2000-01-01T00:00:00Z"))}
    later = _clock_of(anchored)
    assert later > start + 10 * 365 * 86_400 * 1_000_000  # 26 years of real time since


def test_a_bad_setting_stops_the_cli_with_a_clear_error() -> None:
    """`meterline` refuses a malformed METERLINE_NOW, exit 2, naming the variable."""
    env = {**os.environ, NOW_VARIABLE: "next tuesday"}
    finished = subprocess.run(
        [sys.executable, "-m", "meterline", "--help"], capture_output=True, text=True, env=env
    )
    assert finished.returncode == 2
    assert NOW_VARIABLE in finished.stderr and "Traceback" not in finished.stderr

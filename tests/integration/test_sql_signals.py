"""``meterline sql`` stops on Ctrl-C (SIGINT: exit 130) and on SIGTERM (exit 143) while
DuckDB runs a long query, in a real subprocess: one line, no traceback, and its temporary
DuckDB folder gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meterline.finance.export import TEMPORARY_PREFIXES
from meterline.ledger.event_ledger import open_store
from tests.conftest import Location

NewDb = Callable[..., Location]

LONG_QUERY = (
    "SELECT sum(a.range * e.n) FROM range(1000000000000) a,"
    " (SELECT count(*) + 1 AS n FROM events) e"
)
"""A trillion rows: hours of DuckDB work, unless it is stopped."""
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
"""Interrupted, DuckDB stops within a fraction of a second; the query alone takes hours."""


def building_done(folder: Path) -> bool:
    """The tables are built: the database file is there and the staging folder gone."""
    names = [entry.name for entry in folder.iterdir()]
    built = any((folder / name / "tables.duckdb").exists() for name in names)
    staging = any(name.startswith(TEMPORARY_PREFIXES[1]) for name in names)
    return built and not staging


@pytest.mark.parametrize(
    ("number", "code", "message"),
    [
        (signal.SIGINT, 130, "error: interrupted (Ctrl-C): the query was stopped"),
        (signal.SIGTERM, 143, "error: terminated (SIGTERM): the query was stopped"),
    ],
    ids=["sigint", "sigterm"],
)
def test_a_signal_stops_the_query_and_removes_the_temporary_folder(
    new_db: NewDb, tmp_path: Path, number: signal.Signals, code: int, message: str
) -> None:
    """Sent while the long query runs: the exit code, one line, nothing left in TMPDIR."""
    db = new_db("sql")
    open_store(db).close()
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "meterline", "sql", LONG_QUERY, "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temporary)},
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not building_done(temporary):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the tables were not built in time"
            time.sleep(0.05)
        time.sleep(0.5)  # into the query (a signal a moment earlier ends the same way)
        assert process.poll() is None, process.communicate()
        sent = time.monotonic()
        process.send_signal(number)
        stdout, stderr = process.communicate(timeout=STOP_TIMEOUT_S)
        stopped_in = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == code, stderr
    assert stderr.splitlines() == [message]
    assert "Traceback" not in stderr and stdout == ""
    assert stopped_in < STOP_TIMEOUT_S
    assert list(temporary.iterdir()) == []

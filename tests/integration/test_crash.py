"""Durability under SIGKILL: nothing acknowledged is lost, nothing is counted twice, on
either store (SQLite's journal, or PostgreSQL rolling back the killed transaction)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from meterline.ledger import open_ledger
from tests.conftest import Location
from tests.integration.crash_writer import BATCH_EVENTS
from tests.stores import rows as raw_rows

WRITER = Path(__file__).with_name("crash_writer.py")
KILLS = 20


def _run_until_killed(db: Location, first: int, delay_s: float) -> list[str]:
    process = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), str(first)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
    reader.start()
    time.sleep(delay_s)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    reader.join(timeout=30)
    return [line.strip() for line in lines]


@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_doubles_nothing(
    new_db: Callable[..., Location],
) -> None:
    """Kill the writer 20 times mid-stream; every ACKed event is stored exactly once."""
    db = new_db("crash")
    rng = random.Random(20261123)
    acknowledged: set[int] = set()
    next_batch = 0
    for _ in range(KILLS):
        lines = _run_until_killed(db, next_batch, rng.uniform(0.4, 1.4))
        assert not [line for line in lines if line.startswith("BAD")], lines
        if next_batch and lines:
            resent, accepted, duplicate = (int(part) for part in lines[0].split()[1:])
            assert (resent, accepted, duplicate) == (next_batch - 1, 0, BATCH_EVENTS), (
                "an acknowledged batch sent again must come back as duplicates only"
            )
        for line in lines:
            _, number, _accepted, _duplicate = line.split()
            acknowledged.add(int(number))
        if acknowledged:
            next_batch = max(acknowledged) + 1
    assert len(acknowledged) >= KILLS, "the writer should have acknowledged work between kills"

    rows = [tuple(row) for row in raw_rows(db, "SELECT customer, event_id FROM events")]
    per_event = Counter(rows)
    assert max(per_event.values()) == 1, "an event was stored twice"
    per_batch = Counter(int(event_id[1:].split("-")[0]) for _, event_id in rows)
    for number in acknowledged:
        assert per_batch[number] == BATCH_EVENTS, f"acknowledged batch {number} is incomplete"
    assert set(per_batch.values()) == {BATCH_EVENTS}, "a batch was half-written"
    with open_ledger(db) as ledger:
        report = ledger.verify()
        assert report.intact, report.problem
        assert report.records == len(rows)

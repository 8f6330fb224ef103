"""The rated-usage buckets' keeper in a process of its own (``billing.keeper_process``),
with real processes on both stores: it folds what is committed, stops with its parent
(told to, or killed), and a keeper killed (SIGKILL) while folding loses nothing: the one
started after it folds on from the watermark, and the buckets equal a re-rating."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from meterline.billing import buckets
from meterline.billing.keeper_process import PARENT_CHECK_S, KeeperPace, KeeperProcess
from meterline.ledger import bucket_records
from meterline.ledger.location import Location
from tests.integration.test_buckets import assert_equal_to_rerating, kept, late_stream

WAIT_S = 60.0
"""How long a test waits for a keeper (a loaded machine is slow, never this slow)."""


@pytest.fixture(autouse=True)
def _buckets_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(buckets.BUCKETS_SETTING, raising=False)


def folded(billing: Any) -> int:
    """Events the current revision's watermark holds."""
    context = billing.context
    mark = bucket_records.watermark(context.connection, context.current().revision)
    return 0 if mark is None else mark.through.events


def wait_until(condition: Callable[[], bool], seconds: float = WAIT_S) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as status:
            state = status.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def many_events(copies: int) -> list[dict[str, Any]]:
    """``late_stream`` ``copies`` times over, each copy's events with ids of their own."""
    return [
        {**event, "id": f"{event['id']}-{copy}"}
        for copy in range(copies)
        for event in late_stream()
    ]


def test_the_keeper_process_folds_what_is_committed(new_db: Callable[..., Location]) -> None:
    """Appends committed while the keeper runs are folded without a read asking; it
    stops when told, reporting what it folded and how long each write held the lock."""
    with kept(new_db()) as billing:
        keeper = KeeperProcess(
            str(billing.context.store.path), KeeperPace(batch_rows=5, idle_s=0.0, backlog_max=0)
        ).start()
        try:
            assert keeper.is_alive() and keeper.pid != os.getpid()
            stream = late_stream()
            assert billing.ledger.ingest(stream).accepted == len(stream)
            keeper.nudge()
            assert wait_until(lambda: folded(billing) == len(stream))
        finally:
            keeper.stop()
        assert not keeper.is_alive()
        assert keeper.folded == len(stream)
        assert len(keeper.held) == -(-len(stream) // 5)  # a transaction per batch of 5
        assert all(0 < seconds < WAIT_S for seconds in keeper.held)
        assert_equal_to_rerating(billing, len(stream))


PARENT = """
import sys, time
from meterline.billing.keeper_process import KeeperProcess
keeper = KeeperProcess(sys.argv[1]).start()
print(keeper.pid, flush=True)
time.sleep(600)
"""


def test_the_keeper_process_exits_when_its_parent_is_killed(
    new_db: Callable[..., Location],
) -> None:
    """A parent killed (SIGKILL) never leaves its keeper behind: the keeper sees the
    connection close (or its parent gone) and exits."""
    location = new_db()
    with kept(location):
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, str(location)],
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert running(child)
            parent.send_signal(signal.SIGKILL)
            assert parent.wait(WAIT_S) == -signal.SIGKILL
            assert wait_until(lambda: not running(child), 10 * PARENT_CHECK_S + 5)
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()


def test_a_killed_keeper_process_loses_nothing(new_db: Callable[..., Location]) -> None:
    """A keeper killed (SIGKILL) part-way through a backlog, one small transaction after
    another: the keeper started in its place folds on from the watermark, and the
    buckets hold every event once (equal to a re-rating; reconcile's check passes)."""
    with kept(new_db()) as billing:
        stream = many_events(10)
        assert billing.ledger.ingest(stream).accepted == len(stream)
        keeper = KeeperProcess(str(billing.context.store.path), KeeperPace(batch_rows=1)).start()
        try:
            first = keeper.pid
            assert first is not None
            assert wait_until(lambda: folded(billing) > 0)
            os.kill(first, signal.SIGKILL)
            assert 0 < folded(billing) < len(stream)  # killed part-way
            assert wait_until(lambda: keeper.restarts == 1 and keeper.is_alive())
            assert keeper.pid != first
            assert wait_until(lambda: folded(billing) == len(stream))
        finally:
            keeper.stop()
        assert keeper.folded < len(stream)  # the one that finished took over part-way
        assert_equal_to_rerating(billing, len(stream))

"""``meterline keeper`` (``stream.keeper``), with real processes on both stores: of
several keepers started on one ledger exactly one folds (it holds the ledger's keeper
lock); when it is SIGKILLed another takes over and folds on from the watermark, and the
buckets equal a re-rating; a keeper told to stop (SIGTERM) exits cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meterline.billing import buckets
from meterline.ledger.location import Location, is_postgres
from meterline.stream.keeper import KEEPER_LOCK_RETRY_S, lock_holder
from tests.integration.test_buckets import assert_equal_to_rerating, kept
from tests.integration.test_keeper_process import WAIT_S, folded, many_events, wait_until

HOLDING = "holding the ledger's keeper lock"
"""What a keeper logs when it takes the lock."""


@pytest.fixture(autouse=True)
def _buckets_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(buckets.BUCKETS_SETTING, raising=False)


def start_keeper(location: Location, log: Path) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "METERLINE_LOG_LEVEL": "INFO",
    }
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "meterline", "keeper", "--db", str(location)],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def terms(log: Path) -> int:
    """How many times the keeper writing ``log`` took the lock."""
    return log.read_text(errors="replace").count(HOLDING) if log.exists() else 0


def test_one_keeper_folds_and_another_takes_over_when_it_is_killed(
    new_db: Callable[..., Location], tmp_path: Path
) -> None:
    location = new_db()
    logs = [tmp_path / "keeper-0.log", tmp_path / "keeper-1.log"]
    with kept(location) as billing:
        keepers = [start_keeper(location, log) for log in logs]
        try:
            assert wait_until(lambda: sum(terms(log) for log in logs) == 1)
            time.sleep(4 * KEEPER_LOCK_RETRY_S)  # the other tried the lock meanwhile
            assert [terms(log) for log in logs].count(1) == 1  # still exactly one holds
            first = next(n for n, log in enumerate(logs) if terms(log) == 1)
            second = 1 - first
            assert all(keeper.poll() is None for keeper in keepers)  # the other waits
            if is_postgres(location):
                assert lock_holder(str(location)) is not None
            stream = many_events(4)
            half = len(stream) // 2
            assert billing.ledger.ingest(stream[:half]).accepted == half
            assert wait_until(lambda: folded(billing) == half)

            keepers[first].send_signal(signal.SIGKILL)
            assert keepers[first].wait(WAIT_S) == -signal.SIGKILL
            assert billing.ledger.ingest(stream[half:]).accepted == len(stream) - half
            assert wait_until(lambda: terms(logs[second]) == 1)  # it took over
            assert wait_until(lambda: folded(billing) == len(stream))
            assert terms(logs[first]) == 1  # the killed one never came back

            keepers[second].send_signal(signal.SIGTERM)
            assert keepers[second].wait(WAIT_S) == 0
            if is_postgres(location):
                assert wait_until(lambda: lock_holder(str(location)) is None)
        finally:
            for keeper in keepers:
                if keeper.poll() is None:
                    keeper.kill()
                    keeper.wait()
        assert_equal_to_rerating(billing, len(stream))

"""`meterline partitions` and the partition count of a ledger, on both stores."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from meterline.errors import StoreError
from meterline.ledger import Ledger
from meterline.ledger.event_ledger import open_store
from meterline.ledger.location import is_postgres
from tests.conftest import FIXED_NOW_US, Location, event
from tests.stores import rows


def meterline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meterline", *args], capture_output=True, text=True, timeout=120
    )


def test_partitions_show_and_set(new_db: Callable[..., Location]) -> None:
    db = str(new_db())
    shown = meterline("partitions", "--db", db)
    assert shown.returncode == 0
    if not is_postgres(db):
        assert shown.stdout.strip() == "1 partitions"
        refused = meterline("partitions", "--db", db, "--set", "4")
        assert refused.returncode == 2 and "SQLite ledger has one chain" in refused.stderr
        return
    assert shown.stdout.strip() == "8 partitions"  # the default of a new PostgreSQL ledger
    # while empty, the count may change; each partition gets its child table and head
    assert meterline("partitions", "--db", db, "--set", "3").stdout.strip() == "3 partitions"
    assert meterline("partitions", "--db", db, "--set", "0").returncode == 2
    with Ledger(open_store(db), lambda: FIXED_NOW_US) as ledger:
        ledger.ingest([event(n, customer=f"c{n % 11}") for n in range(200)])
        assert ledger.verify().intact
        assert ledger.store.cut().partitions == 3
    used = rows(db, "SELECT DISTINCT partition_number FROM events")
    assert {partition for (partition,) in used} <= {0, 1, 2}
    # once it holds events the count is fixed: customers would move away from their events
    refused = meterline("partitions", "--db", db, "--set", "4")
    assert refused.returncode == 2 and "holds events" in refused.stderr


def test_a_ledger_keeps_the_partition_count_it_was_made_with(
    new_db: Callable[..., Location],
) -> None:
    db = new_db()
    if not is_postgres(db):
        with pytest.raises(ValueError, match="one chain"):
            open_store(db, partitions=4)
        return
    open_store(db, partitions=4).close()
    reopened = open_store(db)
    assert reopened.partitions == 4
    reopened.close()
    with pytest.raises(StoreError, match="has 4 partitions, not 6"):
        open_store(db, partitions=6)

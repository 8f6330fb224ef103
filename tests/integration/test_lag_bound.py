"""The ingest lag bound with real processes: a ``meterline serve --stream`` replica, a
``meterline worker`` that is stopped (SIGSTOP) and resumed (SIGCONT), the shared
JetStream server and a PostgreSQL ledger (``test_distributed``'s fixtures).

While the worker is stopped, a partition holding an acknowledged message nobody has
decided on lags; once past the bound, the replica answers 429 with ``Retry-After`` for
any batch touching it (and only those: another partition's batch is still taken),
acknowledging nothing of what it refused. Once the worker runs again the lag falls and
the same batch is taken. The ledger then holds every acknowledged event exactly once
and nothing else. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import httpx

from meterline.api.server import spawn_server
from meterline.core.partitions import partition_of
from tests.conftest import Databases, make_keys
from tests.integration.test_distributed import (  # noqa: F401 (fixtures)
    LOCAL_NATS,
    PARTITIONS,
    Fleet,
    eventually,
    fleet,
    ledger_keys,
    namespace,
    new_ledger,
    post_once,
    postgres,
    quiet_status,
    usage_event,
    usage_time,
)
from tests.stores import rows

BOUND_MS = 300
"""The replica's bound: long enough that a running worker on a loaded machine keeps
under it between two posts of this test, short enough to pass quickly when stopped."""


def lag_of(url: str) -> dict[int, float]:
    """The replica's ingest lag per partition (seconds), from ``/metrics``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.findall(r'^meterline_ingest_lag_seconds\{partition="(\d+)"\} (\S+)$', text, re.M)
    return {int(partition): float(value) for partition, value in found}


def refused_of(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(r"^meterline_ingest_refused_batches (\S+)$", text, re.M)
    assert match is not None, text
    return float(match.group(1))


def test_a_stopped_worker_makes_its_lagging_partitions_refuse_until_it_catches_up(
    postgres: Databases,  # noqa: F811
    namespace: str,  # noqa: F811
    fleet: Fleet,  # noqa: F811
    tmp_path: Path,
) -> None:
    by_partition: dict[int, str] = {}
    number = 0
    while len(by_partition) < PARTITIONS:
        by_partition.setdefault(partition_of(f"lag-{number}", PARTITIONS), f"lag-{number}")
        number += 1
    first, second = by_partition[0], by_partition[1]
    db = new_ledger(postgres, tmp_path, "lagbound", dict.fromkeys(by_partition.values(), 10**6))
    keys = make_keys(db)
    worker = fleet.worker(db, LOCAL_NATS, "all", f"w-{namespace}", namespace)
    process, url = spawn_server(
        db,
        stream_args=(
            *("--stream", LOCAL_NATS, "--namespace", namespace),
            *("--lag-max-ms", str(BOUND_MS)),
        ),
    )
    fleet.processes.append((f"api {url}", process, None))
    eventually(lambda: quiet_status(db, LOCAL_NATS, namespace), "the worker owns every partition")
    at = usage_time()
    acknowledged: set[tuple[str, str]] = set()

    def batch(customer: str, name: str, size: int = 5) -> list[dict[str, Any]]:
        return [usage_event(customer, f"{name}-{n}", 100 + n, at) for n in range(size)]

    def accepted(client: httpx.Client, events: list[dict[str, Any]]) -> bool:
        answer = post_once(client, keys["ingest"], events)
        if answer.status_code == 429:
            return False
        assert answer.status_code == 202, answer.text
        assert answer.json()["accepted"] == len(events)
        acknowledged.update((event["customer"], event["id"]) for event in events)
        return True

    with httpx.Client(base_url=url, timeout=30) as client:
        warm = batch(first, "warm")
        eventually(lambda: accepted(client, warm), "a first batch is taken")
        eventually(
            lambda: len(ledger_keys(db)) == len(acknowledged) and lag_of(url).get(0) == 0,
            "the worker decided on the first batch",
        )

        os.kill(worker.pid, signal.SIGSTOP)
        try:
            assert accepted(client, batch(first, "before-lag")), "nothing lagged yet"
            eventually(lambda: lag_of(url)[0] * 1000 > BOUND_MS, "partition 0 lags past the bound")
            held = batch(first, "held")
            refused = post_once(client, keys["ingest"], held)
            assert refused.status_code == 429, refused.text
            assert int(refused.headers["retry-after"]) >= 1
            error = refused.json()["error"]
            assert error["code"] == "ingest_lagging"
            assert error["partition"] == 0 and error["bound_ms"] == BOUND_MS
            assert error["lag_ms"] > BOUND_MS and error["retry_after_ms"] >= 10
            # a batch touching partition 0 among others is refused whole
            mixed = batch(second, "mixed") + batch(first, "mixed-first")
            assert post_once(client, keys["ingest"], mixed).status_code == 429
            # partition 1 has nothing outstanding: its batches are still taken
            assert accepted(client, batch(second, "other-partition"))
            assert refused_of(url) == 2
        finally:
            os.kill(worker.pid, signal.SIGCONT)

        eventually(lambda: accepted(client, held), "the held batch is taken once the worker runs")
        eventually(lambda: accepted(client, mixed), "the mixed batch is taken too")

    eventually(lambda: len(ledger_keys(db)) == len(acknowledged), "every acknowledged event")
    stored = ledger_keys(db)
    assert set(stored) == acknowledged
    assert max(stored.values()) == 1
    assert rows(db, "SELECT count(*) FROM events")[0][0] == len(acknowledged)
    eventually(lambda: max(lag_of(url).values()) == 0, "no partition lags once caught up")

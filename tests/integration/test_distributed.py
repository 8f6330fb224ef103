"""The distributed ingest path end to end, with real processes only.

``meterline serve --stream`` replicas take events over HTTP and publish them to NATS
JetStream; ``meterline worker`` processes apply their partitions to one PostgreSQL ledger
(one hash chain per partition), run those customers' live state and controls, publish
access decisions to the access bucket (which every replica mirrors) and answer live
figures over NATS request-reply. The checks use the product's own commands
(``verify``, ``status --json``, ``reconcile --url``) plus raw SQL on the ledger.

- ``test_stream_mode_end_to_end``: one worker, two API replicas on the shared JetStream
  server at nats://127.0.0.1:4222, under a namespace of the test's own (its stream and
  buckets are deleted afterwards).
- ``test_fault_cluster_worker_killed_and_node_stopped``: a 3-node JetStream cluster
  (``tests.support.nats_cluster``) with R3 stream and buckets, two workers and one
  replica, while a producer posts continuously: one worker is SIGKILLed and restarted,
  and the stream leader's node is stopped. Every acknowledged event must be in the
  ledger exactly once and the live figures must equal a full re-rating.

The distributed path needs PostgreSQL, so these tests use ``Databases("postgresql")``
directly (never the store-parametrized fixtures). Nothing is skipped: an unreachable
NATS or PostgreSQL fails the test saying how to start it. Every process a test starts is
killed when it ends, pass or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import nats
import psycopg
import pytest
from nats.js.errors import NotFoundError

from meterline.api.server import spawn_server
from meterline.core.chain import BatchRecord, HeadState, StoredRecord, verify_chains
from meterline.core.events import format_timestamp, timestamp_to_us
from meterline.core.merkle import frontier_from_bytes
from meterline.core.partitions import partition_of
from meterline.ledger.event_ledger import open_store
from meterline.stream.inspect import read_status
from tests.conftest import POSTGRES_URL, Databases, make_keys
from tests.stores import rows
from tests.support.nats_cluster import NatsCluster

LOCAL_NATS = "nats://127.0.0.1:4222"
START_NATS = (
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server --"
    " -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
)
PARTITIONS = 4
WAIT_S = 60.0
"""The longest one condition is waited for (lag 0 after a kill: see ``DRAIN_S``)."""
DRAIN_S = 150.0
"""How long the fault test waits for lag 0: a message delivered to the killed worker
(or lost with the stopped node) comes back only after the consumers' 30 s ack wait."""
COMMAND_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
POOL = 20
"""Credits of a small pool: one per call, so a customer's 21st event exhausts it and the
``empty`` control (balance_exhausted -> block) denies the customer access."""
LARGE_POOL = 1_000_000


# -- environment ---------------------------------------------------------------------------


def require_local_nats() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=2):
            return
    except OSError as error:
        pytest.fail(
            f"NATS JetStream is not reachable at {LOCAL_NATS} ({error}); this test needs it."
            f" Start it with: {START_NATS}",
            pytrace=False,
        )


@pytest.fixture
def postgres() -> Iterator[Databases]:
    """Fresh PostgreSQL schemas (the distributed path runs on PostgreSQL only)."""
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL at {POSTGRES_URL} is unreachable ({error}); the distributed path"
            " needs it (METERLINE_TEST_POSTGRES names another server)",
            pytrace=False,
        )
    made = Databases("postgresql")
    try:
        yield made
    finally:
        made.drop_all()


def customers_by_partition(per_partition: int, prefix: str) -> list[str]:
    """``per_partition`` customers of each of the ``PARTITIONS`` partitions, name order."""
    chosen: dict[int, list[str]] = {partition: [] for partition in range(PARTITIONS)}
    number = 0
    while any(len(names) < per_partition for names in chosen.values()):
        name = f"{prefix}-{number}"
        names = chosen[partition_of(name, PARTITIONS)]
        if len(names) < per_partition:
            names.append(name)
        number += 1
    return sorted(name for names in chosen.values() for name in names)


# -- processes -----------------------------------------------------------------------------


def meterline(*args: str, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run ``python -m meterline ARGS`` to completion (output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "meterline", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        check=False,
    )


@dataclass
class Fleet:
    """The long-running processes one test started; ``close`` ends every one of them."""

    folder: Path
    processes: list[tuple[str, subprocess.Popen[bytes], Path | None]] = field(default_factory=list)

    def worker(
        self, db: str, stream: str, partitions: str, name: str, namespace: str, replicas: int = 1
    ) -> subprocess.Popen[bytes]:
        """Start ``meterline worker`` (its output in ``<name>.log``)."""
        log_path = self.folder / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "meterline", "worker", "--db", db, "--stream", stream),
                    *("--partitions", partitions, "--name", name, "--namespace", namespace),
                    *("--stream-replicas", str(replicas)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.processes.append((name, process, log_path))
        return process

    def api(self, db: str, stream: str, namespace: str, replicas: int = 1) -> str:
        """Start a ``meterline serve --stream`` replica; its URL once it answers health."""
        process, url = spawn_server(
            db,
            stream_args=(
                *("--stream", stream, "--namespace", namespace),
                *("--stream-replicas", str(replicas)),
            ),
        )
        self.processes.append((f"api {url}", process, None))
        return url

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL ``process`` (a crash: nothing is flushed or acknowledged)."""
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)

    def alive(self) -> list[str]:
        return [name for name, process, _ in self.processes if process.poll() is None]

    def log_tails(self, lines: int = 25) -> str:
        tails = []
        for name, _, path in self.processes:
            if path is not None and path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                tails.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(tails)

    def close(self) -> None:
        """SIGTERM every process still running, then SIGKILL whatever lingers."""
        for _, process, _ in self.processes:
            if process.poll() is None:
                process.terminate()
        for _, process, _ in self.processes:
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        print("exit codes:", [(name, process.returncode) for name, process, _ in self.processes])
        print(self.log_tails())


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    started = Fleet(tmp_path)
    try:
        yield started
    finally:
        started.close()


# -- pricing and events --------------------------------------------------------------------


def start_of_last_month(now: datetime) -> str:
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first - timedelta(days=1)).replace(day=1).date().isoformat()


def usage_time() -> str:
    """A minute ago, but inside the current month (the contracts' current period)."""
    now = datetime.now(UTC)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return format_timestamp(timestamp_to_us(max(now - timedelta(minutes=1), month)))


def pricing(pools: dict[str, int]) -> str:
    """Plan ``pro``: tokens priced in USD, each call costs one credit of the customer's
    recurring pool; ``empty`` blocks a customer whose pool is exhausted (and trues up)."""
    start = start_of_last_month(datetime.now(UTC))
    contracts = "".join(
        f"""\
  - customer: {customer}
    plan: pro
    start: {start}
    credits:
      grants:
        - {{key: pool, credit_type: credits, amount: {pool}, paid: 1, recurrence: period}}
"""
        for customer, pool in pools.items()
    )
    return f"""\
credit_types:
  - {{key: credits, name: Credits, currency: USD, unit_value: "0.01"}}
meters:
  - {{key: input_tokens, event_type: llm.completion, aggregation: sum,
     property: input_tokens, group_by: [model]}}
  - {{key: calls, event_type: llm.completion, aggregation: count}}
costs:
  - {{meter: input_tokens, per_unit: "0.000001"}}
plans:
  - key: pro
    controls:
      - {{key: empty, policy: balance_exhausted, unit: credits, actions: [block, true_up]}}
      - {{key: budget, policy: spend_threshold, amount: 2, percents: [50, 100],
         actions: [alert]}}
    versions:
      - version: 1
        effective_from: 2020-01-01
        currency: USD
        prices:
          - {{meter: input_tokens, model: per_unit, unit_amount: "0.00001"}}
          - {{meter: calls, model: per_unit, unit_amount: "1", credit_type: credits}}
contracts:
{contracts}"""


def usage_event(customer: str, event_id: str, tokens: int, at: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "customer": customer,
        "type": "llm.completion",
        "timestamp": at,
        "properties": {"model": "small" if tokens % 2 else "big", "input_tokens": tokens},
    }


def new_ledger(postgres: Databases, folder: Path, name: str, pools: dict[str, int]) -> str:
    """A 4-partition PostgreSQL ledger with API keys and the pricing applied (by the CLI)."""
    db = str(postgres.new(folder, name))
    open_store(db, partitions=PARTITIONS).close()
    pricing_file = folder / f"{name}-pricing.yaml"
    pricing_file.write_text(pricing(pools))
    applied = meterline("apply", "-f", str(pricing_file), "--db", db)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    return db


# -- observing -----------------------------------------------------------------------------


def eventually(
    condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S, every_s: float = 0.25
) -> Any:
    """Wait until ``condition()`` is truthy (its value is returned); fail after the timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = condition()
        except Exception as error:  # a transient error (a node just stopped) is retried
            last = error
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting until {what} (last: {last!r})")
        time.sleep(every_s)


def status_json(db: str, stream: str, namespace: str) -> dict[str, Any]:
    """``meterline status --json``, parsed."""
    done = meterline("status", "--db", db, "--stream", stream, "--namespace", namespace, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def owned_by(status: dict[str, Any]) -> dict[int, str | None]:
    return {row["partition"]: row.get("owner") for row in status["partitions"]}


def quiet_status(db: str, stream: str, namespace: str) -> dict[str, Any] | None:
    """The status (read in this process) once every partition is owned and nothing lags."""
    status = read_status(db, stream, namespace)
    owners = owned_by(status)
    ready = all(owners.get(partition) for partition in range(PARTITIONS)) and status["lag"] == 0
    return status if ready else None


def ledger_keys(db: str) -> Counter[tuple[str, str]]:
    return Counter((customer, event_id) for customer, event_id in rows(db, _KEYS))


_KEYS = "SELECT customer, event_id FROM events"
_DUPLICATED = (
    "SELECT customer, event_id, count(*) FROM events GROUP BY customer, event_id"
    " HAVING count(*) > 1"
)


def assert_verify_intact(db: str) -> str:
    verified = meterline("verify", "--db", db)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "intact" in verified.stdout, verified.stdout
    return verified.stdout.strip()


def assert_partition_chains(db: str) -> dict[int, int]:
    """Each partition numbers its events 1..n without gaps, every event is in its
    customer's partition, and the whole ledger (events against their batches' Merkle
    roots and chains, the stored heads) verifies, read straight from the tables. Returns
    records per partition."""
    records = [
        StoredRecord(sequence, customer, event_id, kind, at_us, bytes(body), bytes(digest), part)
        for sequence, customer, event_id, kind, at_us, body, digest, part in rows(
            db,
            "SELECT sequence, customer, event_id, type, timestamp_us, body, hash,"
            " partition_number FROM events ORDER BY partition_number, sequence",
        )
    ]
    batches = [
        BatchRecord(part, number, first, last, bytes(root), bytes(chain))
        for part, number, first, last, root, chain in rows(
            db,
            "SELECT partition_number, batch_number, first_sequence, last_sequence, root,"
            " chain_hash FROM batches ORDER BY partition_number, batch_number",
        )
    ]
    heads = {
        part: HeadState(sequence, count, bytes(chain), frontier_from_bytes(bytes(frontier)))
        for part, sequence, count, chain, frontier in rows(
            db,
            "SELECT partition_number, sequence, batches, chain_hash, frontier FROM partition_heads",
        )
    }
    whole = verify_chains(PARTITIONS, records, batches, heads)
    assert whole.intact, whole
    assert whole.records == len(records)
    by_partition: dict[int, list[StoredRecord]] = {}
    for record in records:
        assert record.partition == partition_of(record.customer, PARTITIONS), record.sequence
        by_partition.setdefault(record.partition, []).append(record)
    for partition, chain in by_partition.items():
        assert [record.sequence for record in chain] == list(range(1, len(chain) + 1))
        assert heads[partition].sequence == len(chain), partition
    return {partition: len(chain) for partition, chain in sorted(by_partition.items())}


def reconcile_until_agreed(db: str, api: str, key: str, timeout_s: float = WAIT_S) -> int:
    """``meterline reconcile --url`` until it exits 0 (the workers' engines evaluate on
    their controller thread, a moment after the commit); the attempts it took."""
    deadline = time.monotonic() + timeout_s
    attempts = 0
    while True:
        attempts += 1
        done = meterline("reconcile", "--db", db, "--url", api, "--key", key, "--json")
        if done.returncode == 0:
            report = json.loads(done.stdout)
            assert report["passed"] is True
            return attempts
        if time.monotonic() > deadline:
            pytest.fail(
                f"reconcile --url {api} still differs after {attempts} attempts:\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
            )
        time.sleep(1.0)


def post_once(client: httpx.Client, key: str, events: list[dict[str, Any]]) -> httpx.Response:
    return client.post("/v1/events", json=events, headers={"Authorization": f"Bearer {key}"})


def post(client: httpx.Client, key: str, events: list[dict[str, Any]]) -> httpx.Response:
    """Post ``events`` as a client should: a 429 of the ingest lag bound (the worker is
    behind; nothing was acknowledged) is posted again after its ``retry_after_ms``."""
    deadline = time.monotonic() + WAIT_S
    while True:
        answer = post_once(client, key, events)
        if answer.status_code != 429 or time.monotonic() > deadline:
            return answer
        time.sleep(answer.json()["error"]["retry_after_ms"] / 1000)


def access_of(url: str, key: str, customer: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{url}/v1/access/{customer}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


# -- 1. one worker, two replicas, the shared server -----------------------------------------


async def delete_namespace(namespace: str) -> None:
    """Delete the stream and buckets of ``namespace`` on the shared server."""
    connection = await nats.connect(LOCAL_NATS, allow_reconnect=False, connect_timeout=5)
    try:
        js = connection.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(f"{namespace.upper()}_EVENTS")
        for bucket in (f"{namespace}_access", f"{namespace}_access_status"):
            with contextlib.suppress(NotFoundError):
                await js.delete_key_value(bucket)
    finally:
        await connection.close()


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace of the test's own on nats://127.0.0.1:4222, deleted afterwards."""
    require_local_nats()
    name = f"t{uuid4().hex[:8]}"
    try:
        yield name
    finally:
        asyncio.run(delete_namespace(name))


@pytest.mark.slow
def test_stream_mode_end_to_end(
    postgres: Databases, namespace: str, fleet: Fleet, tmp_path: Path
) -> None:
    # ``namespace`` before ``fleet``: the processes stop before the stream is deleted (a
    # running worker would create it again)
    light = customers_by_partition(2, "light")
    heavy = "heavy-0"
    pools = {customer: POOL for customer in [*light, heavy]}
    db = new_ledger(postgres, tmp_path, "e2e", pools)
    keys = make_keys(db)
    worker_name = f"w-{namespace}"
    fleet.worker(db, LOCAL_NATS, "all", worker_name, namespace)
    replica_a = fleet.api(db, LOCAL_NATS, namespace)
    replica_b = fleet.api(db, LOCAL_NATS, namespace)
    eventually(lambda: quiet_status(db, LOCAL_NATS, namespace), "the worker owns every partition")

    at = usage_time()
    sent: list[dict[str, Any]] = []
    for customer in light:  # under the pool: never blocked
        sent += [usage_event(customer, f"{customer}-{n}", 1000 + n, at) for n in range(POOL - 5)]
    heavy_events = [usage_event(heavy, f"{heavy}-{n}", 2000 + n, at) for n in range(POOL + 10)]
    sent += heavy_events
    batches = [sent[start : start + 50] for start in range(0, len(sent), 50)]
    with httpx.Client(base_url=replica_a, timeout=30) as client:
        for batch in batches:
            answer = post(client, keys["ingest"], batch)
            assert answer.status_code == 202, answer.text
            outcome = answer.json()
            assert (outcome["accepted"], outcome["rejected"]) == (len(batch), 0), outcome

        # A bad event amid valid ones: it alone is rejected, naming its field.
        mixed = [
            usage_event(light[0], "mixed-ok-1", 10, at),
            {**usage_event(light[0], "mixed-bad", 10, at), "timestamp": "yesterday-ish"},
            usage_event(light[1], "mixed-ok-2", 10, at),
        ]
        answer = post(client, keys["ingest"], mixed)
        assert answer.status_code == 202, answer.text
        outcome = answer.json()
        assert (outcome["accepted"], outcome["rejected"]) == (2, 1), outcome
        bad = outcome["results"][1]
        assert bad["status"] == "rejected" and bad["index"] == 1
        assert [error["field"] for error in bad["errors"]] == ["timestamp"], bad
        sent += [mixed[0], mixed[2]]

    expected = {(item["customer"], item["id"]) for item in sent}
    eventually(lambda: len(ledger_keys(db)) == len(expected), "every event is in the ledger")
    eventually(lambda: quiet_status(db, LOCAL_NATS, namespace), "lag 0")

    # The same batch again (JetStream drops its messages), and the same events regrouped
    # into other messages (the ledger answers duplicate): nothing is added either way.
    with httpx.Client(base_url=replica_b, timeout=30) as client:
        again = post(client, keys["ingest"], batches[0])
        assert again.status_code == 202, again.text
        regrouped = post(client, keys["ingest"], list(reversed(heavy_events)))
        assert regrouped.status_code == 202, regrouped.text
    status = eventually(
        lambda: (
            (found := quiet_status(db, LOCAL_NATS, namespace))
            and found["workers"][0]["duplicates"] >= len(heavy_events)
            and found
        ),
        "the regrouped events come back to the worker as duplicates",
    )
    assert status["workers"][0]["duplicates"] == len(heavy_events), status["workers"]

    stored = ledger_keys(db)
    assert set(stored) == expected
    assert rows(db, _DUPLICATED) == []
    assert sum(stored.values()) == len(expected) == rows(db, "SELECT count(*) FROM events")[0][0]
    print(assert_verify_intact(db))
    print("records per partition:", assert_partition_chains(db))

    # Any replica answers access the same: the heavy customer is denied, the others not.
    def denied_on_both() -> bool:
        return all(
            access_of(url, keys["read"], heavy)["allowed"] is False
            for url in (replica_a, replica_b)
        )

    def answers(customer: str) -> list[dict[str, Any]]:
        return [
            {k: answer[k] for k in ("allowed", "reason", "policy", "remaining")}
            for answer in (access_of(url, keys["read"], customer) for url in (replica_a, replica_b))
        ]

    eventually(denied_on_both, f"{heavy} is denied on both replicas")
    eventually(
        lambda: all((pair := answers(c))[0] == pair[1] for c in (heavy, *light)),
        "both replicas give every customer the same answer",
    )
    for customer in (heavy, *light):
        assert answers(customer)[0]["allowed"] is (customer != heavy), customer
    assert access_of(replica_a, keys["read"], heavy)["policy"] == "empty"  # the control's key

    status = status_json(db, LOCAL_NATS, namespace)
    assert owned_by(status) == dict.fromkeys(range(PARTITIONS), worker_name)
    assert status["lag"] == 0
    assert status["ledger"]["head_sequence"] == len(expected)
    assert status["ledger"]["partitions"] == PARTITIONS
    assert [row["customer"] for row in status["blocked"]] == [heavy]
    assert status["blocked"][0]["policy"] == "empty"
    (worker,) = status["workers"]
    assert worker["alive"] and worker["events_applied"] == len(expected)
    assert worker["conflicts"] == worker["store_errors"] == 0

    for replica in (replica_a, replica_b):
        attempts = reconcile_until_agreed(db, replica, keys["read"])
        print(f"reconcile --url {replica}: agreed after {attempts} attempt(s)")
    assert fleet.alive() == [worker_name, f"api {replica_a}", f"api {replica_b}"]


# -- 2. a 3-node cluster: a worker killed, a node stopped -----------------------------------


@dataclass
class Producer:
    """Posts ``batches`` batches of ``size`` events, retrying each until acknowledged."""

    api: str
    key: str
    customers: list[str]
    batches: int
    size: int
    duration_s: float
    """The batches are spread over this long (a steady client, not a burst)."""
    deadline: float
    at: str = field(default_factory=usage_time)
    acknowledged: set[tuple[str, str]] = field(default_factory=set)
    attempted: set[tuple[str, str]] = field(default_factory=set)
    acknowledged_batches: int = 0
    retries: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    unacknowledged_batches: list[int] = field(default_factory=list)
    error: BaseException | None = None
    halted: threading.Event = field(default_factory=threading.Event)
    """Set by the test when it ends early: the producer stops at once."""

    def batch(self, number: int) -> list[dict[str, Any]]:
        count = len(self.customers)
        return [
            usage_event(
                self.customers[(number + position) % count],
                f"b{number}-e{position}",
                100 + position,
                self.at,
            )
            for position in range(self.size)
        ]

    def run(self) -> None:
        try:
            started = time.monotonic()
            with httpx.Client(base_url=self.api, timeout=15) as client:
                for number in range(self.batches):
                    if self.halted.is_set():
                        return
                    due = started + number * self.duration_s / self.batches
                    time.sleep(max(0.0, due - time.monotonic()))
                    self._send(client, number)
        except BaseException as error:  # surfaced by the test
            self.error = error

    def _send(self, client: httpx.Client, number: int) -> None:
        events = self.batch(number)
        keys = {(item["customer"], item["id"]) for item in events}
        self.attempted |= keys
        while True:
            try:
                answer = post(client, self.key, events)
            except httpx.TransportError as error:
                self.refused[type(error).__name__] += 1
            else:
                if answer.status_code == 202:
                    outcome = answer.json()
                    assert outcome["accepted"] == len(events), outcome
                    self.acknowledged |= keys
                    self.acknowledged_batches += 1
                    return
                assert answer.status_code == 503, answer.text
                assert answer.headers.get("retry-after"), answer.headers
                self.refused["503"] += 1
            if time.monotonic() > self.deadline or self.halted.is_set():
                self.unacknowledged_batches.append(number)
                return
            self.retries += 1
            time.sleep(0.2)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster; asked for before ``fleet``, so it outlives the workers
    and replicas (they stop while NATS is still there)."""
    with NatsCluster(tmp_path / "cluster") as started:
        yield started


def stream_leader(db: str, stream: str, namespace: str, cluster: NatsCluster) -> int:
    """The index of the node leading the events stream (from ``meterline status``)."""
    status = read_status(db, stream, namespace)
    leader = (status["stream"].get("cluster") or {}).get("leader")
    (index,) = [node.index for node in cluster.nodes if node.name == leader]
    return index


@pytest.mark.slow
def test_fault_cluster_worker_killed_and_node_stopped(
    postgres: Databases, cluster: NatsCluster, fleet: Fleet, tmp_path: Path
) -> None:
    customers = customers_by_partition(4, "cust")
    batches, size = 300, 200
    per_customer = batches * size // len(customers)  # the producer spreads them evenly
    early = customers[:3]  # blocked by ``empty`` in the first seconds, before the faults
    late = customers[3:5]  # blocked at ~80% of the run, after them: the mirror must follow
    late_pool = per_customer * 4 // 5
    pools = {
        customer: POOL if customer in early else late_pool if customer in late else LARGE_POOL
        for customer in customers
    }
    db = new_ledger(postgres, tmp_path, "fault", pools)
    keys = make_keys(db)
    namespace = "fault"
    stream = ",".join(cluster.urls)
    first = fleet.worker(db, stream, "0-1", "w-a", namespace, replicas=3)
    fleet.worker(db, stream, "2-3", "w-b", namespace, replicas=3)
    api = fleet.api(db, stream, namespace, replicas=3)
    eventually(lambda: quiet_status(db, stream, namespace), "the workers own the partitions")

    started = time.monotonic()
    producer = Producer(
        api,
        keys["ingest"],
        customers,
        batches=batches,
        size=size,
        duration_s=20.0,
        deadline=started + 120.0,
    )
    thread = threading.Thread(target=producer.run, name="producer", daemon=True)
    thread.start()
    timeline: list[str] = []

    def note(what: str) -> None:
        line = f"{time.monotonic() - started:6.1f}s {what}"
        timeline.append(line)
        print(line)

    try:
        eventually(lambda: producer.acknowledged_batches >= 60, "60 batches acknowledged")
        note(f"{producer.acknowledged_batches} batches acknowledged; SIGKILL worker w-a (0-1)")
        fleet.kill(first)
        time.sleep(1.0)
        leader = stream_leader(db, stream, namespace, cluster)
        note(f"stop NATS node {cluster.nodes[leader].name} (the stream leader)")
        cluster.stop(leader)
        time.sleep(3.0)
        note("restart worker w-a on partitions 0-1 (as a supervisor would)")
        fleet.worker(db, stream, "0-1", "w-a", namespace, replicas=3)

        thread.join(timeout=180.0)
    finally:
        producer.halted.set()  # a failure above: stop posting at once
        thread.join(timeout=30.0)
    assert not thread.is_alive(), "the producer did not finish"
    if producer.error is not None:
        raise producer.error
    note(
        f"producer done: {producer.acknowledged_batches} batches acknowledged,"
        f" {producer.retries} retries ({dict(producer.refused)})"
    )
    assert producer.acknowledged_batches == producer.batches, producer.unacknowledged_batches

    eventually(
        lambda: quiet_status(db, stream, namespace), "lag 0 on every partition", DRAIN_S, 1.0
    )
    note("lag 0")
    status = status_json(db, stream, namespace)
    stored = ledger_keys(db)
    duplicated = {key: count for key, count in stored.items() if count > 1}
    missing = producer.acknowledged - set(stored)
    unexpected = set(stored) - producer.attempted
    absorbed = sum(int(worker["duplicates"]) for worker in status["workers"])
    summary = {
        "acknowledged events": len(producer.acknowledged),
        "acknowledged batches": producer.acknowledged_batches,
        "retried posts": producer.retries,
        "refusals": dict(producer.refused),
        "stored events": sum(stored.values()),
        "stored, never acknowledged": len(set(stored) - producer.acknowledged),
        "duplicates absorbed by the workers": absorbed,
        "redelivered messages": sum(p.get("redelivered", 0) for p in status["partitions"]),
        "workers": {
            w["worker"]: {k: w[k] for k in ("partitions", "events_applied", "duplicates")}
            for w in status["workers"]
        },
        "stream": status["stream"],
    }
    print(json.dumps(summary, indent=2, default=str))
    print("\n".join(timeline))

    assert not duplicated, f"stored more than once: {list(duplicated)[:5]}"
    assert rows(db, _DUPLICATED) == []
    assert not missing, f"{len(missing)} acknowledged events missing: {sorted(missing)[:5]}"
    assert not unexpected, sorted(unexpected)[:5]
    assert len(producer.acknowledged) == producer.batches * producer.size

    assert owned_by(status) == {0: "w-a", 1: "w-a", 2: "w-b", 3: "w-b"}
    assert status["lag"] == 0 and status["stream"]["replicas"] == 3
    assert all(worker["alive"] for worker in status["workers"]), status["workers"]
    assert all(worker["conflicts"] == 0 for worker in status["workers"])
    assert sorted(row["customer"] for row in status["blocked"]) == sorted(early + late)
    assert status["ledger"]["head_sequence"] == sum(stored.values())

    print(assert_verify_intact(db))
    print("records per partition:", assert_partition_chains(db))
    attempts = reconcile_until_agreed(db, api, keys["read"])
    print(f"reconcile --url {api}: agreed after {attempts} attempt(s)")
    for customer in customers:  # the replica's mirror followed the blocks after the faults
        access = access_of(api, keys["read"], customer)
        if customer in early + late:
            assert access["allowed"] is False and access["policy"] == "empty", access
        else:
            assert access["allowed"] is True, access
    assert sorted(fleet.alive()) == sorted(["w-a", "w-b", f"api {api}"])

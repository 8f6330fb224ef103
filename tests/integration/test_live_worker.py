"""The live engine's worker process (``meterline.live.worker``) under faults, through a
real server (``test_live_http``'s launcher, on its shifted clock).

- SIGKILL the worker: the server starts another, which rebuilds from the ledger and the
  control records; a block recorded before the kill still denies, a crossing is never
  recorded twice, and events ingested while no worker ran are counted once it is back.
- SIGKILL the server: its worker sees the connection close and exits (no orphan keeps
  acting on the ledger).
- The worker's errors reach the API as the same kind (an override's 422 names its field).

Every wait polls a condition with a deadline; nothing waits a fixed time.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Location
from tests.integration.test_live_http import (
    POOL,
    LiveServer,
    access,
    acted_firings_of,
    calls,
    exhaust,
    firings_of,
    ingest,
    launch,
    wait_for,
)


@pytest.fixture
def server(new_db: Callable[..., Location], tmp_path: Path) -> Iterator[LiveServer]:
    running = launch(new_db("worker"), tmp_path)
    try:
        yield running
    finally:
        running.kill()


def status(server: LiveServer) -> dict[str, Any]:
    with server.client("read") as reader:
        response = reader.get("/v1/live")
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is not alive
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[1].split()[0] != "Z"


def test_the_engine_runs_in_a_worker_process_of_its_own(server: LiveServer) -> None:
    first = status(server)
    assert server.process is not None
    assert first["worker_pid"] not in (None, server.process.pid)
    assert alive(first["worker_pid"])
    assert first["worker_restarts"] == 0
    with server.client("read-acme") as bound:
        refused = bound.get("/v1/live")
    assert refused.status_code == 403


def test_a_killed_worker_is_replaced_and_nothing_is_lost_or_counted_twice(
    server: LiveServer,
) -> None:
    denied = exhaust(server, "acme")
    assert denied["policy"] == "empty"
    [firing] = acted_firings_of(server, "acme", "empty")
    worker = status(server)["worker_pid"]

    os.kill(worker, signal.SIGKILL)
    # while the worker is down (or restarting), ingest goes on: the ledger takes it
    ingest(server, calls("globex", POOL + 3))
    replaced = wait_for("a new worker", lambda: (s := status(server))["worker_restarts"] == 1 and s)
    assert replaced["worker_pid"] != worker and alive(replaced["worker_pid"])

    with server.client("read") as reader:
        # the block on record before the kill holds in the new worker
        assert access(reader, "acme")["allowed"] is False
        # the events ingested meanwhile were counted by the new worker: globex is blocked
        wait_for("globex denied", lambda: access(reader, "globex")["allowed"] is False)
        figures = reader.get("/v1/live/globex").json()
        assert figures["remaining"] == {"credits": "0"}
        assert {line["events"] for line in figures["lines"]} == {POOL + 3}
    # acme's crossing is on record once, not again by the new worker
    assert firings_of(server, "acme", "empty") == [firing]
    assert len(firings_of(server, "globex", "empty")) == 1


def test_a_killed_server_takes_its_worker_with_it(server: LiveServer) -> None:
    worker = status(server)["worker_pid"]
    server.kill()
    wait_for("the worker exited", lambda: not alive(worker))


def test_the_workers_errors_reach_the_api_as_the_same_kind(server: LiveServer) -> None:
    with server.client("admin") as admin:
        unknown = admin.post(
            "/v1/customers/acme/overrides",
            json={"kind": "unblock", "reason": "x", "policy": "no-such"},
        )
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["error"]["field"] == "policy"
        nobody = admin.post(
            "/v1/customers/nobody/overrides", json={"kind": "unblock", "reason": "x"}
        )
        assert nobody.status_code == 422, nobody.text
        assert nobody.json()["error"]["field"] == "customer"


def children_command_lines(pid: int) -> list[str]:
    """The command lines of ``pid``'s living child processes (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[1]) != pid or fields[0] == "Z":
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as line:
                found.append(line.read().replace(b"\0", b" ").decode())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def test_no_child_process_shows_the_store_on_its_command_line(
    new_db: Callable[..., Location], tmp_path: Path
) -> None:
    """The live worker and the bucket keeper get the store's location (a PostgreSQL URL
    may hold a password) on their connection, not as an argument every user of the
    machine can read; both run."""
    location = new_db("hidden")
    running = launch(location, tmp_path)
    try:
        assert running.process is not None
        status(running)  # the live worker is up
        lines = children_command_lines(running.process.pid)
        assert any("meterline.live.worker" in line for line in lines), lines
        assert any("meterline.billing.keeper_process" in line for line in lines), lines
        assert not [line for line in lines if str(location) in line]
    finally:
        running.kill()

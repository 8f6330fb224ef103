"""The TypeScript SDK (sdks/typescript) under Node against a real ``meterline serve``.

One server on a fixed clock with a customer its live engine blocked and the signed
``customer.blocked`` webhook it sent (``tests.support.blocked_server``). Then ``npm ci``,
``npm run build`` and ``node --test`` run the package's own tests (client, gate, webhook
signatures, the CommonJS build) against that server, and this side checks through the
API that every event the Node tests meant to store is stored exactly once, the resent
batch included. Node and npm are required: missing, the test fails saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.blocked_server import BLOCKED, EVENT_TIME, Served, blocked_server

pytestmark = pytest.mark.slow

PACKAGE = Path(__file__).resolve().parents[2] / "sdks" / "typescript"
NODE_TIMEOUT_S = 120


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """One SQLite ledger: these tests are of the client, which no store changes."""
    with blocked_server(tmp_path / "ledger.db") as running:
        yield running


def npm(arguments: list[str], environment: dict[str, str]) -> str:
    """Run ``npm ARGUMENTS`` in the package; its output, or a failure showing it."""
    found = shutil.which("npm")
    if found is None or shutil.which("node") is None:
        pytest.fail("node and npm are needed for the TypeScript SDK tests (Node 20 or later)")
    done = subprocess.run(
        [found, *arguments],
        cwd=PACKAGE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"npm {' '.join(arguments)} failed:\n{output}"
    return output


@pytest.fixture(scope="module")
def built() -> None:
    """``npm ci`` and ``npm run build``, once for both stores' runs."""
    npm(["ci", "--no-progress"], quiet_npm())
    npm(["run", "build"], quiet_npm())


def quiet_npm() -> dict[str, str]:
    """This process's environment, with npm's notices (funding, audit, updates) off."""
    return {
        **os.environ,
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        "npm_config_update_notifier": "false",
    }


def stored_ids(served: Served, prefix: str) -> Counter[str]:
    """How many times each stored event id starting with ``prefix`` appears."""
    counts: Counter[str] = Counter()
    after = 0
    with served.client("read") as reader:
        while True:
            page = reader.get("/v1/events", params={"limit": 1000, "after": after}).json()
            counts.update(e["id"] for e in page["events"] if e["id"].startswith(prefix))
            if page["next_after"] is None:
                return counts
            after = page["next_after"]


def test_the_typescript_sdk_under_node_against_a_running_server(
    built: None, served: Served, tmp_path: Path
) -> None:
    """npm ci, build and node --test pass against the server; every event is stored once."""
    webhook_file = tmp_path / "webhook.json"
    webhook_file.write_text(json.dumps(served.webhook))
    run = f"ts-{uuid.uuid4().hex[:8]}"
    environment = {
        **quiet_npm(),
        "METERLINE_URL": served.url,
        "METERLINE_INGEST_KEY": served.keys["ingest"],
        "METERLINE_ADMIN_KEY": served.keys["admin"],
        "METERLINE_RUN": run,
        "METERLINE_EVENT_TIME": EVENT_TIME,
        "METERLINE_BLOCKED_CUSTOMER": BLOCKED,
        "METERLINE_WEBHOOK_FILE": str(webhook_file),
    }
    output = npm(["test"], environment)
    for line in ("# fail 0", "# cancelled 0", "# skipped 0"):
        assert line in output, output
    assert "# pass 0" not in output, output

    counts = stored_ids(served, run)
    expected = {f"{run}-plain-{n}" for n in range(25)} | {f"{run}-retried-{n}" for n in range(5)}
    expected |= {f"{run}-good", f"{run}-conflict"}
    assert set(counts) == expected, sorted(set(counts) ^ expected)
    assert set(counts.values()) == {1}, counts
    # the conflicting resend left the first content in place
    with served.client("read") as reader:
        page = reader.get("/v1/events", params={"limit": 1000}).json()
    first = next(e for e in page["events"] if e["id"] == f"{run}-conflict")
    assert first["properties"]["input_tokens"] == 1001

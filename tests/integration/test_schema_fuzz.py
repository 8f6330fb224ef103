"""Schemathesis over ``/openapi.json``: every operation, with schema-valid and invalid
input, answers as the document says, and never with a 5xx.

The app runs in this process (ASGI, no sockets) over a SQLite ledger on the fixed clock
(2026-11-23T12:00Z) holding a slice of the demo month under the demo pricing, with
October closed (invoices, lines and events behind them exist; the document's path
examples name them), the live engine and the webhook dispatcher (whose deliveries go to
an in-memory transport, never the network). Each test gets a fresh copy of that ledger:
Schemathesis ends an app's lifespan with the test that started it. ``POST /v1/pricing``
runs against an app of its own, since a fuzzed file that validates retires everything it
omits. The access stream is read up to its first event (``max-stream-events``).

The run is bounded and repeatable: a fixed seed, ``derandomize``, no example database;
the examples, coverage (boundary values, missing parameters, wrong methods) and fuzzing
phases, with ``EXAMPLES_PER_OPERATION`` fuzzed cases per operation for the admin key
(the broadest coverage) and ``EXAMPLES_PER_OTHER_SCOPE`` for each of the read, ingest and
customer-bound keys; about 6,100 requests, 1.5 to 2 minutes on two busy cores. Every
check of Schemathesis's ``all`` is on (``EXCLUDED_CHECKS`` is empty): those that judge a
sequence of calls (``use_after_free``, ``ensure_resource_availability``,
``object_level_authorization``) have nothing to judge outside the stateful phase, which
the pytest integration does not run (the document declares no links to drive it). Two
checks are told what this API answers on purpose (``ACCEPTED_VALID``,
``INGEST_ACCEPTED_VALID``, ``INGEST_REFUSED_INVALID``); unknown query parameters are
ignored by design, so Schemathesis does not add them as invalid input.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.core.failures import FailureGroup

from meterline.api import create_app
from meterline.billing.service import Billing
from meterline.core.events import timestamp_to_us
from meterline.demo.workload import generate_month
from meterline.keys import create_key
from meterline.ledger import Ledger, open_ledger
from meterline.ledger.billing_records import BillingStore
from meterline.live.webhook_service import Webhooks
from tests.conftest import FIXED_NOW_US

pytestmark = pytest.mark.slow

SEED = 16
EXAMPLES_PER_OPERATION = 60
EXAMPLES_PER_OTHER_SCOPE = 10
OTHER_SCOPES = ("read", "ingest", "read-bound")
DEMO_SCALE = 0.02
PRICING = files("meterline.demo").joinpath("pricing.yaml").read_text()
OCTOBER_END_US = timestamp_to_us(datetime(2026, 11, 1, tzinfo=UTC))

EXCLUDED_CHECKS: dict[str, str] = {}
"""Checks of ``all`` left out, and why (``max_response_time`` is off unless given a limit:
timing on two shared cores is not a property of the API)."""

ACCEPTED_VALID: list[int | str] = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx", "422"]
"""What ``positive_data_acceptance`` accepts for schema-valid input: its defaults (``5xx``
is ``not_a_server_error``'s to judge) and 422, this API's answer to a request that
is well formed but breaks a rule no schema can state (an unknown credit type, a pricing
file that does not validate, an adjustment of zero)."""
INGEST_ACCEPTED_VALID = [*ACCEPTED_VALID, "400"]
"""``POST /v1/events`` answers 400 with per-event outcomes when every event of a valid
batch was rejected (a timestamp past the clock-skew limit, say): docs/api.md."""
INGEST_PATHS = ("/v1/events", "/v1/traces", "/api/v1/events")
"""The ingest operations: a schema-valid body may still hold events (or spans) refused by
rules no schema states, answered 400 (OTLP: a wrong shape deep in the export request)."""
INGEST_REFUSED_INVALID: list[int | str] = [
    *("400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"),
    "413",
]
"""What ``negative_data_rejection`` accepts for invalid input to ``POST /v1/events``: its
defaults (``5xx`` is ``not_a_server_error``'s to judge) and 413, the answer to a batch over
10,000 events (the schema's ``maxItems``), as to one over 16 MiB."""


def _delivered(_: httpx.Request) -> httpx.Response:
    return httpx.Response(204)


def _offline_client(self: Webhooks) -> httpx.Client:
    """Webhook deliveries answered in memory: a fuzzed endpoint URL is never dialed."""
    return httpx.Client(transport=httpx.MockTransport(_delivered), timeout=self.policy.timeout_s)


def _config() -> schemathesis.Config:
    checks: dict[str, Any] = {
        "enabled": True,
        "positive_data_acceptance": {"expected-statuses": ACCEPTED_VALID},
    }
    for name in EXCLUDED_CHECKS:
        checks[name] = {"enabled": False}
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "deterministic": True,
                "database": "none",
                "mode": "all",
                # unknown query parameters are ignored, as documented: not a violation
                "allow-extra-parameters": False,
            },
            "checks": checks,
            "max-stream-events": 1,  # the access stream's snapshot; its next event waits 5 s
            "operations": [
                {
                    "include-path": path,
                    "include-method": "POST",
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": INGEST_ACCEPTED_VALID},
                        "negative_data_rejection": {"expected-statuses": INGEST_REFUSED_INVALID},
                    },
                }
                for path in INGEST_PATHS
            ],
        }
    )


def _call_and_validate(case: Any, key: str) -> None:
    """Send ``case`` with ``key`` and run every check: any failure fails the test."""
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"})


def _keys(ledger: Ledger) -> dict[str, str]:
    keys = {
        scope: create_key(ledger.store, scope, FIXED_NOW_US, name=scope)[1]
        for scope in ("ingest", "read", "admin")
    }
    keys["read-bound"] = create_key(ledger.store, "read", FIXED_NOW_US, customer="acme-copilot")[1]
    return keys


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A SQLite ledger file holding a slice of the demo month under the demo pricing,
    October closed; and one key per scope. Built once, copied for each app."""
    db = tmp_path_factory.mktemp("fuzz-seed") / "ledger.db"
    ledger = open_ledger(db, clock=lambda: FIXED_NOW_US)
    try:
        keys = _keys(ledger)
        outcome = ledger.ingest(generate_month(scale=DEMO_SCALE))
        assert outcome.accepted and not outcome.rejected
        billing = Billing(ledger, BillingStore(ledger.store.path), clock=ledger.clock)
        billing.apply(PRICING)
        assert billing.close(OCTOBER_END_US)
        billing.store.close()
    finally:
        ledger.close()
    return db, keys


def _app_over_copy(
    seeded: tuple[Path, dict[str, str]], folder: Path, live: bool
) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    """An app over a fresh copy of the seeded ledger (Schemathesis runs and ends an app's
    lifespan once per test, and an app does not start again)."""
    source, keys = seeded
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", folder / f"ledger.db{suffix}")
    ledger = open_ledger(folder / "ledger.db", clock=lambda: FIXED_NOW_US)
    try:
        yield create_app(ledger, live=live), keys
    finally:
        ledger.close()


@pytest.fixture
def fuzz_app(
    seeded: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    """The whole app (live engine, webhooks) over a copy of the seeded ledger."""
    monkeypatch.setattr(Webhooks, "client", _offline_client)
    yield from _app_over_copy(seeded, tmp_path, live=True)


@pytest.fixture
def pricing_app(
    seeded: tuple[Path, dict[str, str]], tmp_path: Path
) -> Iterator[tuple[FastAPI, dict[str, str]]]:
    """An app of its own for ``POST /v1/pricing``: a fuzzed file that validates retires
    every meter, plan and contract it omits, which would leave the other runs' ledger bare."""
    yield from _app_over_copy(seeded, tmp_path, live=False)


@pytest.fixture
def api_schema(fuzz_app: tuple[FastAPI, dict[str, str]]) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app[0], config=_config())


@pytest.fixture
def pricing_api_schema(pricing_app: tuple[FastAPI, dict[str, str]]) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", pricing_app[0], config=_config())


@pytest.fixture
def keys(fuzz_app: tuple[FastAPI, dict[str, str]]) -> dict[str, str]:
    return fuzz_app[1]


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path="/v1/pricing", method="POST")
pricing_schema = schemathesis.pytest.from_fixture("pricing_api_schema").include(
    path="/v1/pricing", method="POST"
)


def _bounded(examples: int) -> Any:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


@schema.parametrize()
@_bounded(EXAMPLES_PER_OPERATION)
def test_admin_key_gets_only_documented_answers(case: Any, keys: dict[str, str]) -> None:
    """With an admin key, every operation answers as documented and never 5xx."""
    _call_and_validate(case, keys["admin"])


@schema.parametrize()
@_bounded(EXAMPLES_PER_OTHER_SCOPE)
def test_other_scopes_get_only_documented_answers(case: Any, keys: dict[str, str]) -> None:
    """With a read, ingest or customer-bound key, answers stay documented and never 5xx."""
    for scope in OTHER_SCOPES:
        try:
            _call_and_validate(case, keys[scope])
        except FailureGroup as failures:
            failures.add_note(f"(sent with the {scope} key)")
            raise


@pricing_schema.parametrize()
@_bounded(EXAMPLES_PER_OPERATION)
def test_pricing_files_get_only_documented_answers(
    case: Any, pricing_app: tuple[FastAPI, dict[str, str]]
) -> None:
    """POST /v1/pricing with fuzzed files and parameters answers as documented, never 5xx."""
    _call_and_validate(case, pricing_app[1]["admin"])


def test_cloudevent_datacontenttype_not_text_is_refused(
    fuzz_app: tuple[FastAPI, dict[str, str]],
) -> None:
    """A CloudEvent whose datacontenttype is not a string is refused per event, not a 500."""
    app, keys = fuzz_app
    envelope = {
        "specversion": "1.0",
        "id": "ce-datacontenttype",
        "source": "/fuzz",
        "type": "llm.completion",
        "subject": "acme-copilot",
        "time": "2026-11-01T10:00:00Z",
        "datacontenttype": {},
        "data": {},
    }
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(
            "/v1/events",
            json=envelope,
            headers={
                "Authorization": f"Bearer {keys['admin']}",
                "Content-Type": "application/cloudevents+json",
            },
        )
    assert response.status_code == 400, response.text

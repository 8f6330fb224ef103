"""The server's composition (``meterline.api.services``) and its one error handler
(``meterline.api.failures.meterline_error``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from meterline.api.failures import UnexpectedErrors, meterline_error
from meterline.api.services import open_services
from meterline.billing.errors import NotFound, RatingFailed
from meterline.errors import MalformedJSON, MeterlineError, StoreError
from meterline.ledger.event_ledger import open_ledger
from meterline.live.link import WorkerUnavailable


def test_embedded_mode_opens_billing_alone_and_closes_what_it_opened(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "ledger.db")
    try:
        services = open_services(ledger, live=False)
        assert services.live is None and services.stream is None
        assert services.webhooks is None and services.dispatcher is None
        assert services.owns_billing
        assert services.billing.ledger is ledger
        asyncio.run(services.start())
        asyncio.run(services.stop())
    finally:
        ledger.close()


def _raising(error: Exception) -> TestClient:
    app = FastAPI()
    app.add_middleware(UnexpectedErrors)
    app.add_exception_handler(MeterlineError, meterline_error)

    @app.get("/")
    async def fail() -> None:
        raise error

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("error", "status", "code", "extra"),
    [
        (NotFound("no invoice 'x'"), 404, "not_found", {}),
        (RatingFailed("acme", "too large"), 409, "billing_conflict", {}),
        (MalformedJSON("bad", 7), 400, "malformed_json", {"position": 7}),
        (WorkerUnavailable("starting"), 503, "live_unavailable", {}),
    ],
)
def test_meterline_errors_answer_with_their_code_and_status(
    error: Exception, status: int, code: str, extra: dict[str, object]
) -> None:
    answer = _raising(error).get("/")
    assert answer.status_code == status
    body = answer.json()["error"]
    assert body["code"] == code
    assert body["message"] == str(error)
    for name, value in extra.items():
        assert body[name] == value
    if isinstance(error, WorkerUnavailable):
        assert answer.headers["Retry-After"] == "1"


def test_an_error_the_api_does_not_answer_for_is_unexpected() -> None:
    answer = _raising(StoreError("disk on fire")).get("/")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error"
    assert "disk on fire" not in answer.text

"""The LiteLLM callback against a local OpenAI-compatible server and a real meterline server.

The upstream is a tiny Starlette app on loopback answering ``/v1/chat/completions`` with
usage, counting the requests it gets. The meterline server has a customer its live
engine blocked (``tests.support.blocked_server``); the callback's gate follows that
server's push stream and its client sends to it, so what is metered is read back from
the ledger.

The first test drives the callback's hook methods as LiteLLM calls them, with the
keyword arguments LiteLLM passes, in this process. The second goes through
``litellm.acompletion`` itself: LiteLLM is an optional extra, not a test dependency
(docs/litellm.md), so it runs ``tests/support/litellm_acompletion.py`` on the interpreter
of a cached venv with LiteLLM (``tests.support.client_venvs``), against the same servers.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from meterline.clock import system_clock_us
from meterline.integrations.litellm import CustomerBlocked, CustomerMissing, MeterlineCallback
from meterline.sdk import Client, Gate
from tests.conftest import clock_now_us
from tests.support.blocked_server import BLOCKED, NOW, Served, blocked_server
from tests.support.client_venvs import (
    BUILD_TIMEOUT_S,
    LITELLM,
    REPOSITORY,
    exchange,
    running_on,
)
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

PROMPT_TOKENS = 12
COMPLETION_TOKENS = 5
_EXACT = msgspec.json.Decoder(float_hook=Decimal)


class Upstream:
    """An OpenAI-compatible ``/v1/chat/completions`` on loopback that counts requests."""

    def __init__(self) -> None:
        self.requests = 0
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/v1"
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the upstream did not start"
            time.sleep(0.01)

    async def _chat(self, request: Request) -> JSONResponse:
        self.requests += 1
        body = await request.json()
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": 1_790_000_000,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hello"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                },
            }
        )

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def litellm_acompletion() -> Iterator[subprocess.Popen[str]]:
    """``litellm_acompletion.py`` started on the LiteLLM venv, LiteLLM imported, waiting
    for its one JSON line on standard input (see that script)."""
    with running_on(LITELLM, REPOSITORY / "tests" / "support" / "litellm_acompletion.py") as script:
        yield script


@dataclass
class Setup:
    served: Served
    upstream: Upstream
    client: Client
    gate: Gate
    callback: MeterlineCallback


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One server for the module, on a SQLite ledger: these tests are of the callback,
    which no store changes; each test meters customers of its own."""
    upstream = Upstream()
    try:
        with blocked_server(tmp_path_factory.mktemp("litellm") / "ledger.db") as served:
            client = Client(served.url, served.keys["ingest"], flush_interval_s=0.05)
            gate = Gate(served.url, served.keys["ingest"]).start(wait_s=10)
            assert gate.status == "live", gate.last_error
            offset_us = clock_now_us(NOW) - system_clock_us()  # the server's clock
            callback = MeterlineCallback(client, gate, clock_offset_us=offset_us)
            try:
                yield Setup(served, upstream, client, gate, callback)
            finally:
                gate.close()
                client.close()
    finally:
        upstream.close()


def stored(served: Served, event_id: str) -> list[dict[str, Any]]:
    """The stored events with this id (numbers exact)."""
    with served.client("read") as reader:
        page = _EXACT.decode(reader.get("/v1/events", params={"limit": 1000}).content)
    return [event for event in page["events"] if event["id"] == event_id]


def call_upstream(upstream: Upstream, model: str) -> dict[str, Any]:
    """What LiteLLM would do once the pre-call hooks let a call through."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{upstream.url}/chat/completions", json=body, timeout=10)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_the_hooks_gate_before_the_call_and_meter_after_it(setup: Setup) -> None:
    """A blocked customer is refused by both pre-call hooks before the upstream is asked;
    an allowed call's tokens and cost land in the ledger once, keyed by the call id."""
    callback, upstream, report = setup.callback, setup.upstream, setup.client.report
    requests, accepted, duplicate = upstream.requests, report.accepted, report.duplicate
    blocked_call = {"model": "openai/gpt-4o-mini", "metadata": {"meterline_customer": BLOCKED}}
    with pytest.raises(CustomerBlocked) as refused:
        asyncio.run(callback.async_pre_call_deployment_hook(dict(blocked_call), "acompletion"))
    assert refused.value.customer == BLOCKED and refused.value.status_code == 403
    assert "balance_exhausted" in refused.value.reason
    proxy_key = SimpleNamespace(end_user_id=BLOCKED)
    with pytest.raises(CustomerBlocked):
        asyncio.run(
            callback.async_pre_call_hook(proxy_key, None, {"model": "gpt-4o"}, "completion")
        )
    with pytest.raises(CustomerMissing, match="meterline_customer"):
        asyncio.run(callback.async_pre_call_deployment_hook({"model": "gpt-4o"}, "completion"))
    assert upstream.requests == requests

    allowed_call: dict[str, Any] = {"model": "openai/gpt-4o-mini", "user": "lite-acme"}
    assert asyncio.run(callback.async_pre_call_deployment_hook(allowed_call, "acompletion")) is None
    response = call_upstream(upstream, "gpt-4o-mini")
    call_id = str(uuid.uuid4())
    logged = {
        "model": "gpt-4o-mini",
        "litellm_call_id": call_id,
        "response_cost": 1.23e-05,
        "optional_params": {"user": "lite-acme"},
        "litellm_params": {"custom_llm_provider": "openai", "metadata": {}},
    }
    ended = datetime.now(UTC)
    asyncio.run(callback.async_log_success_event(logged, response, None, ended))
    callback.log_success_event(logged, response, None, ended)  # run twice: one event
    assert setup.client.flush(timeout_s=20)
    assert (report.accepted, report.duplicate) == (accepted + 1, duplicate + 1)
    [event] = stored(setup.served, f"litellm-{call_id}")
    assert event["customer"] == "lite-acme" and event["type"] == "llm.completion"
    assert event["properties"] == {
        "model": "gpt-4o-mini",
        "input_tokens": PROMPT_TOKENS,
        "output_tokens": COMPLETION_TOKENS,
        "provider": "openai",
        "provider_cost": "0.0000123",
    }
    assert upstream.requests == requests + 1


# The first run on a machine builds the LiteLLM venv (about two minutes) before the test.
@pytest.mark.timeout(2 * BUILD_TIMEOUT_S)
def test_through_litellm_acompletion(
    litellm_acompletion: subprocess.Popen[str],
    setup: Setup,
) -> None:
    """Through LiteLLM itself: a blocked customer refused, the upstream unasked; an allowed
    call metered once, tokens and LiteLLM's cost exact, under its LiteLLM call id."""
    upstream, served = setup.upstream, setup.served
    requests = upstream.requests
    offset_us = clock_now_us(NOW) - system_clock_us()  # the server's clock
    call = {
        "url": served.url,
        "ingest_key": served.keys["ingest"],
        "upstream_url": upstream.url,
        "clock_offset_us": offset_us,
        "blocked": BLOCKED,
        "allowed": "lite-globex",
    }
    seen = exchange(litellm_acompletion, call)
    assert seen["meterline_file"] == str(REPOSITORY / "src" / "meterline" / "__init__.py")
    assert seen["callback_is_custom_logger"] and seen["gate_status"] == "live"
    assert seen["blocked"]["raised"] == "meterline.integrations.litellm.CustomerBlocked"
    assert (seen["blocked"]["customer"], seen["blocked"]["status_code"]) == (BLOCKED, 403)
    assert "balance_exhausted" in seen["blocked"]["reason"]
    # One request in all: the allowed call's; the blocked one never left.
    assert upstream.requests == requests + 1
    allowed = seen["allowed"]
    assert allowed["usage"] == [PROMPT_TOKENS, COMPLETION_TOKENS]
    assert seen["flushed"] and seen["report"] == {
        "accepted": 1,
        "duplicate": 0,
        "rejected": 0,
        "undelivered": 0,
    }
    [event] = stored(served, f"litellm-{allowed['litellm_call_id']}")
    assert event["customer"] == "lite-globex" and event["type"] == "llm.completion"
    cost = Decimal(allowed["response_cost"])
    assert cost > 0
    assert event["properties"] == {
        "model": "gpt-4o-mini",
        "input_tokens": PROMPT_TOKENS,
        "output_tokens": COMPLETION_TOKENS,
        "provider": "openai",
        "provider_cost": format(cost, "f"),
    }

"""Two calls through ``litellm.acompletion`` with ``MeterlineCallback``, run on the LiteLLM venv.

Run by tests/integration/test_litellm_callback.py on the interpreter of the venv
``tests.support.client_venvs.LITELLM`` (LiteLLM is not installed beside the tests). Once
LiteLLM is imported it prints ``ready`` (exiting 3 instead if the import fails), then reads one JSON
line on standard input (the meterline server's URL and ingest key, the upstream's
URL, the server's clock offset, the blocked and the allowed customer), registers a
callback on its own ``Client`` and ``Gate``, makes a blocked customer's call and then an
allowed one, waits until the allowed call is tracked and delivered, and prints what it
saw as one JSON object on standard output. The test asserts on it and on the ledger.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from importlib.metadata import version
from typing import Any

try:
    import litellm
    from litellm.integrations.custom_logger import CustomLogger
except Exception:  # a venv whose LiteLLM does not import: the test rebuilds it
    traceback.print_exc()
    sys.exit(3)  # tests.support.client_venvs.IMPORT_FAILED_EXIT

import meterline
from meterline.integrations.litellm import MeterlineCallback
from meterline.sdk import Client, Gate

DELIVERED_WAIT_S = 20.0


async def two_calls(setup: dict[str, Any], client: Client) -> dict[str, Any]:
    """The blocked call (what it raised), then the allowed one (its answer), waiting until
    LiteLLM's background success callback has tracked it and the client delivered it."""
    messages = [{"role": "user", "content": "hi"}]
    options = {"api_base": setup["upstream_url"], "api_key": "sk-local", "num_retries": 0}
    outcome: dict[str, Any] = {}
    try:
        await litellm.acompletion(
            model="openai/gpt-4o-mini", messages=messages, user=setup["blocked"], **options
        )
        outcome["blocked"] = {"raised": None}
    except Exception as error:  # reported, for the test to assert on
        outcome["blocked"] = {
            "raised": f"{type(error).__module__}.{type(error).__qualname__}",
            "customer": getattr(error, "customer", None),
            "status_code": getattr(error, "status_code", None),
            "reason": getattr(error, "reason", None),
        }
    report = client.report
    answered = report.accepted + report.duplicate
    answer = await litellm.acompletion(
        model="openai/gpt-4o-mini",
        messages=messages,
        metadata={"meterline_customer": setup["allowed"]},
        **options,
    )
    deadline = time.monotonic() + DELIVERED_WAIT_S
    while report.accepted + report.duplicate == answered and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        client.flush(timeout_s=0.01)
    hidden = answer._hidden_params
    outcome["allowed"] = {
        "usage": [answer.usage.prompt_tokens, answer.usage.completion_tokens],
        "response_cost": repr(hidden.get("response_cost")),
        "litellm_call_id": hidden.get("litellm_call_id"),
    }
    return outcome


def main() -> None:
    print("ready", flush=True)
    setup = json.loads(sys.stdin.readline())
    client = Client(setup["url"], setup["ingest_key"], flush_interval_s=0.05)
    gate = Gate(setup["url"], setup["ingest_key"]).start(wait_s=10)
    callback = MeterlineCallback(client, gate, clock_offset_us=setup["clock_offset_us"])
    litellm.callbacks = [callback]
    try:
        outcome = asyncio.run(two_calls(setup, client))
        outcome["flushed"] = client.flush(timeout_s=DELIVERED_WAIT_S)
    finally:
        gate_status = gate.status
        gate.close()
        report = client.close()
    outcome.update(
        litellm_version=version("litellm"),
        meterline_file=meterline.__file__,
        callback_is_custom_logger=isinstance(callback, CustomLogger),
        gate_status=gate_status,
        report={
            "accepted": report.accepted,
            "duplicate": report.duplicate,
            "rejected": report.rejected,
            "undelivered": report.undelivered,
        },
    )
    json.dump(outcome, sys.stdout)


if __name__ == "__main__":
    main()

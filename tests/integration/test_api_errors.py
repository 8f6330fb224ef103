"""Bad input is a 4xx in the one error shape, never a 5xx; an unexpected error is one JSON
log line and a 500 in that shape (issue 16). On both stores.

The app runs in this process over each store (``create_app`` without the live engine)
for the answers; the log line is read from a real server process's stderr, whose app
has one route added that fails the way a bug would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from meterline.api import create_app
from meterline.api.bodies import JSON_NESTING_LEVELS_MAX
from meterline.api.server import wait_for_health
from meterline.keys import create_key
from meterline.ledger import Ledger
from meterline.ledger.store import SEQUENCE_MAX
from tests.conftest import FIXED_NOW_US, Location, event
from tests.support.ports import free_port

JSON = {"content-type": "application/json"}


@pytest.fixture
def client(ledger: Ledger) -> Iterator[TestClient]:
    """The API over this run's store, with an admin key, and one event stored."""
    key = create_key(ledger.store, "admin", FIXED_NOW_US)[1]
    app = create_app(ledger, live=False)
    with TestClient(
        app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        assert http.post("/v1/events", json=event(1)).status_code == 200
        yield http


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error object of ``response``, checked to be ``status`` with ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str)
    return dict(body["error"])


def nested(levels: int, inner: bytes = b"1") -> bytes:
    """``levels`` arrays, one inside the other, around ``inner``."""
    return b"[" * levels + inner + b"]" * levels


# -- integer parameters ---------------------------------------------------------------------


def test_after_at_the_largest_sequence_is_an_empty_last_page(client: TestClient) -> None:
    """after=2**63-1 (the largest sequence either store holds) is an empty, final page."""
    response = client.get("/v1/events", params={"after": SEQUENCE_MAX})
    assert response.status_code == 200, response.text
    assert response.json() == {"events": [], "next_after": None}


@pytest.mark.parametrize("after", [SEQUENCE_MAX + 1, 10**30, -1])
def test_after_out_of_range_is_400_naming_it(client: TestClient, after: int) -> None:
    """A cursor past 2**63-1 (or negative) is 400 invalid_parameter naming `after`."""
    error = error_of(client.get("/v1/events", params={"after": after}), 400, "invalid_parameter")
    assert error["field"] == "after"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/invoices/INV-000001/lines/0/events", "n"),
        ("/v1/invoices/INV-000001/lines/99999999999999999999/events", "n"),
        ("/v1/invoices/INV-000001/lines/1/events?after_sequence=9223372036854775808", None),
        ("/v1/invoices/INV-000001/lines/1000001/events/e/proof", "n"),
    ],
)
def test_line_numbers_and_cursors_out_of_range_are_400(
    client: TestClient, path: str, field: str | None
) -> None:
    """Line numbers outside 1..1,000,000 and cursors past 2**63-1 are 400, not 404 or 500."""
    error = error_of(client.get(path), 400, "invalid_parameter")
    assert error["field"] == (field or "after_sequence")


# -- JSON nesting ---------------------------------------------------------------------------


def test_a_thousand_nested_arrays_are_400_naming_the_limit(client: TestClient) -> None:
    """1,000 nested arrays (a RecursionError once) are 400 nesting_too_deep naming the limit."""
    response = client.post("/v1/events", content=nested(1000), headers=JSON)
    error = error_of(response, 400, "nesting_too_deep")
    assert "1000 levels" in error["message"]
    assert f"the limit is {JSON_NESTING_LEVELS_MAX}" in error["message"]
    assert "JSON_NESTING_LEVELS_MAX" in error["message"]


def test_the_limit_is_inclusive(client: TestClient) -> None:
    """A body nested exactly JSON_NESTING_LEVELS_MAX deep is decoded (and its one event
    judged on its own: not an object); one level more is refused whole."""
    at_limit = client.post("/v1/events", content=nested(JSON_NESTING_LEVELS_MAX), headers=JSON)
    assert at_limit.status_code == 400, at_limit.text
    [result] = at_limit.json()["results"]
    assert result["errors"] == [{"field": "event", "reason": "must be a JSON object, got list"}]
    over = client.post("/v1/events", content=nested(JSON_NESTING_LEVELS_MAX + 1), headers=JSON)
    error_of(over, 400, "nesting_too_deep")


def test_brackets_inside_strings_do_not_count(client: TestClient) -> None:
    """Brackets in strings (escaped quotes and backslashes too) are text, not nesting."""
    text = '\\"' + "[" * 200 + '\\\\"'
    properties = {"note": text, "more": "{" * 500}
    response = client.post("/v1/events", json=event(4, properties=properties))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/customers/acme/credits", b'{"reason": ' + nested(1000) + b"}"),
        ("/v1/invoices/INV-000001/credit-notes", nested(1000)),
        ("/v1/events", b'{"properties": ' + nested(5000, b"") + b"}"),
    ],
)
def test_every_json_body_is_bounded(client: TestClient, path: str, body: bytes) -> None:
    """Grants, credit notes and events alike refuse deep nesting with the same 400."""
    error_of(client.post(path, content=body, headers=JSON), 400, "nesting_too_deep")


# -- instants, amounts, YAML, NUL ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/customers/acme/invoices/draft?at=9999-12-31T23:59:59Z", "at"),
        ("/v1/customers/acme/invoices/draft?at=0001-01-01T00:00:00%2B14:00", "at"),
        ("/v1/customers/acme/credits?as_of=9999-12-31T23:59:59-23:59", "as_of"),
        ("/v1/events?start=1969-12-31T23:59:59Z", "start"),
        ("/v1/events?end=9000-01-01T00:00:00Z", "end"),
    ],
)
def test_instants_outside_the_range_are_400(client: TestClient, path: str, field: str) -> None:
    """Instants before 1970 or from the year 9000 on (a period computed around them would
    leave the calendar: 500 once) are 400 invalid_parameter naming the parameter."""
    error = error_of(client.get(path), 400, "invalid_parameter")
    assert error["field"] == field
    assert "1970-01-01T00:00:00Z" in error["message"]


def test_the_instant_range_bounds_are_accepted(client: TestClient) -> None:
    """The first instant of the range and the last microsecond before its end are fine."""
    for moment in ("1970-01-01T00:00:00Z", "8999-12-31T23:59:59.999999Z"):
        response = client.get("/v1/events", params={"start": moment})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "amount",
    ["1" * 19, "0." + "0" * 12 + "1", "1e3", " 5", "5.", "NaN", "-" + "9" * 70],
)
def test_amounts_past_the_digits_are_400_before_they_reach_the_books(
    client: TestClient, amount: str
) -> None:
    """An amount longer than 18 digits before the point or 12 after (stored once, it made
    every later balance of its customer a 500), or not a plain decimal, is 400 naming it."""
    grant = {"credit_type": "credits", "amount": amount, "reason": "too long"}
    error = error_of(client.post("/v1/customers/acme/credits", json=grant), 400, "invalid_input")
    assert error["field"] == "amount"
    adjustment = {"amount": amount, "reason": "too long"}
    path = "/v1/customers/acme/credits/G-000001/adjustments"
    assert error_of(client.post(path, json=adjustment), 400, "invalid_input")["field"] == "amount"


@pytest.mark.parametrize(
    "text",
    ["[" * 3000, "a:\n" + "".join(" " * depth + f"k{depth}:\n" for depth in range(1, 700))],
    ids=["flow", "block"],
)
def test_deep_yaml_is_400_naming_the_limit(client: TestClient, text: str) -> None:
    """A pricing file nested deeper than YAML_NESTING_LEVELS_MAX (flow or block style; a
    RecursionError once) is 400 nesting_too_deep, dry run or not."""
    for dry_run in ("true", "false"):
        response = client.post(
            f"/v1/pricing?dry_run={dry_run}",
            content=text.encode(),
            headers={"content-type": "application/yaml"},
        )
        error = error_of(response, 400, "nesting_too_deep")
        assert "YAML_NESTING_LEVELS_MAX" in error["message"]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/events?customer=a%00b", "customer"),
        ("/v1/events?type=%00", "type"),
        ("/v1/invoices/INV%00", "invoice_id"),
        ("/v1/customers/a%00/invoices", "customer"),
        ("/v1/invoices/INV-000001/lines/1/events/e%00/proof", "event_id"),
    ],
)
def test_nul_in_a_parameter_is_400(client: TestClient, path: str, field: str) -> None:
    """NUL in a path or query parameter (PostgreSQL cannot compare text with it: 500
    once) is 400 invalid_parameter naming the parameter, on either store."""
    error = error_of(client.get(path), 400, "invalid_parameter")
    assert error["field"] == field


def test_nul_in_a_json_body_is_400_naming_the_field(client: TestClient) -> None:
    """NUL in the text of a grant, an adjustment or a credit note is 400 naming the field."""
    grant = {"credit_type": "credits", "amount": "5", "reason": "r", "scope": ["a", "b\u0000"]}
    error = error_of(client.post("/v1/customers/acme/credits", json=grant), 400, "invalid_input")
    assert error["field"] == "scope[1]"
    note = client.post("/v1/invoices/INV-000001/credit-notes", json={"reason": "\u0000"})
    assert error_of(note, 400, "invalid_input")["field"] == "reason"


def test_a_query_parameter_given_twice_is_400(client: TestClient) -> None:
    """limit=1&limit=2 is 400 naming `limit`, not silently the last one."""
    error = error_of(client.get("/v1/events?limit=1&limit=2"), 400, "invalid_parameter")
    assert error["field"] == "limit"
    assert client.get("/v1/events?unknown=1&limit=1").status_code == 200


def test_nul_in_webhook_and_override_bodies_is_400(ledger: Ledger) -> None:
    """With the live engine: NUL in a webhook's description or an override's reason (a
    PostgreSQL text column: 500 once) is 400 naming the field."""
    key = create_key(ledger.store, "admin", FIXED_NOW_US)[1]
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_app(ledger), raise_server_exceptions=False, headers=headers) as http:
        endpoint = {"url": "https://hooks.example/in", "kinds": ["*"], "description": "a\u0000"}
        response = http.post("/v1/webhooks", json=endpoint)
        assert error_of(response, 400, "invalid_input")["field"] == "description"
        override = {"kind": "unblock", "reason": "\u0000"}
        response = http.post("/v1/customers/acme/overrides", json=override)
        assert error_of(response, 400, "invalid_input")["field"] == "reason"


# -- routes and methods ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nope", "/", "/v2/events", "/v1/events/1"])
def test_unknown_routes_are_404_in_the_error_shape(client: TestClient, path: str) -> None:
    """A path no route serves is 404 not_found in the documented shape, not FastAPI's."""
    error = error_of(client.get(path), 404, "not_found")
    assert error["message"] == f"no route GET {path}"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/events", "GET, POST"),
        ("PUT", "/v1/health", "GET"),
        ("PATCH", "/v1/invoices/close", "POST"),
        ("POST", "/v1/invoices/INV-000001", "GET"),
        ("GET", "/v1/invoices/close", None),  # GET /v1/invoices/{id} answers: no such invoice
    ],
)
def test_wrong_methods_are_405_in_the_error_shape(
    client: TestClient, method: str, path: str, allow: str | None
) -> None:
    """A known path asked with another method is 405 method_not_allowed, with `Allow`
    listing the methods of that resource (the literal route, not a templated sibling)."""
    response = client.request(method, path)
    if allow is None:
        error_of(response, 404, "not_found")
        return
    error = error_of(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow
    assert error["message"].endswith(f"allowed: {allow}")


def test_the_schema_declares_the_error_shape_everywhere(client: TestClient) -> None:
    """Every 4xx and 5xx of every operation in /openapi.json refers to the Error schema
    (but ingest's 409: every event conflicted, answered per event; the OpenMeter-compatible
    ingest's RFC 9457 problems, as OpenMeter answers; and the OTLP receiver's refusals, a
    google.rpc.Status as the OTLP/HTTP specification asks); no operation declares
    FastAPI's 422 HTTPValidationError."""
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in json.dumps(document)
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "500" in responses, (method, path)
            for status, response in responses.items():
                if status[0] not in "45":
                    continue
                if path == "/api/v1/events" and status != "500":  # OpenMeter's answers
                    assert "application/problem+json" in response["content"], (path, status)
                    continue
                if path == "/v1/traces" and status != "500":  # OTLP's google.rpc.Status
                    content = response["content"]
                    assert set(content) == {"application/x-protobuf", "application/json"}
                    assert content["application/json"]["schema"]["title"] == "Status"
                    continue
                schema = json.dumps(response["content"]["application/json"]["schema"])
                if (method, path, status) == ("post", "/v1/events", "409"):
                    assert schema == '{"$ref": "#/components/schemas/BatchOutcome"}'
                else:
                    assert "#/components/schemas/Error" in schema, (method, path, status)


@pytest.mark.parametrize(
    ("path", "struct"),
    [
        ("/v1/customers/{customer}/credits", "GrantRequest"),
        ("/v1/customers/{customer}/credits/{grant_id}/void", "VoidRequest"),
        ("/v1/customers/{customer}/credits/{grant_id}/adjustments", "AdjustmentRequest"),
        ("/v1/invoices/{invoice_id}/credit-notes", "CreditNoteRequest"),
    ],
)
def test_json_posts_declare_the_body_they_decode(
    client: TestClient, path: str, struct: str
) -> None:
    """The credit, void, adjustment and credit-note POSTs declare their JSON bodies."""
    document = client.get("/openapi.json").json()
    body = document["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": f"#/components/schemas/{struct}"
    }
    assert document["components"]["schemas"][struct]["additionalProperties"] is False


# -- unexpected errors ----------------------------------------------------------------------

_LAUNCHER = """
import sys

import uvicorn

from meterline.api import create_app
from meterline.ledger import open_ledger
from meterline.logs import configure_logging

configure_logging("meterline-api")
ledger = open_ledger(sys.argv[1])
app = create_app(ledger, live=False)


@app.get("/v1/failing/{customer}")
async def failing(customer: str) -> None:
    raise KeyError(f"secret-internal-{customer}")


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def _serve_failing(db: Location) -> tuple[subprocess.Popen[bytes], str]:
    """A server process whose app has one route that raises; stderr is piped."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(db), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_for_health(process, url)
    return process, url


def test_an_unexpected_error_is_one_json_log_line_and_a_bare_500(
    new_db: Callable[..., Location],
) -> None:
    """A bug in a request: the client gets 500 internal_error in the error shape with an
    incident id and nothing of the exception; stderr gets exactly one JSON line naming
    the route, method, error type and message, and the same incident."""
    process, url = _serve_failing(new_db("failing"))
    try:
        response = httpx.get(f"{url}/v1/failing/acme", timeout=30)
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    error = error_of(response, 500, "internal_error")
    assert set(error) == {"code", "message"}
    assert "secret-internal" not in response.text and "KeyError" not in response.text
    incident = error["message"].rsplit(" ", 1)[-1]
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is JSON: no stray traceback
    [record] = [r for r in records if r.get("incident") == incident]
    assert record["level"] == "error" and record["component"] == "meterline-api"
    assert record["message"] == "unexpected error in a request"
    assert record["route"] == "/v1/failing/{customer}"
    assert record["method"] == "GET"
    assert record["error_type"] == "KeyError"
    assert record["error"] == "'secret-internal-acme'"
    assert "Traceback" in record["exception"]
    assert [r for r in records if r["level"] == "error"] == [record]

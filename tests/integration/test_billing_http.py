"""Billing over HTTP, end to end: a real ``meterline serve`` process over each store
(a SQLite file, a PostgreSQL schema).

One module-wide server holds three demo customers' October (a few thousand events), the
demo pricing applied once, drafts taken before the close, and October closed. The server
runs on the real clock (after October 2026), so the close is given an explicit
``through`` to finalize October alone whatever the date.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.resources import files
from typing import Any

import httpx
import msgspec
import pytest

from meterline.clock import system_clock_us
from meterline.core.events import decode_exact, encode_canonical
from meterline.core.lineage import merkle_root, verify_proof
from meterline.demo.workload import generate_month
from meterline.keys import create_key
from meterline.ledger.event_ledger import open_store
from tests.conftest import Databases, Location, RunningServer, make_keys, start_server

pytestmark = pytest.mark.slow

PRICING = files("meterline.demo").joinpath("pricing.yaml").read_text()
CUSTOMERS = ("acme-copilot", "wayne-analytics", "umbrella-health")
DRAFT_AT = "2026-10-20T00:00:00Z"
THROUGH = "2026-11-05T00:00:00Z"  # October is over for every contract (wonka is UTC-4)
YAML = {"content-type": "application/yaml"}
_EXACT = msgspec.json.Decoder(float_hook=Decimal)


def exact(response: httpx.Response) -> Any:
    """The body with every non-integer number as an exact Decimal."""
    return _EXACT.decode(response.content)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


def ingest(server: RunningServer, events: list[dict[str, Any]]) -> None:
    with server.client("ingest") as client:
        for start in range(0, len(events), 5000):
            batch = events[start : start + 5000]
            response = client.post(
                "/v1/events",
                content=encode_canonical(batch),  # exact: some properties are Decimals
                headers={"content-type": "application/json"},
            )
            assert response.status_code == 200, response.text
            assert response.json()["accepted"] == len(batch)


def apply(client: httpx.Client, text: str, **params: Any) -> httpx.Response:
    return client.post("/v1/pricing", content=text.encode(), headers=YAML, params=params)


def with_keys(db: Location) -> dict[str, str]:
    """The fixture's keys plus a read and an admin key bound to wayne-analytics."""
    keys = make_keys(db)
    store = open_store(db)
    now = system_clock_us()
    keys["read-wayne"] = create_key(store, "read", now, customer="wayne-analytics")[1]
    keys["admin-wayne"] = create_key(store, "admin", now, customer="wayne-analytics")[1]
    store.close()
    return keys


def raw_invoice(response: httpx.Response) -> bytes:
    """The invoice document's bytes exactly as served (they are spliced in, not re-encoded)."""
    prefix, suffix_length = b'{"invoice":', len(b',"sha256":"') + 64 + len(b'"}')
    assert response.content.startswith(prefix)
    return response.content[len(prefix) : -suffix_length]


@dataclass
class Billed:
    """The module's server after apply, drafts and the October close."""

    server: RunningServer
    drafts: dict[str, dict[str, Any]]
    finalized: list[str]
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)

    def client(self, scope: str | None = "admin") -> httpx.Client:
        return self.server.client(scope)

    def invoice_id(self, customer: str) -> str:
        return str(self.invoices[customer]["number"])

    def usage_line(
        self, customer: str, minimum_events: int = 1, meter: str | None = None
    ) -> dict[str, Any]:
        document = self.invoices[customer]
        return next(
            line
            for line in document["lines"]
            if line["kind"] == "usage"
            and line["lineage"]["events"] >= minimum_events
            and meter in (None, line["meter"])
        )


@pytest.fixture(scope="module")
def billed(tmp_path_factory: pytest.TempPathFactory, databases: Databases) -> Iterator[Billed]:
    db = databases.new(tmp_path_factory.mktemp("billing-http"), "served")
    keys = with_keys(db)
    server = start_server(db)
    server.keys = keys
    try:
        ingest(server, [e for e in generate_month(scale=0.2) if e["customer"] in CUSTOMERS])
        with server.client("admin") as admin:
            applied = apply(admin, PRICING)
            assert applied.status_code == 200, applied.text
            assert applied.json()["revision"] == 1
            drafts = {}
            for customer in CUSTOMERS:
                response = admin.get(
                    f"/v1/customers/{customer}/invoices/draft", params={"at": DRAFT_AT}
                )
                assert response.status_code == 200, response.text
                drafts[customer] = exact(response)
            closed = admin.post("/v1/invoices/close", params={"through": THROUGH})
            assert closed.status_code == 200, closed.text
            billed = Billed(server, drafts, closed.json()["finalized"])
            for customer in CUSTOMERS:
                [listed] = admin.get(f"/v1/customers/{customer}/invoices").json()["invoices"]
                billed.invoices[customer] = exact(admin.get(f"/v1/invoices/{listed['id']}"))[
                    "invoice"
                ]
        yield billed
    finally:
        server.stop()


# -- pricing ------------------------------------------------------------------------------


def test_dry_run_plans_without_storing_then_apply_stores_revision_one(
    server: RunningServer,
) -> None:
    ingest(server, [e for e in generate_month(scale=0.05) if e["customer"] == "acme-copilot"])
    with server.client("admin") as admin:
        response = apply(admin, PRICING, dry_run="true", name="prices.yaml")
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["dry_run"] is True and report["revision"] is None
        assert {"kind": "plan version", "key": "team@1", "change": "created"} in report["changes"]
        assert "acme-copilot" in report["customers_affected"]
        # the last closed period: October 2026 today; the real clock moves on
        assert re.fullmatch(r"20\d\d-\d\d-01", report["simulation"]["period"])
        acme = next(
            row for row in report["simulation"]["customers"] if row["customer"] == "acme-copilot"
        )
        assert Decimal(acme["after"]) > 0 and acme["before"] == "0"
        error_of(admin.get("/v1/pricing"), 404, "not_found")

        applied = apply(admin, PRICING, name="prices.yaml")
        assert applied.status_code == 200, applied.text
        assert applied.json()["dry_run"] is False and applied.json()["revision"] == 1
    with server.client("read") as reader:
        current = reader.get("/v1/pricing")
    assert current.status_code == 200
    body = current.json()
    assert body["revision"] == 1
    assert body["source_name"] == "prices.yaml" and body["source_text"] == PRICING
    assert len(body["sha256"]) == 64 and body["applied_at"].endswith("Z")


def test_pricing_refuses_wrong_types_empty_bodies_and_other_scopes(
    billed: Billed,
) -> None:
    with billed.client("admin") as admin:
        error = error_of(
            admin.post("/v1/pricing", json={"meters": []}), 415, "unsupported_content_type"
        )
        assert "application/yaml" in error["accepted"]
        for media in ("application/x-yaml", "text/yaml", "text/plain; charset=utf-8"):
            response = admin.post(
                "/v1/pricing",
                content=PRICING.encode(),
                headers={"content-type": media},
                params={"dry_run": "true"},
            )
            assert response.status_code == 200, (media, response.text)
        error_of(apply(admin, "  \n"), 400, "invalid_input")
        error_of(apply(admin, PRICING, dry_run="maybe"), 400, "invalid_parameter")
    with billed.client("ingest") as ingester:
        error_of(apply(ingester, PRICING), 403, "forbidden")
        error_of(ingester.get("/v1/pricing"), 403, "forbidden")
    with billed.client("read") as reader:
        error_of(apply(reader, PRICING), 403, "forbidden")
    with billed.client(None) as anonymous:
        response = anonymous.post("/v1/pricing", content=PRICING, headers=YAML)
        error_of(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    with billed.client("admin") as admin:
        assert admin.get("/v1/pricing").json()["revision"] == 1  # nothing above was stored


def _line_of(text: str) -> int:
    """The line of the demo pricing file where ``text`` first appears."""
    return PRICING[: PRICING.index(text)].count("\n") + 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("meters:\n  - key: [unclosed\n", "pricing.yaml:3: invalid YAML"),
        (
            PRICING.replace(
                '{up_to: 100000000, unit_amount: "0.000002"}',
                '{up_to: 10000000, unit_amount: "0.000002"}',
            ),
            f"pricing.yaml:{_line_of('{up_to: 100000000')}: plans[1].versions[0].prices[0]"
            ".tiers[1].up_to: 10000000 must be greater than 20000000 (tiers overlap or are out"
            " of order)",
        ),
        (
            PRICING.replace("- meter: tool_calls\n", "- meter: tool_callz\n", 1),
            f"pricing.yaml:{_line_of('- meter: tool_calls')}: plans[1].versions[0].prices[4]"
            ".meter: unknown meter 'tool_callz'",
        ),
    ],
    ids=["invalid-yaml", "overlapping-tiers", "unknown-meter"],
)
def test_an_invalid_pricing_file_is_422_naming_line_and_path(
    billed: Billed, text: str, expected: str
) -> None:
    with billed.client("admin") as admin:
        for dry_run in ("true", "false"):
            error = error_of(apply(admin, text, dry_run=dry_run), 422, "invalid_configuration")
            assert error["message"] == error["errors"][0]
            assert any(e.startswith(expected) for e in error["errors"]), error["errors"]
        assert admin.get("/v1/pricing").json()["revision"] == 1


# -- drafts, close, invoices ----------------------------------------------------------------


def test_close_finalizes_october_for_every_contract_once(billed: Billed) -> None:
    assert billed.finalized == [f"INV-{n:06d}" for n in range(1, 11)]
    with billed.client("admin") as admin:
        again = admin.post("/v1/invoices/close", params={"through": THROUGH})
        assert again.status_code == 200 and again.json() == {
            "finalized": [],
            "failed": [],
            "unbillable": {"events": 0, "customers": []},
        }
        [listed] = admin.get("/v1/customers/wayne-analytics/invoices").json()["invoices"]
        document = billed.invoices["wayne-analytics"]
        assert listed == {
            "id": document["number"],
            "kind": "period",
            "period_start": "2026-10-01T00:00:00Z",
            "period_end": "2026-11-01T00:00:00Z",
            "total": document["total"],
            "currency": "USD",
            "sha256": listed["sha256"],
        }
        response = admin.get(f"/v1/invoices/{listed['id']}")
        raw = raw_invoice(response)
        assert response.json()["sha256"] == listed["sha256"] == hashlib.sha256(raw).hexdigest()
        assert raw == encode_canonical(decode_exact(raw))  # canonical bytes, as stored
        assert admin.get("/v1/customers/nobody/invoices").json() == {"invoices": []}
        error_of(admin.get("/v1/invoices/INV-999999"), 404, "not_found")


def test_a_draft_equals_the_invoice_it_becomes(billed: Billed) -> None:
    with billed.client("read") as reader:
        for customer in CUSTOMERS:
            draft, final = billed.drafts[customer], billed.invoices[customer]
            assert draft["status"] == "draft" and draft["number"] is None
            assert final["status"] == "finalized"
            assert draft["lines"] == final["lines"] and draft["total"] == final["total"]
            assert draft["period"] == final["period"]
            # once closed, the "draft" of that period is the finalized invoice itself
            again = reader.get(f"/v1/customers/{customer}/invoices/draft", params={"at": DRAFT_AT})
            assert exact(again) == final
        november = exact(
            reader.get(
                "/v1/customers/acme-copilot/invoices/draft",
                params={"at": "2026-11-10T00:00:00+01:00"},
            )
        )
        assert november["status"] == "draft"
        assert november["period"]["start"] == "2026-11-01T00:00:00Z"


def test_bad_timestamps_and_unknown_customers(billed: Billed) -> None:
    with billed.client("admin") as admin:
        draft = "/v1/customers/acme-copilot/invoices/draft"
        for value in ("2026-10-20", "yesterday", "2026-10-20T00:00:00"):
            error = error_of(admin.get(draft, params={"at": value}), 400, "invalid_parameter")
            assert error["field"] == "at" and error["message"].startswith("at: ")
        error = error_of(
            admin.post("/v1/invoices/close", params={"through": "soon"}), 400, "invalid_parameter"
        )
        assert error["field"] == "through"
        error = error_of(admin.get("/v1/customers/nobody/invoices/draft"), 404, "not_found")
        assert error["message"] == "customer 'nobody' has no contract"


# -- lineage: explain and proofs ------------------------------------------------------------


def test_explain_pages_through_every_event_behind_a_line(billed: Billed) -> None:
    line = billed.usage_line("acme-copilot", minimum_events=250)
    invoice_id = billed.invoice_id("acme-copilot")
    path = f"/v1/invoices/{invoice_id}/lines/{line['number']}/events"
    events, after, pages = [], 0, 0
    with billed.client("read") as reader:
        while True:
            response = reader.get(path, params={"limit": 100, "after_sequence": after})
            assert response.status_code == 200, response.text
            page = exact(response)
            assert len(page["events"]) <= 100
            assert page["events_total"] == line["lineage"]["events"]
            events += page["events"]
            pages += 1
            if page["next_after_sequence"] is None:
                break
            after = page["next_after_sequence"]
            assert after == page["events"][-1]["sequence"]
        lineage = line["lineage"]
        assert pages == -(-lineage["events"] // 100)
        sequences = [event["sequence"] for event in events]
        assert sequences == sorted(set(sequences)) and len(sequences) == lineage["events"]
        assert (sequences[0], sequences[-1]) == (
            lineage["first_sequence"],
            lineage["last_sequence"],
        )
        # the events' ledger hashes rebuild the line's Merkle root independently
        root = merkle_root([bytes.fromhex(event["hash"]) for event in events])
        assert root.hex() == lineage["merkle_root"]
        assert all(event["type"] == "llm.completion" for event in events)

        error_of(reader.get(path, params={"limit": 1001}), 400, "invalid_parameter")
        error_of(reader.get(path, params={"after_sequence": -1}), 400, "invalid_parameter")
        fee = next(n for n in billed.invoices["acme-copilot"]["lines"] if n["kind"] == "fee")
        fee_path = f"/v1/invoices/{invoice_id}/lines/{fee['number']}/events"
        error_of(reader.get(fee_path), 422, "invalid_parameter")
        error_of(reader.get(f"/v1/invoices/{invoice_id}/lines/999/events"), 404, "not_found")


def test_a_proof_verifies_and_a_forged_one_does_not(billed: Billed) -> None:
    line = billed.usage_line("umbrella-health", minimum_events=3, meter="input_tokens")
    invoice_id = billed.invoice_id("umbrella-health")
    base = f"/v1/invoices/{invoice_id}/lines/{line['number']}/events"
    with billed.client("read") as reader:
        events = exact(reader.get(base, params={"limit": 1000}))["events"]
        chosen = events[len(events) // 2]
        response = reader.get(f"{base}/{chosen['id']}/proof")
        assert response.status_code == 200, response.text
        proof = response.json()
        assert verify_proof(proof) == []
        assert proof["event"]["hash"] == chosen["hash"]
        assert proof["invoice"]["id"] == invoice_id
        assert proof["line_root"] == line["lineage"]["merkle_root"]

        flipped = list(proof["path"])
        flipped[0] = ("0" if flipped[0][0] != "0" else "1") + flipped[0][1:]
        assert verify_proof({**proof, "path": flipped})
        body = json.loads(proof["event"]["body"])
        body["properties"]["input_tokens"] = body["properties"].get("input_tokens", 0) + 1
        forged_event = {**proof["event"], "body": json.dumps(body, separators=(",", ":"))}
        assert verify_proof({**proof, "event": forged_event})
        forged_invoice = {
            **proof["invoice"],
            "document": proof["invoice"]["document"].replace('"total":"', '"total":"1', 1),
        }
        assert verify_proof({**proof, "invoice": forged_invoice})

        error_of(reader.get(f"{base}/no-such-event/proof"), 404, "not_found")
        other_line = billed.usage_line("umbrella-health", meter="gpu_seconds")
        not_behind = f"/v1/invoices/{invoice_id}/lines/{other_line['number']}/events"
        error_of(reader.get(f"{not_behind}/{chosen['id']}/proof"), 404, "not_found")


# -- tenancy and scopes -------------------------------------------------------------------


def test_a_customer_bound_key_sees_only_its_customer(billed: Billed) -> None:
    own, other = billed.invoice_id("wayne-analytics"), billed.invoice_id("acme-copilot")
    own_line = billed.usage_line("wayne-analytics")
    other_line = billed.usage_line("acme-copilot")
    with billed.client("admin") as admin:
        other_event = exact(admin.get(f"/v1/invoices/{other}/lines/{other_line['number']}/events"))[
            "events"
        ][0]["id"]
    with billed.client("read-wayne") as wayne:
        assert wayne.get("/v1/customers/wayne-analytics/invoices/draft").status_code == 200
        assert len(wayne.get("/v1/customers/wayne-analytics/invoices").json()["invoices"]) == 1
        assert wayne.get(f"/v1/invoices/{own}").status_code == 200
        own_events = wayne.get(f"/v1/invoices/{own}/lines/{own_line['number']}/events")
        assert own_events.status_code == 200
        own_event = own_events.json()["events"][0]["id"]
        proof = wayne.get(f"/v1/invoices/{own}/lines/{own_line['number']}/events/{own_event}/proof")
        assert proof.status_code == 200 and verify_proof(proof.json()) == []

        # another customer's records answer exactly like records that do not exist
        missing = wayne.get("/v1/invoices/INV-999999").json()
        hidden = wayne.get(f"/v1/invoices/{other}").json()
        assert (
            hidden["error"]["message"].replace(other, "INV-999999") == missing["error"]["message"]
        )
        assert hidden["error"]["code"] == missing["error"]["code"] == "not_found"
        n = other_line["number"]
        for path in (
            f"/v1/invoices/{other}",
            f"/v1/invoices/{other}/lines/{n}/events",
            f"/v1/invoices/{other}/lines/{n}/events/{other_event}/proof",
            "/v1/customers/acme-copilot/invoices",
            "/v1/customers/acme-copilot/invoices/draft",
        ):
            error_of(wayne.get(path), 404, "not_found")
        # pricing names every customer and its terms: not for a bound key
        error_of(wayne.get("/v1/pricing"), 403, "forbidden")
    with billed.client("admin-wayne") as wayne_admin:
        error_of(
            wayne_admin.post(f"/v1/invoices/{other}/credit-notes", json={"reason": "x"}),
            404,
            "not_found",
        )
        for response in (
            wayne_admin.post("/v1/invoices/close", params={"through": THROUGH}),
            wayne_admin.get("/v1/audit"),
            apply(wayne_admin, PRICING, dry_run="true"),
        ):
            error_of(response, 403, "forbidden")


def test_admin_routes_refuse_read_and_ingest_keys(billed: Billed) -> None:
    invoice_id = billed.invoice_id("acme-copilot")
    for scope in ("read", "ingest"):
        with billed.client(scope) as client:
            error_of(client.post("/v1/invoices/close"), 403, "forbidden")
            error_of(client.get("/v1/audit"), 403, "forbidden")
            error_of(
                client.post(f"/v1/invoices/{invoice_id}/credit-notes", json={"reason": "x"}),
                403,
                "forbidden",
            )
    with billed.client("ingest") as ingester:
        error_of(ingester.get(f"/v1/invoices/{invoice_id}"), 403, "forbidden")


# -- credit notes and audit -----------------------------------------------------------------


def test_partial_credit_notes_over_http(billed: Billed) -> None:
    """Credit a chosen line, then an amount; a line twice, too much, or a bad amount are
    refused with the reason; the audit still passes."""
    invoice_id = billed.invoice_id("acme-copilot")
    path = f"/v1/invoices/{invoice_id}/credit-notes"
    with billed.client("admin") as admin:
        document = admin.get(f"/v1/invoices/{invoice_id}").json()["invoice"]
        usage = next(line for line in document["lines"] if line["kind"] == "usage")
        created = admin.post(path, json={"reason": "disputed", "lines": [usage["number"]]})
        assert created.status_code == 201, created.text
        note = created.json()["document"]
        assert note["lines"][0]["credits_line"] == usage["number"]
        assert note["lines"][0]["amount"] == str(-Decimal(usage["amount"]))
        again = error_of(
            admin.post(path, json={"reason": "twice", "lines": [usage["number"]]}),
            409,
            "billing_conflict",
        )
        assert "credited already" in again["message"]
        assert admin.post(path, json={"reason": "goodwill", "amount": "10.00"}).status_code == 201
        too_much = error_of(
            admin.post(path, json={"reason": "x", "amount": "99999999.00"}), 409, "billing_conflict"
        )
        assert "more than the" in too_much["message"]
        error_of(admin.post(path, json={"reason": "x", "amount": "ten"}), 400, "invalid_input")
        error_of(admin.post(path, json={"reason": "x", "lines": [0]}), 400, "invalid_input")
        assert admin.get("/v1/audit").json()["passed"]


def test_a_void_credit_note_and_the_audit_still_passes(billed: Billed) -> None:
    invoice_id = billed.invoice_id("umbrella-health")
    path = f"/v1/invoices/{invoice_id}/credit-notes"
    with billed.client("admin") as admin:
        notes_before = admin.get("/v1/audit").json()["credit_notes"]  # other tests' notes
        error_of(admin.post(path, json={"reason": "  "}), 400, "invalid_input")
        error_of(admin.post(path, json={"reason": "x", "voids": True}), 400, "invalid_input")
        error_of(
            admin.post(path, content=b"{", headers={"content-type": "application/json"}),
            400,
            "malformed_json",
        )
        error_of(
            admin.post(path, content=b"void", headers={"content-type": "text/plain"}),
            415,
            "unsupported_content_type",
        )
        error = error_of(admin.post(path, json={"reason": "settle"}), 409, "billing_conflict")
        assert "no late events" in error["message"]
        error_of(
            admin.post("/v1/invoices/INV-999999/credit-notes", json={"reason": "x"}),
            404,
            "not_found",
        )

        # a late October event: a settling credit note re-rates it now
        late = {
            "id": "late-umbrella-1",
            "customer": "umbrella-health",
            "type": "llm.completion",
            "timestamp": "2026-10-05T12:00:00Z",
            "properties": {"model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 1000},
        }
        ingest(billed.server, [late])
        settled = admin.post(path, json={"reason": "late usage from a partner region"})
        assert settled.status_code == 201, settled.text
        [adjustment] = exact(settled)["document"]["lines"]
        assert adjustment["kind"] == "adjustment"
        assert adjustment["adjusts"]["invoice"] == invoice_id
        assert adjustment["lineage"]["events"] == 1
        assert Decimal(adjustment["amount"]) > 0
        assert (
            admin.get(f"/v1/invoices/{invoice_id}").json()["invoice"]
            == (billed.invoices["umbrella-health"])
        )  # the finalized invoice is never edited

        response = admin.post(path, json={"reason": "customer disputed", "void": True})
        assert response.status_code == 201, response.text
        note = exact(response)
        assert note["id"].startswith("CN-")
        document = note["document"]
        assert document["void"] is True and document["invoice"] == invoice_id
        assert document["reason"] == "customer disputed"
        assert Decimal(document["total"]) == -Decimal(billed.invoices["umbrella-health"]["total"])
        assert note["sha256"] == hashlib.sha256(encode_canonical(document)).hexdigest()
        again = admin.post(path, json={"reason": "again", "void": True})
        assert "already void" in error_of(again, 409, "billing_conflict")["message"]

        audit = admin.get("/v1/audit")
        assert audit.status_code == 200, audit.text
        report = audit.json()
        assert report["passed"] is True and report["chain_intact"] is True
        assert report["mismatches"] == []
        assert report["invoices"] == 10 and report["revisions"] == 1
        assert report["credit_notes"] == notes_before + 2


def test_the_billing_routes_are_in_the_openapi_document(billed: Billed) -> None:
    paths = httpx.get(f"{billed.server.url}/openapi.json", timeout=30).json()["paths"]
    expected = {
        ("/v1/pricing", "post"),
        ("/v1/pricing", "get"),
        ("/v1/customers/{customer}/invoices/draft", "get"),
        ("/v1/customers/{customer}/invoices", "get"),
        ("/v1/invoices/close", "post"),
        ("/v1/invoices/{invoice_id}", "get"),
        ("/v1/invoices/{invoice_id}/lines/{n}/events", "get"),
        ("/v1/invoices/{invoice_id}/lines/{n}/events/{event_id}/proof", "get"),
        ("/v1/invoices/{invoice_id}/credit-notes", "post"),
        ("/v1/audit", "get"),
    }
    for path, method in expected:
        operation = paths[path][method]
        assert operation["summary"] and operation["tags"] == ["billing"], (path, method)
    assert "application/yaml" in paths["/v1/pricing"]["post"]["requestBody"]["content"]

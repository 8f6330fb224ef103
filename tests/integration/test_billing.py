"""Billing over a real ledger (a SQLite file and a PostgreSQL schema): apply, close, late
events, credit notes, proofs, and an audit that catches a tampered event, price or
invoice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal as D
from importlib.resources import files
from typing import Any

import pytest

from meterline.billing.service import Billing, BillingError, NotFound, open_billing
from meterline.config.source import ConfigurationError
from meterline.core.documents import AdjustmentLine, document_data
from meterline.core.events import decode_exact, timestamp_to_us
from meterline.core.invoicing import line_sum
from meterline.core.lineage import verify_proof
from meterline.demo.workload import generate_month
from meterline.ledger.database import integrity_errors
from meterline.ledger.location import is_postgres
from tests.conftest import Location
from tests.stores import rows, tamper

NewDb = Callable[..., Location]

PRICING = files("meterline.demo").joinpath("pricing.yaml").read_text()
CUSTOMERS = {"acme-copilot", "wayne-analytics", "umbrella-health"}


def at(*parts: int) -> int:
    return timestamp_to_us(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


class Clock:
    def __init__(self, now_us: int) -> None:
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


@pytest.fixture
def clock() -> Clock:
    return Clock(at(2026, 11, 23))


@pytest.fixture
def billing(new_db: NewDb, clock: Clock) -> Iterator[Billing]:
    events = [e for e in generate_month(scale=0.2) if e["customer"] in CUSTOMERS]
    with open_billing(new_db(), clock=clock) as service:
        for start in range(0, len(events), 5000):
            outcome = service.ledger.ingest(events[start : start + 5000])
            assert outcome.accepted == len(events[start : start + 5000])
        service.apply(PRICING)
        yield service


def late_event(customer: str, day: int, number: int) -> dict[str, Any]:
    return {
        "id": f"late-{customer}-{number}",
        "customer": customer,
        "type": "llm.completion",
        "timestamp": f"2026-10-{day:02d}T12:00:00Z",
        "properties": {"model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 1000},
    }


def test_dry_run_plans_and_simulates_without_storing(new_db: NewDb, clock: Clock) -> None:
    with open_billing(new_db(), clock=clock) as service:
        service.ledger.ingest(
            [e for e in generate_month(scale=0.05) if e["customer"] == "acme-copilot"]
        )
        report = service.apply(PRICING, dry_run=True)
        assert report.revision is None and service.store.revision() is None
        assert {"kind": "plan version", "key": "team@1", "change": "created"} in [
            c.__dict__ for c in report.changes
        ]
        assert "acme-copilot" in report.customers_affected
        acme = next(row for row in report.simulation if row["customer"] == "acme-copilot")
        assert D(acme["after"]) > 0 and acme["before"] == "0"


def test_close_finalizes_each_period_once_and_audit_passes(billing: Billing) -> None:
    finalized = billing.close(at(2026, 11, 2))
    # every contract's October is invoiced, with usage or with fees alone
    assert len(finalized) == 10 and {i.customer for i in finalized} >= CUSTOMERS
    assert [i.invoice_id for i in finalized] == [f"INV-{n:06d}" for n in range(1, 11)]
    assert billing.close(at(2026, 11, 2)) == []  # closing again finalizes nothing
    for invoice in finalized:
        document = invoice.record
        assert line_sum(document) == document.total
        assert document.through() == billing.ledger.store.cut().to_json()
    report = billing.audit()
    assert report.passed, report.mismatches
    assert report.invoices == 10


def test_a_mid_month_upgrade_is_prorated_on_the_invoice(billing: Billing) -> None:
    billing.close(at(2026, 11, 2))
    acme = next(i for i in billing.store.invoices("acme-copilot"))
    descriptions = [line["description"] for line in decode_exact(acme.document)["lines"]]
    assert "Team platform fee (team@1), unused time from 2026-10-15" in descriptions
    assert "Enterprise platform fee (enterprise@1), remaining time from 2026-10-15" in descriptions


def test_draft_equals_the_invoice_it_becomes(billing: Billing) -> None:
    draft = billing.draft("wayne-analytics", at(2026, 10, 20))
    (invoice,) = [i for i in billing.close(at(2026, 11, 2)) if i.customer == "wayne-analytics"]
    final = invoice.record
    assert draft.lines == final.lines and draft.total == final.total
    assert draft.status == "draft" and final.status == "finalized"
    assert decode_exact(invoice.document) == document_data(final)  # decoded once, typed
    # after the close, the draft of that period is the finalized invoice itself
    assert billing.draft("wayne-analytics", at(2026, 10, 20)) == final


def test_late_events_become_an_adjustment_on_the_next_invoice(
    billing: Billing, clock: Clock
) -> None:
    (october,) = [i for i in billing.close(at(2026, 11, 2)) if i.customer == "acme-copilot"]
    outcome = billing.ledger.ingest([late_event("acme-copilot", 20, n) for n in range(3)])
    assert outcome.accepted == 3
    assert billing.document(october.invoice_id) == october.record  # no edit
    draft = billing.draft("acme-copilot", at(2026, 11, 10))
    (adjustment,) = [line for line in draft.lines if isinstance(line, AdjustmentLine)]
    assert adjustment.adjusts.invoice == october.invoice_id
    assert adjustment.lineage.events == 3
    assert adjustment.amount > 0
    clock.now_us = at(2026, 12, 2)
    (november,) = [i for i in billing.close(at(2026, 12, 1)) if i.customer == "acme-copilot"]
    lines = november.record.lines
    assert [line for line in lines if line.kind == "adjustment"] == [adjustment]
    late = billing.explain(november.invoice_id, adjustment.number)
    assert [e["id"] for e in late] == [f"late-acme-copilot-{n}" for n in range(3)]
    proof = billing.proof(november.invoice_id, adjustment.number, "late-acme-copilot-1")
    assert verify_proof(proof) == []
    assert billing.audit().passed
    # a second close carries no adjustment again
    clock.now_us = at(2027, 1, 2)
    january = [i for i in billing.close(at(2027, 1, 1)) if i.customer == "acme-copilot"]
    assert not [
        line for line in decode_exact(january[0].document)["lines"] if line["kind"] == "adjustment"
    ]


def test_a_credit_note_settles_late_events_and_voids(billing: Billing, clock: Clock) -> None:
    (october,) = [i for i in billing.close(at(2026, 11, 2)) if i.customer == "umbrella-health"]
    with pytest.raises(BillingError, match="no late events"):
        billing.credit_note(october.invoice_id, "nothing to settle")
    billing.ledger.ingest([late_event("umbrella-health", 5, 1)])
    note = billing.credit_note(october.invoice_id, "late usage from a partner region")
    document = decode_exact(note.document)
    assert document["lines"][0]["adjusts"]["invoice"] == october.invoice_id
    assert D(document["total"]) > 0
    clock.now_us = at(2026, 12, 2)
    (november,) = [i for i in billing.close(at(2026, 12, 1)) if i.customer == "umbrella-health"]
    kinds = [line["kind"] for line in decode_exact(november.document)["lines"]]
    assert "adjustment" not in kinds  # already settled by the credit note
    void = billing.credit_note(october.invoice_id, "customer disputed", void=True)
    assert decode_exact(void.document)["total"] == str(-D(decode_exact(october.document)["total"]))
    with pytest.raises(BillingError, match="already void"):
        billing.credit_note(october.invoice_id, "again", void=True)
    assert billing.audit().passed


def test_an_inclusion_proof_verifies_and_a_forged_one_does_not(billing: Billing) -> None:
    invoice = billing.close(at(2026, 11, 2))[0]
    document = decode_exact(invoice.document)
    line = next(line for line in document["lines"] if line["kind"] == "usage")
    events = billing.explain(invoice.invoice_id, line["number"])
    assert len(events) == line["lineage"]["events"]
    assert events[0]["sequence"] == line["lineage"]["first_sequence"]
    proof = billing.proof(invoice.invoice_id, line["number"], events[len(events) // 2]["id"])
    assert verify_proof(proof) == []
    forged = {
        **proof,
        "event": {**proof["event"], "body": proof["event"]["body"].replace("1", "2", 1)},
    }
    assert verify_proof(forged)
    flipped = list(proof["path"])
    flipped[0] = ("0" if flipped[0][0] != "0" else "1") + flipped[0][1:]
    assert verify_proof({**proof, "path": flipped})
    with pytest.raises(NotFound):
        billing.proof(invoice.invoice_id, line["number"], "no-such-event")


def _replaced(location: Location, column: str, old: str, new: str) -> str:
    """SQL for ``column`` (UTF-8 JSON bytes) with every ``old`` replaced by ``new``, still
    bytes, on the store at ``location``."""
    if is_postgres(location):
        return f"convert_to(replace(convert_from({column}, 'UTF8'), '{old}', '{new}'), 'UTF8')"
    return f"CAST(replace(CAST({column} AS TEXT), '{old}', '{new}') AS BLOB)"


def test_audit_fails_when_an_event_is_tampered_with(billing: Billing) -> None:
    invoice = billing.close(at(2026, 11, 2))[0]
    lines = decode_exact(invoice.document)["lines"]
    line = next(line for line in lines if line.get("meter") == "input_tokens")
    first = line["lineage"]["first_sequence"]
    location = billing.store.path
    body = _replaced(location, "body", '"input_tokens":', '"input_tokens":9')
    tamper(location, f"UPDATE events SET body = {body} WHERE sequence = {int(first)}")
    report = billing.audit()
    assert not report.passed
    assert not report.chain_intact
    assert any(f"invoice {invoice.invoice_id}" in m for m in report.mismatches), report.mismatches


def test_audit_fails_when_a_price_is_tampered_with(billing: Billing) -> None:
    billing.close(at(2026, 11, 2))
    location = billing.store.path
    content = _replaced(
        location, "content", '"unit_amount":"0.0000025"', '"unit_amount":"0.0000026"'
    )
    tamper(location, f"UPDATE configuration_revisions SET content = {content}")
    billing.context.loaded.clear()
    report = billing.audit()
    assert not report.passed
    assert any("configuration revision 1" in m for m in report.mismatches), report.mismatches
    assert any("invoice INV-" in m for m in report.mismatches)


def test_audit_fails_when_an_invoice_is_rewritten(billing: Billing) -> None:
    invoice = billing.close(at(2026, 11, 2))[0]
    location = billing.store.path
    document = _replaced(location, "document", '"total":"', '"total":"1')
    tamper(
        location,
        f"UPDATE invoices SET document = {document} WHERE invoice_id = '{invoice.invoice_id}'",
    )
    report = billing.audit()
    assert [m for m in report.mismatches if invoice.invoice_id in m]


def test_billing_records_are_append_only(billing: Billing) -> None:
    billing.close(at(2026, 11, 2))
    for statement in ("UPDATE invoices SET customer = 'x'", "DELETE FROM configuration_revisions"):
        with pytest.raises(integrity_errors(), match="append-only"):
            rows(billing.store.path, statement)


def test_a_plan_version_is_immutable_once_applied(billing: Billing) -> None:
    changed = PRICING.replace('amount: "500.00"', 'amount: "550.00"')
    with pytest.raises(ConfigurationError) as caught:
        billing.apply(changed)
    assert any(
        "plans[1].versions[0]: plan version team@1 is immutable once applied; add version 2" in e
        for e in caught.value.errors
    ), caught.value.errors


def test_a_new_version_reaches_floating_contracts_at_their_next_period(
    billing: Billing,
) -> None:
    version_two = PRICING.replace(
        "  - key: enterprise\n",
        "      - version: 2\n"
        "        effective_from: 2026-12-01\n"
        "        currency: USD\n"
        "        fees:\n"
        '          - {key: platform, name: Team platform fee, amount: "600.00"}\n'
        "  - key: enterprise\n",
    )
    report = billing.apply(version_two, dry_run=True)
    assert [c.__dict__ for c in report.changes] == [
        {"kind": "plan version", "key": "team@2", "change": "created"}
    ]
    # wayne moved to the floating team plan in October: December bills at team@2
    assert "wayne-analytics" in report.customers_affected
    assert "umbrella-health" not in report.customers_affected
    billing.apply(version_two)
    december = billing.draft("wayne-analytics", at(2026, 12, 5))
    assert [t.plan for t in december.terms or []] == ["team@2"]
    assert [t.plan for t in billing.draft("wayne-analytics", at(2026, 11, 5)).terms or []] == [
        "team@1"
    ]


def test_finalized_history_cannot_be_rewritten_by_configuration(billing: Billing) -> None:
    billing.close(at(2026, 11, 2))
    backdated = PRICING.replace(
        "amendments: [{effective: 2026-10-15, plan: enterprise}]",
        "amendments: [{effective: 2026-10-10, plan: enterprise}]",
    )
    with pytest.raises(ConfigurationError) as caught:
        billing.apply(backdated)
    assert any(
        "contracts[0]: changes the terms of finalized invoice INV-" in e
        for e in caught.value.errors
    ), caught.value.errors
    forward = PRICING.replace(
        "amendments: [{effective: 2026-10-15, plan: enterprise}]",
        "amendments: [{effective: 2026-10-15, plan: enterprise},"
        " {effective: 2026-11-20, plan: team}]",
    )
    assert billing.apply(forward).revision == 2  # amending from a later date is fine


def test_unknown_customer_and_invoice_are_not_found(billing: Billing) -> None:
    with pytest.raises(NotFound):
        billing.draft("nobody")
    with pytest.raises(NotFound):
        billing.document("INV-999999")

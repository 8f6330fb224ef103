"""``audit`` reads and parses each configuration revision once, shared by every invoice
rated under it (``billing.audit._Revisions``), and still gives every invoice its own
finding when that revision no longer parses. Real stores, the tamper catalogue's ledger
(three invoices under revision 1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from meterline.billing import audit as audit_module
from meterline.billing.context import parse_stored
from meterline.billing.service import audit_ledger
from tests.conftest import Location
from tests.integration.test_tamper import build, edit_revision

NewDb = Callable[..., Location]


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"], indirect=True)
def test_each_revision_is_parsed_once_per_audit(
    store_kind: str, new_db: NewDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = build(new_db("revisions"))
    parsed: list[int] = []

    def counted(stored: Any) -> Any:
        parsed.append(stored.revision)
        return parse_stored(stored)

    monkeypatch.setattr(audit_module, "parse_stored", counted)
    report = audit_ledger(db)
    assert report.passed, report.mismatches
    assert report.invoices == 3
    assert parsed == [1]


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_a_revision_that_no_longer_matches_is_every_invoices_finding(
    store_kind: str, new_db: NewDb
) -> None:
    db = build(new_db("revisions"))
    edit_revision(db)
    findings = audit_ledger(db).findings
    invoices = [finding for finding in findings if finding.check == "invoice"]
    assert [finding.as_dict().get("invoice") for finding in invoices] == [
        f"INV-00000{number}" for number in (1, 2, 3)
    ], [str(finding) for finding in findings]

"""The contract workspace in a real browser: the system Chromium (Playwright, headless)
against a real ``meterline serve`` over the small real ledger of ``conftest.py`` (last
month closed, this month under way), with three workspace users.

An editor fills the form with bad input (refused field by field, nothing stored), then
a hybrid contract for acme (flat fee, a paid credit pool, 50% rollover, a spend control)
from this month, previews it and submits it; the same editor cannot approve it; an approver
approves it; the next draft invoice and the live balance reflect it; a viewer cannot
reach the form. A screenshot of each page goes to ``$METERLINE_TEST_ARTIFACTS/workspace``
(or the test's temporary directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meterline.api.server import spawn_server
from meterline.clock import system_clock_us
from meterline.keys import add_user
from meterline.ledger.workspace_records import WorkspaceStore
from tests.browser.conftest import Served, build_ledger, month_start, wait_for
from tests.conftest import Databases

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery"
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("METERLINE_TEST_ARTIFACTS")
    folder = Path(chosen) / "workspace" if chosen else tmp_path_factory.mktemp("workspace")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def served(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``meterline serve`` over the test ledger with users erin (editor), abe (approver)
    and vic (viewer)."""
    db = databases.new(tmp_path_factory.mktemp("workspace-ledger"), "workspace")
    keys, invoices = build_ledger(db)
    store = WorkspaceStore(str(db))
    for name, role in (("erin", "editor"), ("abe", "approver"), ("vic", "viewer")):
        add_user(store, name, PASSWORD, role, system_clock_us())
    store.close()
    process, url = spawn_server(db)
    running = Served(url, db, process, keys, invoices)
    try:
        yield running
    finally:
        running.stop()


def snapshot(page: Any, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 0, path


def log_in(chromium: Any, served: Served, name: str) -> Any:
    """A fresh browser context logged in as workspace user ``name``; its page."""
    context = chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{served.url}/dashboard/login")
    page.fill("#user", name)
    page.fill("#password", PASSWORD)
    page.click("text=Log in as user")
    page.wait_for_url(f"{served.url}/dashboard")
    return page


def fill(page: Any, values: dict[str, str]) -> None:
    for field, value in values.items():
        page.fill(f"#{field}", value)


def field_errors(page: Any) -> dict[str, str]:
    found = {}
    for element in page.query_selector_all("[data-field-error]"):
        found[element.get_attribute("data-field-error")] = element.inner_text()
    return found


def test_an_editor_proposes_a_hybrid_contract_and_an_approver_applies_it(
    served: Served, chromium: Any, artifacts: Path
) -> None:
    """The whole maker-checker flow in the browser, with its effect on the draft and
    the live balance."""
    now = datetime.now(UTC)
    this_month = month_start(now)
    last_month_day = month_start(this_month - timedelta(days=1)) + timedelta(days=14)
    with served.api("read") as reader:
        before = reader.get("/v1/live/acme").json()
    viewer = log_in(chromium, served, "vic")
    answer = viewer.goto(f"{served.url}/dashboard/workspace/new?customer=acme")
    assert answer.status == 403
    snapshot(viewer, artifacts, "viewer-refused")
    viewer.context.close()

    editor = log_in(chromium, served, "erin")
    editor.goto(f"{served.url}/dashboard/workspace/new?customer=acme")
    fill(
        editor,
        {
            "effective": f"{last_month_day:%Y-%m-%d}",
            "fee_amount": "-5",
            "pool_amount": "1000",
            "pool_paid": "9.00",
            "pool_rollover_percent": "150",
            "price_meter": "input_tokens",
            "price_tiers": "1000:0.1, 500:0.1, :0.1",
            "control_0_key": "budget",
            "control_0_actions": "alert, explode",
            "control_0_settings": "amount: -40, percents: [50, 100]",
            "reason": "hybrid contract",
        },
    )
    editor.select_option("#control_0_policy", "spend_threshold")
    editor.click("button[value=submit]")
    errors = field_errors(editor)
    assert {"effective", "fee_amount", "pool_rollover_percent", "price_tiers"} <= set(errors)
    assert "must not be negative" in errors["fee_amount"]
    assert "at most 100" in errors["pool_rollover_percent"]
    assert "overlap" in errors["price_tiers"]
    assert "'explode' is not one of" in errors["control_0_actions"]
    assert "amount: must not be negative" in errors["control_0_settings"]
    snapshot(editor, artifacts, "form-refused")
    editor.goto(f"{served.url}/dashboard/workspace")
    assert "No proposals yet." in editor.inner_text("[data-table=proposals]")

    editor.goto(f"{served.url}/dashboard/workspace/new?customer=acme")
    fill(
        editor,
        {
            "effective": f"{this_month:%Y-%m-%d}",
            "fee_amount": "45.00",
            "pool_amount": "1000",
            "pool_paid": "9.00",
            "pool_priority": "10",
            "pool_rollover_percent": "50",
            "control_0_key": "budget",
            "control_0_actions": "alert",
            "control_0_settings": "amount: 100000, percents: [50, 100]",
            "reason": "hybrid contract: fee, pool, half rolls over",
        },
    )
    editor.select_option("#control_0_policy", "spend_threshold")
    editor.click("button[value=preview]")
    assert editor.is_visible("[data-section=preview]")
    budget = editor.inner_text("[data-table=controls]")
    assert "budget" in budget and "spend_threshold" in budget and "100%" in budget
    current = editor.inner_text("[data-table=preview-current]")
    assert "Platform fee" in current and "45.00" in current and "Prepaid credit" in current
    assert editor.is_visible("[data-table=preview-last_closed]")
    snapshot(editor, artifacts, "form-preview")
    editor.click("button[value=submit]")
    editor.wait_for_url("**/dashboard/workspace/proposals/P-000001")
    assert editor.inner_text("[data-figure=state]") == "pending"
    assert "approver role" in editor.inner_text("[data-section=why-not]")
    assert editor.query_selector("button[value=approve]") is None
    snapshot(editor, artifacts, "proposal-editor")
    editor.context.close()

    approver = log_in(chromium, served, "abe")
    approver.goto(f"{served.url}/dashboard/workspace/proposals/P-000001")
    snapshot(approver, artifacts, "proposal-approver")
    approver.fill("#reason", "agreed with the customer")
    approver.click("button[value=approve]")
    approver.wait_for_url("**/dashboard/workspace/proposals/P-000001")
    assert approver.inner_text("[data-figure=state]") == "approved"
    assert approver.inner_text("[data-figure=revision]") == "2"
    snapshot(approver, artifacts, "proposal-approved")
    approver.goto(f"{served.url}/dashboard/workspace")
    assert "workspace P-000001" in approver.inner_text("[data-table=revisions]")
    snapshot(approver, artifacts, "history")
    approver.context.close()

    with served.api("read") as reader:
        draft = reader.get("/v1/customers/acme/invoices/draft").json()
        lines = {line["description"]: line["amount"] for line in draft["lines"]}
        assert lines["Platform fee (pro@1)"] == "45.00"
        assert any(d.startswith("Prepaid credit") and a == "9.00" for d, a in lines.items())
        proposal = reader.get("/v1/workspace/proposals/P-000001").json()
        assert proposal["change"]["controls"] == [
            {"key": "budget", "policy": "spend_threshold", "actions": ["alert"],
             "amount": 100000, "percents": [50, 100]}
        ]  # fmt: skip
        was = Decimal(before["remaining"]["credits"])
        wait_for(
            "the live balance to hold the new pool",
            lambda: (
                Decimal(reader.get("/v1/live/acme").json()["remaining"]["credits"]) == was + 1000
            ),
        )

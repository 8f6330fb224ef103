"""The finance dashboard in a real browser: the system Chromium (Playwright, headless)
against a real ``meterline serve`` process over a small real ledger (``conftest.py``).

Each test opens a fresh browser context (no cookies) and logs in through the form. A
full-page screenshot of every page goes to ``test-artifacts/dashboard/<page>.png``.
Figures are read back from the page as text: amounts are shown at the currency's minor
unit, so they are checked against the exact figures (read from the same ledger) rounded
by the display rule, and the exact figures are checked to add up.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from meterline.core.money import DISPLAY_ROUNDING, round_amount
from tests.browser.conftest import ARTIFACTS, Served

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORT = {"width": 1280, "height": 900}


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def snapshot(page: Any, name: str) -> Path:
    """A full-page screenshot of the page, checked to be on disk and not empty."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 0, path
    return path


USD_SHOWN = re.compile(r"-?\d{1,3}(,\d{3})*\.\d{2}")
"""A USD amount as a page shows it: thousands separated, exactly two decimals."""
EXPONENT = re.compile(r"\d(\.\d+)?[eE][+-]\d")
"""Exponent notation as Decimal or float text writes it (``0E-7``, ``1.5E+3``, ``1e-07``);
a hash's hex digits (``1e8``) are not."""


def amount(text: str) -> Decimal:
    """An amount as the page writes it (``1,234.50 USD``) as an exact decimal."""
    return Decimal(text.split()[0].replace(",", ""))


def cents(value: Decimal | str) -> Decimal:
    """An exact figure as the page must show it: at USD's minor unit, display rounding."""
    return round_amount(Decimal(value), "USD", DISPLAY_ROUNDING)


def exact_reports(served: Served) -> dict[str, Any]:
    """The revenue reports from the served ledger, exact (what ``--json`` prints)."""
    from meterline.billing.service import open_billing
    from meterline.finance.books import build_books
    from meterline.finance.reports import revenue_reports

    with open_billing(served.db) as billing:
        return revenue_reports(build_books(billing))


@pytest.fixture
def isolated(chromium: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) for one test."""
    opened = chromium.new_context(viewport=VIEWPORT)
    try:
        yield opened
    finally:
        opened.close()


def log_in(context: Any, served: Served, scope: str, start: str = "/dashboard") -> Any:
    """A page of ``context`` logged in with the ``scope`` key, at ``start``."""
    page = context.new_page()
    page.goto(served.url + start)
    page.fill("#key", served.keys[scope])
    page.click("button[type=submit]")
    page.wait_for_url(served.url + start)
    return page


def test_login_refuses_a_wrong_key_and_keeps_only_a_session_cookie(
    served: Served, isolated: Any
) -> None:
    page = isolated.new_page()
    page.goto(f"{served.url}/dashboard/revenue")
    # no session: every page sends the browser to the login form, remembering where
    assert page.url == f"{served.url}/dashboard/login?next=%2Fdashboard%2Frevenue"
    snapshot(page, "login")

    page.fill("#key", "mlk_0123456789abcdef_not-the-secret")
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        page.click("button[type=submit]")
    assert refused.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("That key was refused")
    assert isolated.cookies() == []

    page.fill("#key", served.keys["ingest"])  # a real key, without the read scope
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        page.click("button[type=submit]")
    assert refused.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("needs 'read'")
    assert isolated.cookies() == []

    page.fill("#key", served.keys["read"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{served.url}/dashboard/revenue")  # back where it was going
    [cookie] = isolated.cookies()
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/dashboard"
    secret = served.keys["read"].split("_", 2)[2]  # mlk_<key id>_<secret>; "_" may be in it
    assert secret not in cookie["value"] and cookie["value"] not in served.keys["read"]

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{served.url}/dashboard/login")
    assert isolated.cookies() == []
    page.goto(f"{served.url}/dashboard")
    assert page.url.startswith(f"{served.url}/dashboard/login")


def test_the_overview_shows_live_totals_the_margin_chart_and_negative_margins(
    served: Served, isolated: Any
) -> None:
    page = log_in(isolated, served, "admin")
    chart = page.locator("svg.chart-line")
    expect(chart).to_have_count(1)
    assert chart.locator("polyline").count() == 3  # revenue, cost, margin
    assert chart.locator("circle.point").count() > 3 * 28  # a point per day, two months
    revenue = amount(page.locator("[data-figure=revenue]").inner_text())
    cost = amount(page.locator("[data-figure=cost]").inner_text())
    margin = amount(page.locator("[data-figure=margin]").inner_text())
    assert revenue > 0 and cost > 0
    assert revenue - cost == margin  # exact, as printed
    negative = page.locator("table[data-table=negative] tbody tr")
    expect(negative).to_have_count(1)
    expect(negative).to_contain_text("initech")
    expect(negative).to_contain_text("negative margin")
    by_model = page.locator("table[data-table=by-model] tbody tr.flagged")
    expect(by_model).to_contain_text("large")
    snapshot(page, "overview")


def test_from_a_customer_down_to_one_events_verified_proof(served: Served, isolated: Any) -> None:
    page = log_in(isolated, served, "admin", "/dashboard/customers")
    rows = page.locator("table[data-table=customers] tbody tr[data-customer]")
    expect(rows).to_have_count(3)
    expect(page.locator("tr[data-customer=initech]")).to_contain_text("negative")
    snapshot(page, "customers")

    page.locator("tr[data-customer=acme]").get_by_role("link", name="acme").click()
    page.wait_for_url(f"{served.url}/dashboard/customers/acme")
    invoice_id = served.invoices["acme"]
    invoices = page.locator("table[data-table=invoices]")
    expect(invoices).to_contain_text(invoice_id)
    snapshot(page, "customer")

    invoices.get_by_role("link", name=invoice_id).click()
    page.wait_for_url(f"{served.url}/dashboard/invoices/{invoice_id}")
    expect(page.locator("[data-figure=total]")).to_contain_text("USD")
    usage = page.locator("table[data-table=lines] tr[data-kind=usage] a")
    assert usage.count() >= 2
    snapshot(page, "invoice")

    usage.first.click()
    page.wait_for_url(f"{served.url}/dashboard/invoices/{invoice_id}/lines/*")
    total = int(page.locator("[data-figure=events-total]").inner_text())
    events = page.locator("table[data-table=events] tbody tr")
    assert total > 0 and events.count() == min(total, 200)
    snapshot(page, "line")

    first = events.first.locator("a")
    event_id = first.inner_text()
    first.click()
    page.wait_for_url("**/proof?event=*")
    expect(page.locator("h1")).to_contain_text(event_id)
    expect(page.locator("[data-figure=verdict]")).to_have_text("verified")
    assert page.locator("table[data-table=path] tbody tr").count() >= 1
    snapshot(page, "proof")


def test_revenue_waterfall_and_roll_forward_add_up(served: Served, isolated: Any) -> None:
    """The revenue page shows the exact books rounded to cents, and the exact books add up."""
    page = log_in(isolated, served, "admin", "/dashboard/revenue")
    expect(page.locator("svg.chart-bars rect.bar").first).to_be_visible()

    # the page shows each exact figure rounded for display; the exact figures add up
    exact = exact_reports(served)
    waterfall = page.locator("table[data-table=waterfall]")
    months = waterfall.locator("tbody tr[data-month]")
    assert months.count() == len(exact["months"]) >= 1
    month_totals = {name: Decimal(v) for name, v in exact["waterfall_totals"].items()}
    for index in range(months.count()):
        month = months.nth(index).get_attribute("data-month") or ""
        shown = amount(months.nth(index).locator("td").last.inner_text())
        assert shown == cents(month_totals[month]), month
    grand_total = sum(month_totals.values(), Decimal(0))
    assert amount(waterfall.locator("tfoot th").last.inner_text()) == cents(grand_total)
    assert grand_total > 0

    rows = page.locator("table[data-table=rollforward] tbody tr[data-month]")
    assert rows.count() == len(exact["rollforward"]) >= 2
    closing_of: dict[tuple[str, str], Decimal] = {}
    for index, expected in enumerate(exact["rollforward"]):
        row = rows.nth(index)
        assert row.get_attribute("data-month") == expected["month"]
        assert row.get_attribute("data-account") == expected["account"]
        for name in ("opening", "billed", "recognized", "closing"):
            shown = amount(row.locator(f"[data-figure={name}]").inner_text())
            assert shown == cents(expected[name]), (name, row.inner_text())
        opening, billed = Decimal(expected["opening"]), Decimal(expected["billed"])
        recognized, closing = Decimal(expected["recognized"]), Decimal(expected["closing"])
        assert opening + billed - recognized == closing, expected
        account = expected["account"]
        if account in {a for _, a in closing_of}:
            previous = [v for (_, a), v in closing_of.items() if a == account][-1]
            assert opening == previous  # a month opens where the one before closed
        closing_of[(expected["month"], account)] = closing
    assert any(value != 0 for value in closing_of.values())

    expect(page.locator("table[data-table=trial-balance] + p")).to_have_text(
        "Debits equal credits."
    )
    snapshot(page, "revenue")


def test_controls_unblock_lifts_the_block(served: Served, isolated: Any, chromium: Any) -> None:
    # a read key sees the block but gets no button, and a posted form is refused
    reader_context = chromium.new_context(viewport=VIEWPORT)
    try:
        reader = log_in(reader_context, served, "read", "/dashboard/controls")
        expect(reader.locator("table[data-table=blocked] tr[data-customer=globex]")).to_have_count(
            1
        )
        expect(reader.get_by_role("button", name="Unblock")).to_have_count(0)
        csrf = reader.locator("input[name=csrf]").first.get_attribute("value")
        refused = reader_context.request.post(
            f"{served.url}/dashboard/controls/unblock",
            form={"csrf": csrf, "customer": "globex", "reason": "no"},
        )
        assert refused.status == 403
        assert "admin scope" in refused.text()
    finally:
        reader_context.close()

    page = log_in(isolated, served, "admin", "/dashboard/customers")
    expect(page.locator("tr[data-customer=globex] .status")).to_have_text("blocked")
    page.goto(f"{served.url}/dashboard/controls")
    blocked = page.locator("table[data-table=blocked] tr[data-customer=globex]")
    expect(blocked).to_contain_text("pool-empty")
    firings = page.locator("table[data-table=firings] tr[data-customer=globex]")
    expect(firings).to_contain_text("pool-empty")
    expect(firings).to_contain_text("block")
    # a form without this session's CSRF token does nothing
    forged = isolated.request.post(
        f"{served.url}/dashboard/controls/unblock",
        form={"customer": "globex", "reason": "forged"},
    )
    assert forged.status == 403
    expect(blocked).to_have_count(1)

    blocked.locator("input[name=reason]").fill("paid by wire, see ticket 42")
    blocked.get_by_role("button", name="Unblock").click()
    page.wait_for_url("**/dashboard/controls?unblocked=globex*")
    expect(page.locator("[data-section=notice]")).to_contain_text("globex unblocked")
    expect(page.locator("[data-section=notice]")).to_contain_text("now allowed")
    expect(page.locator("table[data-table=blocked] tr[data-customer=globex]")).to_have_count(0)
    snapshot(page, "controls")

    page.goto(f"{served.url}/dashboard/customers")
    expect(page.locator("tr[data-customer=globex] .status")).to_have_text("allowed")
    with served.api("read") as api:
        assert api.get("/v1/access/globex").json()["allowed"] is True
        [override] = api.get("/v1/customers/globex/overrides").json()["overrides"]
    assert override["kind"] == "unblock"
    assert override["reason"] == "paid by wire, see ticket 42"
    admin_key_id = served.keys["admin"].split("_")[1]
    assert override["actor"] == f"key {admin_key_id}"


def test_a_customer_bound_key_sees_only_its_customer(served: Served, isolated: Any) -> None:
    page = log_in(isolated, served, "read-acme", "/dashboard/customers")
    rows = page.locator("table[data-table=customers] tbody tr[data-customer]")
    expect(rows).to_have_count(1)
    expect(rows).to_have_attribute("data-customer", "acme")
    snapshot(page, "customers-bound")

    others = [served.invoices["globex"], served.invoices["initech"]]
    for path in (
        *(f"/dashboard/invoices/{invoice}" for invoice in others),
        f"/dashboard/invoices/{others[0]}/lines/2",
        f"/dashboard/invoices/{others[0]}/lines/2/proof?event=globex-llm-small-x-0",
        "/dashboard/customers/globex",
        "/dashboard/customers/initech",
    ):
        response = page.goto(served.url + path)
        assert response is not None and response.status == 404, path
        expect(page.locator("h1")).to_have_text("404")

    own = page.goto(f"{served.url}/dashboard/invoices/{served.invoices['acme']}")
    assert own is not None and own.status == 200
    for path in ("/dashboard", "/dashboard/revenue", "/dashboard/controls", "/dashboard/customers"):
        page.goto(served.url + path)
        text = page.locator("main").inner_text()
        assert "globex" not in text and "initech" not in text, path
    page.goto(f"{served.url}/dashboard/revenue")
    customers = page.locator("table[data-table=journal] tbody tr.entry-start td:nth-child(3)")
    assert customers.count() > 0
    assert set(customers.all_inner_texts()) == {"acme"}


def test_pages_show_usd_amounts_with_two_decimals_and_never_an_exponent(
    served: Served, isolated: Any
) -> None:
    """Every page's text and chart tooltips: no exponent notation; USD amounts in cents."""
    invoice = served.invoices["acme"]
    page = log_in(isolated, served, "admin")
    checked = 0
    for path in (
        "/dashboard",
        "/dashboard/customers",
        "/dashboard/customers/acme",
        f"/dashboard/invoices/{invoice}",
        f"/dashboard/invoices/{invoice}/lines/2",
        "/dashboard/revenue",
        "/dashboard/controls",
    ):
        page.goto(served.url + path)
        text = page.locator("main").inner_text()
        tooltips = page.locator("svg title").all_text_contents()
        assert not EXPONENT.search(text), (path, EXPONENT.search(text))
        assert not any(EXPONENT.search(tip) for tip in tooltips), path
        for match in re.finditer(r"(?<![\w.,:-])(-?\d[\d,]*(?:\.\d+)?) USD\b", text):
            assert USD_SHOWN.fullmatch(match.group(1)), (path, match.group(0))
            checked += 1
        # figures in a table whose currency is a column of its own, and the charts' labels
        for cell in page.locator(
            "table[data-table^=by-] td.number:nth-child(n+4):nth-child(-n+6),"
            " table[data-table=waterfall] td.number, table[data-table=rollforward] td.number,"
            " table[data-table=trial-balance] td.number, svg text.tick"
        ).all_text_contents():
            if cell.strip():  # a month without that account, a balance's other side
                assert USD_SHOWN.fullmatch(cell.strip()), (path, cell)
                checked += 1
        for tip in tooltips:
            if ": " in tip and re.search(r"\d", tip.rpartition(": ")[2]):
                assert USD_SHOWN.fullmatch(tip.rpartition(": ")[2]), (path, tip)
                checked += 1
    assert checked > 100  # the pages were full of amounts, and every one was in cents

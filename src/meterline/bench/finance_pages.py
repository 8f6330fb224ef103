"""``meterline bench finance``'s dashboard pages: each page's p95 load, in process.

The pages are ``benchmarks/dashboard_pages.py``'s (the overview, the customers, a
customer, one of its invoices and a line of it, revenue, controls, unbillable), loaded
through the server's own ASGI app (``api.app.create_app`` over the benchmark's ledger and
billing, its live engine in a worker process as ``meterline serve`` runs it; Starlette's
``TestClient``) with a session a real read key signed in. Before each timed load one new
event of the page's customer is ingested through ``POST /v1/events`` (an ingest key),
timed ``NEW_EVENT_BEFORE_US`` before the clock: the ledger moved, so the dashboard's cached
figures (``dashboard.derived``) are derived again, as under live ingest. Each page's first
load (the server's one-off work: the live engine starting, a first unbillable report) is
made first and reported apart.

Figures (milliseconds, nearest-rank p95 over ``repeats`` loads; ``prefix`` names the
ledger's state, e.g. ``page_`` with the month open and ``closed_page_`` after the close):
``{prefix}p95_ms`` ``{path: ms}`` and ``{prefix}first_ms`` ``{path: ms}``. Invariants:
every page must answer 200 (else the run fails: a timing of an error page is no figure);
the app is shut down (its keeper and live worker stopped) before this returns, and the
billing service stays open (it belongs to the caller).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

from meterline.bench.quantiles import percentile
from meterline.billing.service import Billing
from meterline.core.documents import line_lineage

NEW_EVENT_BEFORE_US = 60_000_000
"""A new event is timed this long before the clock (inside the open period, not late)."""
BASE_URL = "http://testserver"
"""The in-process client's origin (the login form must come from the same site)."""


def dashboard_pages(customer: str, invoice: str | None, line: int | None) -> list[str]:
    """The pages timed, ``benchmarks/dashboard_pages.py``'s list for ``customer`` (and
    ``invoice`` and its ``line`` when given: the invoice pages need a closed period)."""
    pages = ["/dashboard", "/dashboard/customers", f"/dashboard/customers/{customer}"]
    if invoice is not None:
        pages.append(f"/dashboard/invoices/{invoice}")
        if line is not None:
            pages.append(f"/dashboard/invoices/{invoice}/lines/{line}")
    pages += ["/dashboard/revenue", "/dashboard/controls", "/dashboard/unbillable"]
    return pages


def first_invoice(billing: Billing, customer: str) -> tuple[str | None, int | None]:
    """The customer's first finalized invoice and its first line with events behind it
    (None, None without one)."""
    invoices = billing.store.invoices(customer)
    if not invoices:
        return None, None
    stored = invoices[0]
    for number, line in enumerate(stored.record.lines, 1):
        lineage = line_lineage(line)
        if lineage is not None and lineage.events > 0:
            return stored.invoice_id, number
    return stored.invoice_id, None


def new_event(
    customer: str, now_us: int, number: int, prefix: str = "bench-page"
) -> dict[str, Any]:
    """A new event of ``customer`` (ids under ``prefix``), timed just before the clock."""
    from meterline.core.events import format_timestamp

    return {
        "id": f"{prefix}-{now_us}-{number}",
        "customer": customer,
        "type": "llm.completion",
        "timestamp": format_timestamp(now_us - NEW_EVENT_BEFORE_US + number),
        "properties": {"model": "gpt-4o", "input_tokens": 100, "output_tokens": 10},
    }


def time_pages(
    billing: Billing,
    customer: str,
    repeats: int,
    prefix: str = "page_",
    invoice: tuple[str | None, int | None] = (None, None),
    make_event: Callable[[str, int, int], dict[str, Any]] = new_event,
) -> dict[str, Any]:
    """Each dashboard page's first load and p95 over ``repeats`` loads, each after one new
    event of ``customer`` (see the module); ``invoice``: an invoice and line to show."""
    with warnings.catch_warnings():  # its httpx client is deprecated for httpx2: same use
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from meterline.api.app import create_app
    from meterline.keys import create_key

    now = billing.clock()
    _, read = create_key(billing.ledger.store, "read", now, name="bench pages")
    _, ingest = create_key(billing.ledger.store, "ingest", now, name="bench pages")
    pages = dashboard_pages(customer, *invoice)
    first: dict[str, float] = {}
    p95: dict[str, float] = {}
    app = create_app(billing.ledger, billing)
    counter = iter(range(10**9))
    with TestClient(app, base_url=BASE_URL, follow_redirects=False) as client:
        signed_in = client.post(
            "/dashboard/login",
            data={"key": read, "next": "/dashboard"},
            headers={"origin": BASE_URL},
        )
        if signed_in.status_code not in (302, 303):
            raise RuntimeError(f"the dashboard refused the read key: {signed_in.status_code}")
        authorization = {"Authorization": f"Bearer {ingest}"}

        def load(page: str) -> float:
            started = time.perf_counter()
            answer = client.get(page)
            elapsed = time.perf_counter() - started
            if answer.status_code != 200:
                raise RuntimeError(f"{page} answered {answer.status_code}")
            return elapsed

        for page in pages:
            first[page] = round(load(page) * 1000, 1)
        for page in pages:
            samples = []
            for _ in range(repeats):
                event = make_event(customer, billing.clock(), next(counter))
                client.post("/v1/events", json=[event], headers=authorization).raise_for_status()
                samples.append(load(page))
            p95[page] = round(percentile(sorted(samples), 0.95) * 1000, 1)
    return {f"{prefix}p95_ms": p95, f"{prefix}first_ms": first}

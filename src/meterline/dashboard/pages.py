"""The dashboard's pages, each a function of the dashboard and the key's principal (and
the page's parameters) to the template's context; and the unblock the controls page
posts. Run in a worker thread under billing's lock for reading (``Dashboard.page``);
the unblock holds it alone.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from markupsafe import Markup

from meterline.billing.service import BillingError
from meterline.core.documents import document_data
from meterline.core.economics import summarize
from meterline.core.events import decode_exact, format_timestamp
from meterline.core.lineage import verify_proof
from meterline.core.live_documents import plain
from meterline.core.rating import UNBILLABLE_REASONS
from meterline.dashboard import reads, views
from meterline.dashboard.reads import invoice_row
from meterline.dashboard.site import Dashboard, PageError, hidden, visible
from meterline.finance.books import Books
from meterline.finance.economics import OTHER_REVENUE
from meterline.keys import Principal
from meterline.live.control_engine import OverrideError, firing_document
from meterline.live.control_overrides import Override
from meterline.live.link import WorkerUnavailable

EVENTS_PAGE = 200
"""Events listed per page behind an invoice line (the count of all is shown)."""
JOURNAL_ROWS = 50
"""Journal entries listed on the revenue page (newest first; the count of all is shown)."""
CUSTOMER_JOURNAL_ROWS = 20

_NOT_USAGE = frozenset(OTHER_REVENUE.values())
"""The meter names usage slices give fees, commitment true-ups and discounts."""


def overview(dashboard: Dashboard, principal: Principal, period: str | None) -> dict[str, Any]:
    slices = reads.lines_of(dashboard, principal)  # a slice per line: no summary has day
    periods = sorted({item.period for item in slices})
    if period in periods:
        slices = [item for item in slices if item.period == period]
    else:
        period = None
    # the daily chart is usage: a period's fees land on its first day and would
    # dwarf every other day (they are in the totals and the tables)
    by_day = reads.daily_usage(dashboard, principal, period, _NOT_USAGE)
    currencies = sorted({item.currency for item in slices})
    by_customer = reads.summary_of(dashboard, principal, ["customer"], period, slices)
    shown = [customer for customer, _ in reads.customers_of(dashboard, principal)]
    live = [
        margin
        for answer in reads.figures_of(dashboard, shown).values()
        if (margin := views.live_margin(answer)) is not None
    ]
    return {
        "periods": periods,
        "period": period,
        "charts": [Markup(views.daily_chart(by_day, currency)) for currency in currencies],
        "live_totals": views.totals_by_currency(live, "live"),
        "live_enabled": dashboard.link is not None,
        "totals": views.totals_by_currency(by_customer, "rated"),
        "by_model": reads.summary_of(dashboard, principal, ["model"], period, slices),
        "by_product": reads.summary_of(dashboard, principal, ["product"], period, slices),
        "by_customer": by_customer,
        "negative": [margin for margin in by_customer if margin.negative],
    }


def customers(dashboard: Dashboard, principal: Principal) -> dict[str, Any]:
    known = reads.customers_of(dashboard, principal)
    answers = reads.figures_of(dashboard, [customer for customer, _ in known])  # one call
    rows = [
        views.customer_row(customer, plan, reads.blocks(dashboard, customer), answers[customer])
        for customer, plan in known
    ]
    return {"rows": rows, "live_enabled": dashboard.link is not None}


def customer(dashboard: Dashboard, principal: Principal, customer: str) -> dict[str, Any]:
    known = dict(reads.customers_of(dashboard, principal))
    invoices = dashboard.billing.store.invoices(customer) if visible(principal, customer) else []
    if customer not in known and not invoices:
        raise hidden(f"customer {customer!r}")
    figures = reads.figures(dashboard, customer)
    slices = dashboard.derived.customer_slices(customer)  # visible: checked above
    entries = dashboard.derived.books().for_customer(customer)
    overrides = dashboard.link.store.overrides(customer) if dashboard.link is not None else []
    return {
        "customer": customer,
        "row": views.customer_row(
            customer, known.get(customer, ""), reads.blocks(dashboard, customer), figures
        ),
        "lines": figures["lines"] if figures else [],
        "prepaid": figures["prepaid"] if figures else None,
        "currency": figures["currency"] if figures else "",
        "invoices": [invoice_row(stored) for stored in invoices],
        "by_period": sorted(summarize(slices, ["period"]), key=lambda m: m.key),
        "journal": views.journal_rows(entries, CUSTOMER_JOURNAL_ROWS),
        "journal_count": len(entries),
        "overrides": [
            {
                "id": record.override_id,
                "at": format_timestamp(record.at_us),
                "kind": record.kind,
                "policy": record.policy,
                "reason": record.reason,
                "actor": record.actor,
            }
            for record in reversed(overrides)
        ],
    }


def invoice(dashboard: Dashboard, principal: Principal, invoice_id: str) -> dict[str, Any]:
    stored = reads.visible_invoice(dashboard, principal, invoice_id)
    notes = dashboard.billing.store.credit_notes(invoice_id)
    return {
        "stored": invoice_row(stored),
        "document": document_data(stored.record),
        "sha256": stored.document_sha256.hex(),
        "revision": stored.revision,
        "through": str(dashboard.billing.invoice_cut(stored)),
        "notes": [
            {
                "id": note.note_id,
                "at": format_timestamp(note.created_at_us),
                "total": str(note.record.total),
                "reason": note.record.reason,
            }
            for note in notes
        ],
    }


def line(
    dashboard: Dashboard, principal: Principal, invoice_id: str, number: int, after: int
) -> dict[str, Any]:
    stored = reads.visible_invoice(dashboard, principal, invoice_id)
    document = stored.record
    line = reads.line_of(document, number)
    sequences = reads.sequences(dashboard, invoice_id, number)
    start = bisect_right(sequences, after)
    page = sequences[start : start + EVENTS_PAGE].tolist()
    events = dashboard.billing.customer_records(stored.customer, page) if page else []
    more = start + EVENTS_PAGE < len(sequences)
    return {
        "invoice_id": invoice_id,
        "document": document_data(document),
        "number": number,
        "line": document_data(line),
        "events": events,
        "events_total": len(sequences),
        "first_shown": start + 1 if events else 0,
        "last_shown": start + len(events),
        "next_after": page[-1] if more and page else None,
        "page_size": EVENTS_PAGE,
    }


def proof(
    dashboard: Dashboard, principal: Principal, invoice_id: str, number: int, event: str
) -> dict[str, Any]:
    stored = reads.visible_invoice(dashboard, principal, invoice_id)
    line = document_data(reads.line_of(stored.record, number))
    try:
        proof = dashboard.billing.proof(invoice_id, number, event)
    except BillingError as error:
        raise PageError(404, str(error)) from None
    problems = verify_proof(proof)
    body = decode_exact(proof["event"]["body"].encode())
    path = proof["path"]
    return {
        "invoice_id": invoice_id,
        "number": number,
        "line": line,
        "event_id": event,
        "event": body,
        "proof": proof,
        "path": [{"level": level + 1, "sibling": sibling} for level, sibling in enumerate(path)],
        "problems": problems,
        "verified": not problems,
    }


def revenue(dashboard: Dashboard, principal: Principal) -> dict[str, Any]:
    books = dashboard.derived.books()
    if principal.customer is not None:
        books = Books(books.for_customer(principal.customer), as_of=books.as_of)
    per_month = [
        (month, books.rollforwards(*views.month_bounds(month))) for month in books.months()
    ]
    tables = views.waterfall_tables(books.waterfall())
    return {
        "waterfalls": [{"table": table, "chart": Markup(table.chart)} for table in tables],
        "rollforwards": views.rollforward_rows(per_month),
        "trial": views.trial_balance(books.trial_balance()),
        "journal": views.journal_rows(books.entries, JOURNAL_ROWS),
        "journal_count": len(books.entries),
        "as_of": books.as_of.isoformat() if books.as_of else "",
    }


def controls(
    dashboard: Dashboard, principal: Principal, unblocked: str | None, override: str | None
) -> dict[str, Any]:
    if dashboard.link is None:
        return {"live_enabled": False, "firings": [], "blocked": [], "notice": None}
    only = principal.customer
    documents = [plain(firing_document(f)) for f in dashboard.link.store.firings(only)]
    with dashboard.link.lock:  # the link's reader thread updates the mirror
        states = dict(dashboard.link.states)
    blocked = [
        {"customer": customer, "blocks": views.block_views(blocks, format_timestamp)}
        for customer, (blocks, _) in sorted(states.items())
        if visible(principal, customer) and blocks
    ]
    notice = None
    if unblocked is not None and visible(principal, unblocked):
        answer = dashboard.link.access(unblocked)
        notice = {
            "customer": unblocked,
            "override": override or "",
            "allowed": answer.allowed,
            "reason": answer.reason,
        }
    return {
        "live_enabled": True,
        "firings": views.firing_rows(documents, dashboard.link.store.results()),
        "blocked": blocked,
        "notice": notice,
        "can_unblock": principal.scope == "admin",
    }


def unbillable(dashboard: Dashboard, principal: Principal) -> dict[str, Any]:
    document = dashboard.derived.unbillable()
    only = principal.customer
    if only is not None:
        document = {
            **document,
            "customers": [c for c in document["customers"] if c["customer"] == only],
            "failed": [f for f in document["failed"] if f["customer"] == only],
        }
        document["events"] = sum(c["events"] for c in document["customers"])
    return {"view": views.unbillable_view(document, UNBILLABLE_REASONS)}


def unblock(dashboard: Dashboard, principal: Principal, customer: str, reason: str) -> str:
    """The override the HTTP API's unblock makes, by this key; returns its id."""
    if dashboard.link is None:
        raise PageError(503, "The live engine is not running.")
    principal.require("admin", "unblock")
    if not visible(principal, customer):
        raise hidden(f"customer {customer!r}")
    try:
        with dashboard.billing.lock.writing():
            request = Override(customer, "unblock", reason, f"key {principal.key_id}")
            record = dashboard.link.override(request)
    except OverrideError as error:
        raise PageError(422, str(error)) from None
    except WorkerUnavailable as error:
        raise PageError(503, f"The live engine is not answering ({error}); retry.") from None
    return record.override_id

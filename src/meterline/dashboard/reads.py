"""What the dashboard's pages read: the customers a key may see, live figures and
blocks from the live front, usage slices, a visible invoice and its lines, the events
behind a line. Run in a worker thread, under billing's lock for reading.

Tenancy: a key bound to a customer sees only that customer; anything else is hidden
exactly as if it did not exist (``site.hidden``: 404).
"""

from __future__ import annotations

from array import array
from typing import Any

from meterline.billing.service import BillingError
from meterline.core.control_policies import Block
from meterline.core.documents import Invoice, InvoiceLine, line_lineage
from meterline.core.economics import Margin, UsageSlice, summarize
from meterline.core.events import format_timestamp
from meterline.core.live_documents import plain
from meterline.dashboard import views
from meterline.dashboard.site import Dashboard, PageError, hidden, visible
from meterline.keys import Principal
from meterline.ledger.billing_records import StoredInvoice


def customers_of(dashboard: Dashboard, principal: Principal) -> list[tuple[str, str]]:
    """Every customer with a contract (and its plan now) this key may see."""
    loaded = dashboard.billing.load()
    now = dashboard.billing.clock()
    plans: dict[str, str] = {}
    if loaded is not None:
        for contract in loaded.configuration.contracts:
            plan = contract.plan
            for amendment in contract.amendments:
                if amendment.effective_us <= now:
                    plan = amendment.plan
            if contract.active_at(now) or contract.customer not in plans:
                plans[contract.customer] = plan
    if dashboard.link is not None:
        for customer in dashboard.link.customers:
            plans.setdefault(customer, "")
    return sorted((c, p) for c, p in plans.items() if visible(principal, c))


def figures(dashboard: Dashboard, customer: str) -> dict[str, Any] | None:
    """The customer's live figures (the live engine's) as plain data for the pages, or
    None without one or when the customer cannot be rated now (the unbillable page names
    it and why)."""
    if dashboard.link is None:
        return None
    try:
        answer = dashboard.link.figures(customer)
    except BillingError:
        return None
    return answer if answer is None or isinstance(answer, dict) else plain(answer)


def figures_of(dashboard: Dashboard, customers: list[str]) -> dict[str, dict[str, Any] | None]:
    """``figures`` of each of ``customers``, in one call to the live worker when the live
    front answers many at once (``figures_of``), else one by one."""
    if dashboard.link is None:
        return dict.fromkeys(customers)
    many = getattr(dashboard.link, "figures_of", None)
    if many is None:
        return {customer: figures(dashboard, customer) for customer in customers}
    answers = many(customers)
    return {
        customer: answer if answer is None or isinstance(answer, dict) else plain(answer)
        for customer, answer in ((customer, answers.get(customer)) for customer in customers)
    }


def blocks(dashboard: Dashboard, customer: str) -> list[views.BlockView]:
    """The customer's active blocks, from the server's mirror of the live engine."""
    if dashboard.link is None:
        return []
    found: tuple[Block, ...] = dashboard.link.states.get(customer, ((), {}))[0]
    return views.block_views(found, format_timestamp)


def slices_of(dashboard: Dashboard, principal: Principal) -> list[UsageSlice]:
    if principal.customer is None:
        return dashboard.derived.slices()
    return dashboard.derived.customer_slices(principal.customer)


def lines_of(dashboard: Dashboard, principal: Principal) -> list[UsageSlice]:
    """The visible slices, one per line (every customer's kept lines; a customer's own
    day slices): for summaries without ``day``."""
    if principal.customer is None:
        return dashboard.derived.lines()
    return dashboard.derived.customer_slices(principal.customer)


def summary_of(
    dashboard: Dashboard,
    principal: Principal,
    by: list[str],
    period: str | None,
    slices: list[UsageSlice],
) -> list[Margin]:
    """The visible ``slices`` (those of ``period`` when given) summarized ``by``: every
    customer's from kept per-customer summaries (``Derived.summary``), a customer's own
    from ``slices``."""
    if principal.customer is None:
        return dashboard.derived.summary(by, period)
    return summarize(slices, by)


def daily_usage(
    dashboard: Dashboard, principal: Principal, period: str | None, without: frozenset[str]
) -> list[Margin]:
    """The visible slices of ``period`` (all when None) whose meter is not in ``without``,
    summarized by day (every customer's from kept per-customer summaries)."""
    if principal.customer is None:
        return dashboard.derived.summary(["day"], period, without)
    chosen = dashboard.derived.customer_slices(principal.customer)
    return summarize(
        [s for s in chosen if (period is None or s.period == period) and s.meter not in without],
        ["day"],
    )


def visible_invoice(dashboard: Dashboard, principal: Principal, invoice_id: str) -> StoredInvoice:
    stored = dashboard.billing.store.invoice(invoice_id)
    if stored is None or not visible(principal, stored.customer):
        raise hidden(f"invoice {invoice_id!r}")
    return stored


def line_of(document: Invoice, number: int) -> InvoiceLine:
    lines = document.lines
    if not 1 <= number <= len(lines):
        raise PageError(404, f"Invoice {document.number} has lines 1 to {len(lines)}.")
    line = lines[number - 1]
    lineage = line_lineage(line)
    if lineage is None or lineage.events <= 0:
        raise PageError(
            404,
            f"Line {number} is a {line.kind} line: only usage and adjustment lines"
            " have events behind them.",
        )
    return line


def sequences(dashboard: Dashboard, invoice_id: str, number: int) -> array[int]:
    """The ledger sequences behind a finalized line, ascending (cached: immutable)."""
    return dashboard.line_sequences(invoice_id, number)


def invoice_row(stored: StoredInvoice) -> dict[str, Any]:
    document = stored.record
    return {
        "id": stored.invoice_id,
        "customer": stored.customer,
        "kind": stored.kind,
        "period_start": format_timestamp(stored.period_start_us)[:10],
        "period_end": format_timestamp(stored.period_end_us)[:10],
        "finalized_at": format_timestamp(stored.finalized_at_us),
        "total": str(document.total),
        "currency": document.currency,
    }

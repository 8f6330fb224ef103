"""The finance dashboard's routes under ``/dashboard`` (the imperative shell).

Each page handler: find the login session (else redirect to the login page), read what
the page needs from billing, the books and the live engine in a worker thread (under the
billing routes' read gate, since billing shares one SQLite connection between threads),
shape it with ``views`` and render a Jinja2 template (autoescaped). Nothing here calls
the HTTP API: the pages use the same library calls the API's routes do.

Tenancy is the API's: a key bound to a customer sees only that customer's customers row,
invoices, lines, events, proofs, margins, journal and firings; anything else answers 404
exactly as if it did not exist. Unblocking is the override ``POST
/v1/customers/{customer}/overrides`` makes, and needs the same ``admin`` scope.

Unit economics re-rate the ledger (seconds on a large one), so ``Derived`` keeps the
usage slices and the books until what they are made of moves: the ledger head, the
invoices, credit notes, grants, the pricing revision, or the day (revenue is recognized
by day).
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.responses import Response
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from meterline.billing.line_cache import LineSequences
from meterline.billing.service import Billing, BillingError, NotFound
from meterline.billing.unbillable_report import unbillable_report
from meterline.core.controls import Block
from meterline.core.economics import UsageSlice, summarize
from meterline.core.events import decode_exact, format_timestamp
from meterline.core.lineage import verify_proof
from meterline.core.rating import UNBILLABLE_REASONS
from meterline.dashboard import views
from meterline.dashboard.sessions import (
    COOKIE_NAME,
    COOKIE_PATH,
    SESSION_LIFETIME_S,
    Session,
    SessionStore,
)
from meterline.errors import AuthError, MeterlineError, ScopeError
from meterline.finance.books import Books, build_books
from meterline.finance.economics import OTHER_REVENUE, usage_slices
from meterline.keys import Principal, authenticate
from meterline.ledger.billing import StoredInvoice
from meterline.ledger.ledger import Ledger
from meterline.live.controls import OverrideError, firing_document
from meterline.live.front import LiveFront
from meterline.live.link import WorkerUnavailable

PREFIX = "/dashboard"
EVENTS_PAGE = 200
"""Events listed per page behind an invoice line (the count of all is shown)."""
JOURNAL_ROWS = 50
"""Journal entries listed on the revenue page (newest first; the count of all is shown)."""
CUSTOMER_JOURNAL_ROWS = 20
FORM_BYTES_MAX = 8 * 1024
UNBLOCK_REASON = "unblocked from the dashboard"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""On every dashboard page: no script, no inline style, no framing, nothing cached."""

NAVIGATION = (
    ("overview", "Overview", PREFIX),
    ("customers", "Customers", f"{PREFIX}/customers"),
    ("revenue", "Revenue", f"{PREFIX}/revenue"),
    ("controls", "Controls", f"{PREFIX}/controls"),
    ("unbillable", "Unbillable", f"{PREFIX}/unbillable"),
)

_NOT_USAGE = frozenset(OTHER_REVENUE.values())
"""The meter names usage slices give fees, commitment true-ups and discounts."""

Guard = Callable[[], AbstractContextManager[Any]]


@contextmanager
def _unguarded() -> Iterator[None]:
    yield


class PageError(MeterlineError):
    """A page that cannot be shown: its status and a sentence for the reader."""

    code = "page_error"

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.http_status = status_code
        self.message = message


def _hidden(what: str) -> PageError:
    """Not found, or not this key's: the same answer either way."""
    return PageError(404, f"No {what} here.")


# -- derived figures, cached ----------------------------------------------------------------


@dataclass
class _Cached:
    version: tuple[Any, ...]
    value: Any


class Derived:
    """Usage slices and the books, derived again only when their inputs moved.

    The caller holds the billing read gate (``read_guard``); one lock per figure makes
    concurrent page loads wait for one derivation rather than run two.
    """

    def __init__(self, billing: Billing, ledger: Ledger) -> None:
        self.billing = billing
        self.ledger = ledger
        self._slices: _Cached | None = None
        self._books: _Cached | None = None
        self._unbillable: _Cached | None = None
        self._slices_lock = threading.Lock()
        self._books_lock = threading.Lock()
        self._unbillable_lock = threading.Lock()

    def version(self) -> tuple[Any, ...]:
        """What the figures are made of: the ledger's cut, the count of invoices, credit
        notes and grants, the pricing revision, and today's date (UTC)."""
        store = self.billing.store
        revision = store.revision()
        return (
            self.ledger.store.cut(),
            len(store.invoices()),
            len(store.credit_notes()),
            len(store.grants()),
            None if revision is None else revision.revision,
            datetime.fromtimestamp(self.billing.clock() / 1e6, UTC).date(),
        )

    def slices(self) -> list[UsageSlice]:
        with self._slices_lock:
            version = self.version()
            if self._slices is None or self._slices.version != version:
                self._slices = _Cached(version, usage_slices(self.billing))
            result: list[UsageSlice] = self._slices.value
            return result

    def unbillable(self) -> dict[str, Any]:
        """The unbillable usage report of every customer (``billing.unbillable``)."""
        with self._unbillable_lock:
            version = self.version()
            if self._unbillable is None or self._unbillable.version != version:
                report = unbillable_report(self.billing)
                self._unbillable = _Cached(version, report.as_dict())
            result: dict[str, Any] = self._unbillable.value
            return result

    def books(self) -> Books:
        with self._books_lock:
            version = self.version()
            if self._books is None or self._books.version != version:
                self._books = _Cached(version, build_books(self.billing))
            result: Books = self._books.value
            return result


# -- the dashboard --------------------------------------------------------------------------


def _templates() -> Environment:
    environment = Environment(
        loader=PackageLoader("meterline.dashboard", "templates"),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        money=views.money,
        quantity=views.quantity,
        percent=views.percent,
        short_hash=views.short_hash,
        key_label=views.key_label,
        compact_json=views.compact_json,
        group_text=views.group_text,
        urlpart=lambda value: quote(str(value), safe=""),
    )
    environment.tests.update(eventful=views.has_events, negative=views.is_negative)
    return environment


def _local_path(value: str | None) -> str:
    """Where to go after login: a dashboard path on this site, never elsewhere."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX


def _visible(principal: Principal, customer: str) -> bool:
    return principal.customer in (None, customer)


class Dashboard:
    """The pages over one billing service, ledger and (optionally) live engine."""

    def __init__(
        self,
        billing: Billing,
        ledger: Ledger,
        link: LiveFront | None,
        read_guard: Guard = _unguarded,
        write_guard: Guard = _unguarded,
        sessions: SessionStore | None = None,
    ) -> None:
        self.billing = billing
        self.ledger = ledger
        self.link = link
        self.read_guard = read_guard
        self.write_guard = write_guard
        self.sessions = sessions or SessionStore(ledger.clock)
        self.derived = Derived(billing, ledger)
        self.templates = _templates()
        static = files("meterline.dashboard").joinpath("static")
        self.assets = {
            "dashboard.css": (static.joinpath("dashboard.css").read_bytes(), "text/css"),
            "favicon.svg": (static.joinpath("favicon.svg").read_bytes(), "image/svg+xml"),
        }
        self._line_sequences = LineSequences(self.billing)

    # -- sessions and responses ------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        """The request's live session, if its key was not revoked since login."""
        session = self.sessions.get(request.cookies.get(COOKIE_NAME))
        if session is None:
            return None
        stored = self.ledger.store.get_key(session.principal.key_id)
        if stored is None or stored[3] is not None:
            self.sessions.close_key(session.principal.key_id)
            return None
        return session

    def render(
        self,
        template: str,
        context: dict[str, Any],
        session: Session | None,
        status_code: int = 200,
        page: str = "",
    ) -> Response:
        body = self.templates.get_template(template).render(
            **context,
            session=session,
            principal=None if session is None else session.principal,
            navigation=NAVIGATION,
            page=page,
            prefix=PREFIX,
        )
        return Response(body, status_code, dict(SECURITY_HEADERS), media_type="text/html")

    def error_page(self, session: Session | None, error: PageError) -> Response:
        return self.render(
            "error.html", {"status": error.status_code, "message": error.message}, session,
            error.status_code,
        )  # fmt: skip

    @staticmethod
    def redirect(location: str) -> Response:
        return Response(status_code=303, headers={"Location": location, **SECURITY_HEADERS})

    def to_login(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return self.redirect(f"{PREFIX}/login?{urlencode({'next': target})}")

    async def page(
        self,
        request: Request,
        template: str,
        page: str,
        build: Callable[..., dict[str, Any]],
        *args: Any,
    ) -> Response:
        """A page behind login: ``build(principal, *args)`` in a worker thread, rendered."""
        session = self.session_of(request)
        if session is None:
            return self.to_login(request)
        try:
            context = await to_thread.run_sync(self._reading, build, session.principal, *args)
        except PageError as error:
            return self.error_page(session, error)
        return self.render(template, context, session, page=page)

    def _reading(self, build: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        try:
            with self.read_guard():
                return build(*args)
        except NotFound as error:
            raise PageError(404, str(error)) from None
        except WorkerUnavailable as error:
            raise PageError(503, f"The live engine is not answering ({error}); retry.") from None

    # -- forms ----------------------------------------------------------------------------

    @staticmethod
    async def form(request: Request) -> dict[str, str]:
        """A small url-encoded form (the only kind the pages post), first value per field."""
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise PageError(415, "Send the form as application/x-www-form-urlencoded.")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > FORM_BYTES_MAX:
                raise PageError(413, "The form is too large.")
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise PageError(400, "The form could not be read.") from None
        return {name: values[0] for name, values in parsed.items()}

    @staticmethod
    def same_origin(request: Request) -> bool:
        """A browser's POST names its origin: refuse one from another site."""
        origin = request.headers.get("origin")
        return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"

    # -- what the pages read --------------------------------------------------------------

    def customers_of(self, principal: Principal) -> list[tuple[str, str]]:
        """Every customer with a contract (and its plan now) this key may see."""
        loaded = self.billing.load()
        now = self.billing.clock()
        plans: dict[str, str] = {}
        if loaded is not None:
            for contract in loaded.configuration.contracts:
                plan = contract.plan
                for amendment in contract.amendments:
                    if amendment.effective_us <= now:
                        plan = amendment.plan
                if contract.active_at(now) or contract.customer not in plans:
                    plans[contract.customer] = plan
        if self.link is not None:
            for customer in self.link.customers:
                plans.setdefault(customer, "")
        return sorted((c, p) for c, p in plans.items() if _visible(principal, c))

    def figures(self, customer: str) -> dict[str, Any] | None:
        """The customer's live figures (the live engine's), or None without one or when
        the customer cannot be rated now (the unbillable page names it and why)."""
        if self.link is None:
            return None
        try:
            return self.link.figures(customer)
        except BillingError:
            return None

    def blocks(self, customer: str) -> list[views.BlockView]:
        """The customer's active blocks, from the server's mirror of the live engine."""
        if self.link is None:
            return []
        found: tuple[Block, ...] = self.link.states.get(customer, ((), {}))[0]
        return views.block_views(found, format_timestamp)

    def slices_of(self, principal: Principal) -> list[UsageSlice]:
        slices = self.derived.slices()
        if principal.customer is None:
            return slices
        return [item for item in slices if item.customer == principal.customer]

    def visible_invoice(self, principal: Principal, invoice_id: str) -> StoredInvoice:
        stored = self.billing.store.invoice(invoice_id)
        if stored is None or not _visible(principal, stored.customer):
            raise _hidden(f"invoice {invoice_id!r}")
        return stored

    def line_of(self, document: dict[str, Any], number: int) -> dict[str, Any]:
        lines = document["lines"]
        if not 1 <= number <= len(lines):
            raise PageError(404, f"Invoice {document['number']} has lines 1 to {len(lines)}.")
        line: dict[str, Any] = lines[number - 1]
        if not views.has_events(line):
            raise PageError(
                404,
                f"Line {number} is a {line['kind']} line: only usage and adjustment lines"
                " have events behind them.",
            )
        return line

    def sequences(self, invoice_id: str, number: int) -> array[int]:
        """The ledger sequences behind a finalized line, ascending (cached: immutable)."""
        return self._line_sequences(invoice_id, number)

    # -- page builders (run in a worker thread, under the read gate) ------------------------

    def overview(self, principal: Principal, period: str | None) -> dict[str, Any]:
        slices = self.slices_of(principal)
        periods = sorted({item.period for item in slices})
        if period in periods:
            slices = [item for item in slices if item.period == period]
        else:
            period = None
        # the daily chart is usage: a period's fees land on its first day and would
        # dwarf every other day (they are in the totals and the tables)
        usage = [item for item in slices if item.meter not in _NOT_USAGE]
        by_day = summarize(usage, ["day"])
        currencies = sorted({item.currency for item in slices})
        by_customer = summarize(slices, ["customer"])
        live = [
            margin
            for customer, _ in self.customers_of(principal)
            if (margin := views.live_margin(self.figures(customer))) is not None
        ]
        return {
            "periods": periods,
            "period": period,
            "charts": [Markup(views.daily_chart(by_day, currency)) for currency in currencies],
            "live_totals": views.totals_by_currency(live, "live"),
            "live_enabled": self.link is not None,
            "totals": views.totals_by_currency(by_customer, "rated"),
            "by_model": summarize(slices, ["model"]),
            "by_product": summarize(slices, ["product"]),
            "by_customer": by_customer,
            "negative": [margin for margin in by_customer if margin.negative],
        }

    def customers(self, principal: Principal) -> dict[str, Any]:
        rows = [
            views.customer_row(customer, plan, self.blocks(customer), self.figures(customer))
            for customer, plan in self.customers_of(principal)
        ]
        return {"rows": rows, "live_enabled": self.link is not None}

    def customer(self, principal: Principal, customer: str) -> dict[str, Any]:
        known = dict(self.customers_of(principal))
        invoices = self.billing.store.invoices(customer) if _visible(principal, customer) else []
        if customer not in known and not invoices:
            raise _hidden(f"customer {customer!r}")
        figures = self.figures(customer)
        slices = [item for item in self.slices_of(principal) if item.customer == customer]
        entries = self.derived.books().for_customer(customer)
        overrides = self.link.store.overrides(customer) if self.link is not None else []
        return {
            "customer": customer,
            "row": views.customer_row(
                customer, known.get(customer, ""), self.blocks(customer), figures
            ),
            "lines": figures["lines"] if figures else [],
            "prepaid": figures["prepaid"] if figures else None,
            "currency": figures["currency"] if figures else "",
            "invoices": [_invoice_row(stored) for stored in invoices],
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

    def invoice(self, principal: Principal, invoice_id: str) -> dict[str, Any]:
        stored = self.visible_invoice(principal, invoice_id)
        document = decode_exact(stored.document)
        notes = self.billing.store.credit_notes(invoice_id)
        return {
            "stored": _invoice_row(stored),
            "document": document,
            "sha256": stored.document_sha256.hex(),
            "revision": stored.revision,
            "through": str(self.billing.invoice_cut(stored)),
            "notes": [
                {
                    "id": note.note_id,
                    "at": format_timestamp(note.created_at_us),
                    "total": decode_exact(note.document).get("total"),
                    "reason": decode_exact(note.document).get("reason", ""),
                }
                for note in notes
            ],
        }

    def line(
        self, principal: Principal, invoice_id: str, number: int, after: int
    ) -> dict[str, Any]:
        stored = self.visible_invoice(principal, invoice_id)
        document = decode_exact(stored.document)
        line = self.line_of(document, number)
        sequences = self.sequences(invoice_id, number)
        start = bisect_right(sequences, after)
        page = sequences[start : start + EVENTS_PAGE].tolist()
        events = self.billing.customer_records(stored.customer, page) if page else []
        more = start + EVENTS_PAGE < len(sequences)
        return {
            "invoice_id": invoice_id,
            "document": document,
            "number": number,
            "line": line,
            "events": events,
            "events_total": len(sequences),
            "first_shown": start + 1 if events else 0,
            "last_shown": start + len(events),
            "next_after": page[-1] if more and page else None,
            "page_size": EVENTS_PAGE,
        }

    def proof(
        self, principal: Principal, invoice_id: str, number: int, event: str
    ) -> dict[str, Any]:
        stored = self.visible_invoice(principal, invoice_id)
        line = self.line_of(decode_exact(stored.document), number)
        try:
            proof = self.billing.proof(invoice_id, number, event)
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
            "path": [
                {"level": level + 1, "sibling": sibling} for level, sibling in enumerate(path)
            ],
            "problems": problems,
            "verified": not problems,
        }

    def revenue(self, principal: Principal) -> dict[str, Any]:
        books = self.derived.books()
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
        self, principal: Principal, unblocked: str | None, override: str | None
    ) -> dict[str, Any]:
        if self.link is None:
            return {"live_enabled": False, "firings": [], "blocked": [], "notice": None}
        only = principal.customer
        documents = [firing_document(f) for f in self.link.store.firings(only)]
        with self.link.lock:  # the link's reader thread updates the mirror
            states = dict(self.link.states)
        blocked = [
            {"customer": customer, "blocks": views.block_views(blocks, format_timestamp)}
            for customer, (blocks, _) in sorted(states.items())
            if _visible(principal, customer) and blocks
        ]
        notice = None
        if unblocked is not None and _visible(principal, unblocked):
            answer = self.link.access(unblocked)
            notice = {
                "customer": unblocked,
                "override": override or "",
                "allowed": answer["allowed"],
                "reason": answer["reason"],
            }
        return {
            "live_enabled": True,
            "firings": views.firing_rows(documents, self.link.store.results()),
            "blocked": blocked,
            "notice": notice,
            "can_unblock": principal.scope == "admin",
        }

    def unbillable(self, principal: Principal) -> dict[str, Any]:
        document = self.derived.unbillable()
        only = principal.customer
        if only is not None:
            document = {
                **document,
                "customers": [c for c in document["customers"] if c["customer"] == only],
                "failed": [f for f in document["failed"] if f["customer"] == only],
            }
            document["events"] = sum(c["events"] for c in document["customers"])
        return {"view": views.unbillable_view(document, UNBILLABLE_REASONS)}

    def unblock(self, principal: Principal, customer: str, reason: str) -> str:
        """The override the HTTP API's unblock makes, by this key; returns its id."""
        if self.link is None:
            raise PageError(503, "The live engine is not running.")
        principal.require("admin", "unblock")
        if not _visible(principal, customer):
            raise _hidden(f"customer {customer!r}")
        try:
            with self.write_guard():
                record = self.link.override(customer, "unblock", reason, f"key {principal.key_id}")
        except OverrideError as error:
            raise PageError(422, str(error)) from None
        except WorkerUnavailable as error:
            raise PageError(503, f"The live engine is not answering ({error}); retry.") from None
        return record.override_id


def _invoice_row(stored: StoredInvoice) -> dict[str, Any]:
    document = decode_exact(stored.document)
    return {
        "id": stored.invoice_id,
        "customer": stored.customer,
        "kind": stored.kind,
        "period_start": format_timestamp(stored.period_start_us)[:10],
        "period_end": format_timestamp(stored.period_end_us)[:10],
        "finalized_at": format_timestamp(stored.finalized_at_us),
        "total": document.get("total"),
        "currency": document.get("currency", ""),
    }


def _integer(value: str | None, default: int = 0) -> int:
    if value is None or not value.isdigit() or len(value) > 18:
        return default
    return int(value)


def mount_dashboard(
    app: FastAPI,
    billing: Billing,
    link: LiveFront | None,
    ledger: Ledger,
    read_guard: Guard = _unguarded,
    write_guard: Guard = _unguarded,
) -> Dashboard:
    """Add the dashboard's routes under ``/dashboard`` to ``app`` (guards: ``Billing.lock``)."""
    dashboard = Dashboard(billing, ledger, link, read_guard, write_guard)
    app.state.dashboard = dashboard

    @app.get(f"{PREFIX}/static/{{name}}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in dashboard.assets:
            return Response(status_code=404)
        content, media_type = dashboard.assets[name]
        return Response(
            content,
            media_type=media_type,
            headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    @app.get(f"{PREFIX}/login", include_in_schema=False)
    async def login_form(request: Request, next: str | None = None) -> Response:
        session = dashboard.session_of(request)
        if session is not None:
            return dashboard.redirect(_local_path(next))
        return dashboard.render("login.html", {"next": _local_path(next), "error": None}, None)

    @app.post(f"{PREFIX}/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if not dashboard.same_origin(request):
            return dashboard.error_page(None, PageError(403, "Cross-site form refused."))
        try:
            form = await dashboard.form(request)
        except PageError as error:
            return dashboard.error_page(None, error)
        target = _local_path(form.get("next"))
        try:
            principal = await to_thread.run_sync(
                authenticate, ledger.store, form.get("key", "").strip()
            )
            principal.require("read", "the dashboard")
        except (AuthError, ScopeError) as error:
            message = (
                str(error)
                if isinstance(error, ScopeError)
                else "That key was refused: unknown, revoked or mistyped."
            )
            return dashboard.render("login.html", {"next": target, "error": message}, None, 401)
        token, _ = dashboard.sessions.open(principal)
        response = dashboard.redirect(target)
        response.set_cookie(
            COOKIE_NAME,
            token,
            max_age=SESSION_LIFETIME_S,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @app.post(f"{PREFIX}/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        session = dashboard.session_of(request)
        if session is not None:
            try:
                form = await dashboard.form(request)
            except PageError as error:
                return dashboard.error_page(session, error)
            if not session.csrf_matches(form.get("csrf")):
                return dashboard.error_page(session, PageError(403, "The form expired; reload."))
            dashboard.sessions.close(request.cookies.get(COOKIE_NAME))
        response = dashboard.redirect(f"{PREFIX}/login")
        response.delete_cookie(COOKIE_NAME, path=COOKIE_PATH)
        return response

    @app.get(PREFIX, include_in_schema=False)
    async def overview(request: Request, period: str | None = None) -> Response:
        return await dashboard.page(
            request, "overview.html", "overview", dashboard.overview, period
        )

    @app.get(f"{PREFIX}/customers", include_in_schema=False)
    async def customers(request: Request) -> Response:
        return await dashboard.page(request, "customers.html", "customers", dashboard.customers)

    @app.get(f"{PREFIX}/customers/{{customer:path}}", include_in_schema=False)
    async def customer(request: Request, customer: str) -> Response:
        return await dashboard.page(
            request, "customer.html", "customers", dashboard.customer, customer
        )

    @app.get(f"{PREFIX}/invoices/{{invoice_id}}", include_in_schema=False)
    async def invoice(request: Request, invoice_id: str) -> Response:
        return await dashboard.page(
            request, "invoice.html", "customers", dashboard.invoice, invoice_id
        )

    @app.get(f"{PREFIX}/invoices/{{invoice_id}}/lines/{{number}}", include_in_schema=False)
    async def line(
        request: Request, invoice_id: str, number: str, after: str | None = None
    ) -> Response:
        return await dashboard.page(
            request, "line.html", "customers", dashboard.line, invoice_id, _integer(number),
            _integer(after),
        )  # fmt: skip

    @app.get(f"{PREFIX}/invoices/{{invoice_id}}/lines/{{number}}/proof", include_in_schema=False)
    async def proof(request: Request, invoice_id: str, number: str, event: str = "") -> Response:
        return await dashboard.page(
            request, "proof.html", "customers", dashboard.proof, invoice_id, _integer(number),
            event,
        )  # fmt: skip

    @app.get(f"{PREFIX}/revenue", include_in_schema=False)
    async def revenue(request: Request) -> Response:
        return await dashboard.page(request, "revenue.html", "revenue", dashboard.revenue)

    @app.get(f"{PREFIX}/controls", include_in_schema=False)
    async def controls(
        request: Request, unblocked: str | None = None, override: str | None = None
    ) -> Response:
        return await dashboard.page(
            request, "controls.html", "controls", dashboard.controls, unblocked, override
        )

    @app.get(f"{PREFIX}/unbillable", include_in_schema=False)
    async def unbillable(request: Request) -> Response:
        return await dashboard.page(request, "unbillable.html", "unbillable", dashboard.unbillable)

    @app.post(f"{PREFIX}/controls/unblock", include_in_schema=False)
    async def unblock(request: Request) -> Response:
        session = dashboard.session_of(request)
        if session is None:
            return dashboard.redirect(f"{PREFIX}/login")
        try:
            if not dashboard.same_origin(request):
                raise PageError(403, "Cross-site form refused.")
            form = await dashboard.form(request)
            if not session.csrf_matches(form.get("csrf")):
                raise PageError(403, "The form expired; reload the page and try again.")
            customer = form.get("customer", "")
            reason = form.get("reason", "").strip() or UNBLOCK_REASON
            override_id = await to_thread.run_sync(
                dashboard.unblock, session.principal, customer, reason
            )
        except ScopeError:
            return dashboard.error_page(
                session, PageError(403, "Unblocking needs a key with the admin scope.")
            )
        except PageError as error:
            return dashboard.error_page(session, error)
        query = urlencode({"unblocked": customer, "override": override_id})
        return dashboard.redirect(f"{PREFIX}/controls?{query}")

    return dashboard

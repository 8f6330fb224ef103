"""The finance dashboard's routes under ``/dashboard``: a module-level router whose
handlers find the ``Dashboard`` on ``app.state.dashboard`` (``mount_dashboard`` puts it
there and includes the router).

Each page: find the login session (else redirect to the login page), build what the page
needs in a worker thread (``meterline.dashboard.pages``, under billing's lock for
reading), render a template (``Dashboard.page``). Nothing here calls the HTTP API: the
pages use the same library calls the API's routes do.

Tenancy is the API's: a key bound to a customer sees only that customer's customers row,
invoices, lines, events, proofs, margins, journal and firings; anything else answers 404
exactly as if it did not exist. Unblocking is the override ``POST
/v1/customers/{customer}/overrides`` makes, and needs the same ``admin`` scope. Posted
forms must come from this site and carry the session's CSRF token.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from anyio import to_thread
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from meterline.billing.service import Billing
from meterline.dashboard import pages, workspace_routes
from meterline.dashboard.sessions import COOKIE_NAME, COOKIE_PATH, SESSION_LIFETIME_S
from meterline.dashboard.site import PREFIX, Dashboard, PageError, local_path
from meterline.errors import AuthError, ScopeError
from meterline.keys import Principal, authenticate, authenticate_user
from meterline.ledger.event_ledger import Ledger
from meterline.live.front import LiveFront

UNBLOCK_REASON = "unblocked from the dashboard"

router = APIRouter(include_in_schema=False)


def dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


Site = Annotated[Dashboard, Depends(dashboard_of)]


def _integer(value: str | None, default: int = 0) -> int:
    if value is None or not value.isdigit() or len(value) > 18:
        return default
    return int(value)


def mount_dashboard(
    app: FastAPI, billing: Billing, link: LiveFront | None, ledger: Ledger
) -> Dashboard:
    """The dashboard over ``billing``, ``ledger`` and the live front (if any), its
    routes under ``/dashboard`` of ``app``."""
    dashboard = Dashboard(billing, ledger, link)
    app.state.dashboard = dashboard
    app.include_router(router)
    app.include_router(workspace_routes.router)
    return dashboard


# -- assets, login and logout ---------------------------------------------------------------


@router.get(f"{PREFIX}/static/{{name}}")
async def asset(dashboard: Site, name: str) -> Response:
    if name not in dashboard.assets:
        return Response(status_code=404)
    content, media_type = dashboard.assets[name]
    return Response(
        content,
        media_type=media_type,
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get(f"{PREFIX}/login")
async def login_form(request: Request, dashboard: Site, next: str | None = None) -> Response:
    session = dashboard.session_of(request)
    if session is not None:
        return dashboard.redirect(local_path(next))
    return dashboard.render("login.html", {"next": local_path(next), "error": None}, None)


@router.post(f"{PREFIX}/login")
async def login(request: Request, dashboard: Site) -> Response:
    if not dashboard.same_origin(request):
        return dashboard.error_page(None, PageError(403, "Cross-site form refused."))
    try:
        form = await dashboard.form(request)
    except PageError as error:
        return dashboard.error_page(None, error)
    target = local_path(form.get("next"))
    try:
        principal = await to_thread.run_sync(_login_principal, dashboard, form)
        principal.require("read", "the dashboard")
    except (AuthError, ScopeError) as error:
        message = (
            str(error)
            if isinstance(error, ScopeError)
            else "That key was refused: unknown, revoked or mistyped."
            if not form.get("user")
            else "That user name or password was refused."
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


def _login_principal(dashboard: Dashboard, form: dict[str, str]) -> Principal:
    """The principal a login form names: a workspace user and password, or an API key."""
    user = form.get("user", "").strip()
    if user:
        store = dashboard.billing.workspace_records
        return authenticate_user(store, user, form.get("password", ""))
    return authenticate(dashboard.ledger.store, form.get("key", "").strip())


@router.post(f"{PREFIX}/logout")
async def logout(request: Request, dashboard: Site) -> Response:
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


# -- pages ----------------------------------------------------------------------------------


@router.get(PREFIX)
async def overview(request: Request, dashboard: Site, period: str | None = None) -> Response:
    return await dashboard.page(request, "overview.html", "overview", pages.overview, period)


@router.get(f"{PREFIX}/customers")
async def customers(request: Request, dashboard: Site) -> Response:
    return await dashboard.page(request, "customers.html", "customers", pages.customers)


@router.get(f"{PREFIX}/customers/{{customer:path}}")
async def customer(request: Request, dashboard: Site, customer: str) -> Response:
    return await dashboard.page(request, "customer.html", "customers", pages.customer, customer)


@router.get(f"{PREFIX}/invoices/{{invoice_id}}")
async def invoice(request: Request, dashboard: Site, invoice_id: str) -> Response:
    return await dashboard.page(request, "invoice.html", "customers", pages.invoice, invoice_id)


@router.get(f"{PREFIX}/invoices/{{invoice_id}}/lines/{{number}}")
async def line(
    request: Request, dashboard: Site, invoice_id: str, number: str, after: str | None = None
) -> Response:
    return await dashboard.page(
        request, "line.html", "customers", pages.line, invoice_id, _integer(number),
        _integer(after),
    )  # fmt: skip


@router.get(f"{PREFIX}/invoices/{{invoice_id}}/lines/{{number}}/proof")
async def proof(
    request: Request, dashboard: Site, invoice_id: str, number: str, event: str = ""
) -> Response:
    return await dashboard.page(
        request, "proof.html", "customers", pages.proof, invoice_id, _integer(number), event
    )


@router.get(f"{PREFIX}/revenue")
async def revenue(request: Request, dashboard: Site) -> Response:
    return await dashboard.page(request, "revenue.html", "revenue", pages.revenue)


@router.get(f"{PREFIX}/controls")
async def controls(
    request: Request, dashboard: Site, unblocked: str | None = None, override: str | None = None
) -> Response:
    return await dashboard.page(
        request, "controls.html", "controls", pages.controls, unblocked, override
    )


@router.get(f"{PREFIX}/unbillable")
async def unbillable(request: Request, dashboard: Site) -> Response:
    return await dashboard.page(request, "unbillable.html", "unbillable", pages.unbillable)


@router.post(f"{PREFIX}/controls/unblock")
async def unblock(request: Request, dashboard: Site) -> Response:
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
            pages.unblock, dashboard, session.principal, customer, reason
        )
    except ScopeError:
        return dashboard.error_page(
            session, PageError(403, "Unblocking needs a key with the admin scope.")
        )
    except PageError as error:
        return dashboard.error_page(session, error)
    query = urlencode({"unblocked": customer, "override": override_id})
    return dashboard.redirect(f"{PREFIX}/controls?{query}")

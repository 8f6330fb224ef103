"""The contract workspace's pages under ``/dashboard/workspace`` (a module-level router
``mount_dashboard`` includes): the history, the form (editors: preview, then submit),
and a proposal's page (approvers: approve or reject). Posted forms must come from this
site and carry the session's CSRF token, as every dashboard form does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from meterline.billing.errors import NotFound
from meterline.dashboard import workspace_pages
from meterline.dashboard.sessions import Session
from meterline.dashboard.site import PREFIX, Dashboard, PageError
from meterline.errors import MeterlineError, ScopeError

router = APIRouter(include_in_schema=False)
WORKSPACE = f"{PREFIX}/workspace"


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


async def _posted(request: Request, dashboard: Dashboard) -> tuple[Session, dict[str, str]]:
    """The session and the form of a POST from this site with the session's CSRF token."""
    session = dashboard.session_of(request)
    if session is None:
        raise PageError(401, "Log in first.")
    if not dashboard.same_origin(request):
        raise PageError(403, "Cross-site form refused.")
    form = await dashboard.form(request)
    if not session.csrf_matches(form.get("csrf")):
        raise PageError(403, "The form expired; reload the page and try again.")
    return session, form


async def _run(function: Callable[..., Any], *args: Any) -> Any:
    """A workspace action in a worker thread; its refusals as pages."""
    try:
        return await to_thread.run_sync(function, *args)
    except ScopeError as error:
        raise PageError(403, str(error)) from None
    except NotFound as error:
        raise PageError(404, str(error)) from None


@router.get(WORKSPACE)
async def history(request: Request, dashboard: Dashboard = Depends(_dashboard)) -> Response:
    return await dashboard.page(
        request, "workspace_history.html", "workspace", workspace_pages.history_page
    )


@router.get(f"{WORKSPACE}/new")
async def form(
    request: Request, customer: str = "", dashboard: Dashboard = Depends(_dashboard)
) -> Response:
    values = {"customer": customer, "pool_credit_type": "credits", "pool_priority": "50"}
    return await dashboard.page(
        request, "workspace_form.html", "workspace", workspace_pages.form_page, values, False
    )


@router.post(f"{WORKSPACE}/new")
async def preview_or_submit(
    request: Request, dashboard: Dashboard = Depends(_dashboard)
) -> Response:
    """``action=preview``: the form again with the preview; ``action=submit``: store the
    proposal and show it (a refusal: the form again, each error by its field)."""
    session = dashboard.session_of(request)
    try:
        session, posted = await _posted(request, dashboard)
        if posted.get("action") == "submit":
            proposal_id = await _run(workspace_pages.submit, dashboard, session.principal, posted)
            return dashboard.redirect(f"{WORKSPACE}/proposals/{proposal_id}")
    except workspace_pages.FormRefused as refused:
        assert session is not None
        context = await _run(
            _reading, dashboard, workspace_pages.form_page, session.principal, posted, False
        )
        context["errors"] = refused.errors
        return dashboard.render("workspace_form.html", context, session, 422, "workspace")
    except PageError as error:
        return dashboard.error_page(session, error)
    return await dashboard.page(
        request, "workspace_form.html", "workspace", workspace_pages.form_page, posted, True
    )


def _reading(dashboard: Dashboard, build: Callable[..., Any], *args: Any) -> Any:
    with dashboard.billing.lock.reading():
        return build(dashboard, *args)


@router.get(f"{WORKSPACE}/proposals/{{proposal_id}}")
async def proposal(
    request: Request, proposal_id: str, dashboard: Dashboard = Depends(_dashboard)
) -> Response:
    return await dashboard.page(
        request,
        "workspace_proposal.html",
        "workspace",
        workspace_pages.proposal_page,
        proposal_id,
    )


@router.post(f"{WORKSPACE}/proposals/{{proposal_id}}/decide")
async def decide(
    request: Request, proposal_id: str, dashboard: Dashboard = Depends(_dashboard)
) -> Response:
    session = dashboard.session_of(request)
    try:
        session, posted = await _posted(request, dashboard)
        approve = posted.get("decision") == "approve"
        reason = posted.get("reason", "")
        await _run(
            workspace_pages.decide, dashboard, session.principal, proposal_id, approve, reason
        )
    except PageError as error:
        return dashboard.error_page(session, error)
    except MeterlineError as error:  # refused again at approval, or decided meanwhile
        return dashboard.error_page(session, PageError(error.http_status, str(error)))
    return dashboard.redirect(f"{WORKSPACE}/proposals/{proposal_id}")

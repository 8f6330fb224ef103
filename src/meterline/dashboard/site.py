"""The dashboard's shell: what every page shares under ``/dashboard``.

Login sessions (a page without one redirects to the login form), the Jinja2 templates
(autoescaped, with the views' filters), the security headers on every page, rendering,
redirects, small url-encoded forms, and ``PageError``: a page that cannot be shown, its
status and a sentence for the reader. ``Dashboard.page`` runs a page builder
(``meterline.dashboard.pages``) in a worker thread under billing's lock for reading
(``Billing.lock``), since billing shares one connection between threads.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from anyio import to_thread
from fastapi import Request
from fastapi.responses import Response
from jinja2 import Environment, PackageLoader, select_autoescape

from meterline.billing.line_cache import LineSequences
from meterline.billing.service import Billing, NotFound
from meterline.dashboard import views
from meterline.dashboard.derived import Derived
from meterline.dashboard.sessions import COOKIE_NAME, Session, SessionStore
from meterline.errors import MeterlineError
from meterline.keys import USER_PREFIX, Principal
from meterline.ledger.event_ledger import Ledger
from meterline.live.front import LiveFront
from meterline.live.link import WorkerUnavailable

PREFIX = "/dashboard"
FORM_BYTES_MAX = 8 * 1024
FORM_FIELDS_MAX = 40
"""The most fields a posted form may have (the workspace's contract form is the largest:
about 25 with its control rows)."""

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
    ("workspace", "Workspace", f"{PREFIX}/workspace"),
)


class PageError(MeterlineError):
    """A page that cannot be shown: its status and a sentence for the reader."""

    code = "page_error"

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.http_status = status_code
        self.message = message


def hidden(what: str) -> PageError:
    """Not found, or not this key's: the same answer either way."""
    return PageError(404, f"No {what} here.")


def templates() -> Environment:
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


def local_path(value: str | None) -> str:
    """Where to go after login: a dashboard path on this site, never elsewhere."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return PREFIX


def visible(principal: Principal, customer: str) -> bool:
    return principal.customer in (None, customer)


class Dashboard:
    """The pages over one billing service, ledger and (optionally) live front: the login
    sessions, the templates and assets, the derived figures, and what every page does
    (login or redirect, build in a worker thread under billing's lock, render)."""

    def __init__(
        self,
        billing: Billing,
        ledger: Ledger,
        link: LiveFront | None,
        sessions: SessionStore | None = None,
    ) -> None:
        self.billing = billing
        self.ledger = ledger
        self.link = link
        self.sessions = sessions or SessionStore(ledger.clock)
        self.derived = Derived(billing, ledger)
        self.templates = templates()
        static = files("meterline.dashboard").joinpath("static")
        self.assets = {
            "dashboard.css": (static.joinpath("dashboard.css").read_bytes(), "text/css"),
            "favicon.svg": (static.joinpath("favicon.svg").read_bytes(), "image/svg+xml"),
        }
        self.line_sequences = LineSequences(self.billing)

    # -- sessions and responses ------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        """The request's live session, if its key was not revoked since login (a workspace
        user's session lives until it expires or logs out)."""
        session = self.sessions.get(request.cookies.get(COOKIE_NAME))
        if session is None:
            return None
        if session.principal.key_id.startswith(USER_PREFIX):
            return session
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
        """A page behind login: ``build(self, principal, *args)`` in a worker thread under
        billing's lock for reading, rendered."""
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
            with self.billing.lock.reading():
                return build(self, *args)
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
            text = body.decode("utf-8")
            parsed = parse_qs(text, keep_blank_values=True, max_num_fields=FORM_FIELDS_MAX)
        except (UnicodeDecodeError, ValueError):
            raise PageError(400, "The form could not be read.") from None
        return {name: values[0] for name, values in parsed.items()}

    @staticmethod
    def same_origin(request: Request) -> bool:
        """A browser's POST names its origin: refuse one from another site."""
        origin = request.headers.get("origin")
        return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"

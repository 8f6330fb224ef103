"""The ASGI application: the services, the routers, and error rendering.

``create_app`` opens the services (``meterline.api.services.open_services``, the
composition root), puts them on ``app.state.services`` where the handlers' dependencies
find them (``meterline.api.dependencies``), and includes the routers, each a module of
thin handlers: events and operations (``event_routes``), billing (``billing_routes``,
``invoice_routes``), credits (``credit_routes``), the live engine (``live_routes``, with
a live front), webhooks (``webhook_routes``, with webhooks) and the dashboard's pages.

Errors are one shape (``meterline.api.failures``): one handler for meterline's errors,
each carrying its code and HTTP status; one for FastAPI's parameter refusals; unknown
routes, wrong methods and unexpected errors too. OpenAPI is at ``/openapi.json``
(``meterline.api.openapi`` completes FastAPI's document); interactive docs at ``/docs``
are served from vendored assets, so they work offline. Every path and query parameter is
checked for NUL and repeats before its route runs (``reading.plain_parameters``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Unpack

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from meterline import __version__
from meterline.api import (
    billing_routes,
    credit_routes,
    event_routes,
    invoice_routes,
    live_routes,
    openmeter_routes,
    otlp_routes,
    payment_routes,
    webhook_routes,
    workspace_routes,
)
from meterline.api.failures import (
    UnexpectedErrors,
    http_exception,
    meterline_error,
    parameter_error,
)
from meterline.api.metrics import Metrics, TimingMiddleware
from meterline.api.openapi import install as install_openapi
from meterline.api.reading import plain_parameters
from meterline.api.services import ServiceOptions, Services, open_services
from meterline.billing.service import Billing
from meterline.errors import MeterlineError
from meterline.ledger.event_ledger import Ledger


def create_app(
    ledger: Ledger, billing: Billing | None = None, **options: Unpack[ServiceOptions]
) -> FastAPI:
    """The HTTP API over ``ledger``; ``billing`` defaults to one over the ledger's file
    (whose store the app closes when it shuts down). With ``live``, the live engine
    (projection, controls, access answers, webhooks) runs beside it. With ``stream``
    (stream mode), events are published to JetStream for the workers, which run the live
    engines; access answers come from the access bucket's mirror.
    ``webhooks_allow_private``: let webhooks go to loopback, link-local and private
    addresses (None: as ``METERLINE_WEBHOOKS_ALLOW_PRIVATE`` says; unset, refused).
    ``lag_max_ms``: stream mode's ingest lag bound (``core.admission``; 0: off)."""
    services = open_services(ledger, billing, **options)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = FastAPIOffline(
        dependencies=[Depends(plain_parameters)],
        title="meterline",
        version=__version__,
        description="Usage ledger and monetization engine for AI products.",
        lifespan=lifespan,
    )
    _keep(app, services)
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(TimingMiddleware, metrics=app.state.metrics)
    app.add_exception_handler(HTTPException, http_exception)
    app.add_exception_handler(MeterlineError, meterline_error)
    app.add_exception_handler(RequestValidationError, parameter_error)
    install_openapi(app)
    _include_routers(app, services)
    return app


def _keep(app: FastAPI, services: Services) -> None:
    """The services where the dependencies find them (and under their former names)."""
    app.state.services = services
    app.state.ledger = services.ledger
    app.state.billing = services.billing
    app.state.live = services.live
    app.state.stream = services.stream
    app.state.webhooks = services.webhooks
    app.state.metrics = Metrics()


def _include_routers(app: FastAPI, services: Services) -> None:
    app.include_router(event_routes.router)
    event_routes.add_ingest_route(app, services.ledger.limits, services.stream is not None)
    app.include_router(billing_routes.router)
    app.include_router(invoice_routes.router)
    app.include_router(credit_routes.router)
    app.include_router(payment_routes.router)
    app.include_router(otlp_routes.router)
    app.include_router(openmeter_routes.router)
    app.include_router(workspace_routes.router)
    if services.live is not None:
        app.include_router(live_routes.router)
    if services.webhooks is not None:
        app.include_router(webhook_routes.router)
    from meterline.dashboard import mount_dashboard  # the finance pages under /dashboard

    mount_dashboard(app, services.billing, services.live, services.ledger)

"""What a handler takes from its application: the services (``app.state.services``, put
there by ``create_app``) as FastAPI dependencies, the caller's key, and billing calls run
in a worker thread under billing's readers-writer lock.

Authentication is a call a handler makes first, not a dependency: parameters are checked
before it (a malformed request is 400 with or without a key), as they always were.

The dependencies are ``async`` functions though they await nothing: FastAPI runs a plain
``def`` dependency in a worker thread, which cost every request a thread hop per
dependency (BENCHMARKS.md, "API CPU per event: fewer refusals and collections").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ParamSpec, TypeVar

from anyio import to_thread
from fastapi import Depends, Request

from meterline.api.reading import bearer
from meterline.api.services import Services
from meterline.billing.service import Billing, NotFound
from meterline.errors import ScopeError
from meterline.keys import Principal, Scope
from meterline.ledger.event_ledger import Ledger
from meterline.live.front import LiveFront
from meterline.live.webhook_service import Webhooks

P = ParamSpec("P")
T = TypeVar("T")


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def ledger_of(request: Request) -> Ledger:
    return services_of(request).ledger


def billing_of(request: Request) -> Billing:
    return services_of(request).billing


def live_of(request: Request) -> LiveFront:
    """The live front (its routes are mounted only when there is one)."""
    live = services_of(request).live
    assert live is not None, "the live routes are mounted only with a live front"
    return live


def webhooks_of(request: Request) -> Webhooks:
    """The webhooks service (its routes are mounted only when there is one)."""
    webhooks = services_of(request).webhooks
    assert webhooks is not None, "the webhook routes are mounted only with webhooks"
    return webhooks


async def _services(request: Request) -> Services:
    return services_of(request)


async def _ledger(request: Request) -> Ledger:
    return ledger_of(request)


async def _billing(request: Request) -> Billing:
    return billing_of(request)


async def _live(request: Request) -> LiveFront:
    return live_of(request)


async def _webhooks(request: Request) -> Webhooks:
    return webhooks_of(request)


ServicesDependency = Annotated[Services, Depends(_services)]
LedgerDependency = Annotated[Ledger, Depends(_ledger)]
BillingDependency = Annotated[Billing, Depends(_billing)]
LiveDependency = Annotated[LiveFront, Depends(_live)]
WebhooksDependency = Annotated[Webhooks, Depends(_webhooks)]


async def principal_of(request: Request) -> Principal:
    """The caller's key (401 without a valid one), checked in a worker thread."""
    return await to_thread.run_sync(services_of(request).authenticate, bearer(request))


def principal_inline(request: Request) -> Principal:
    """``principal_of`` in the event loop: one point read and a SHA-256 (~10 us), less
    than a hop to a worker thread costs (the access answer's path)."""
    return services_of(request).authenticate(bearer(request))


def unbound(principal: Principal, action: str) -> None:
    """Refuse a customer-bound key an operation that concerns every customer."""
    if principal.customer is not None:
        raise ScopeError(
            f"key {principal.key_id} is bound to customer {principal.customer!r};"
            f" {action} concerns every customer"
        )


def no_contract(customer: str) -> NotFound:
    return NotFound(f"customer {customer!r} has no contract")


def own(principal: Principal, customer: str) -> None:
    """A customer-bound key sees only its own customer: any other is 404, as if it did
    not exist."""
    if principal.customer not in (None, customer):
        raise no_contract(customer)


async def caller(
    request: Request, needed: Scope, action: str, *, every_customer: bool = False
) -> Principal:
    """The caller's key, which must hold ``needed`` (and, for an operation over
    ``every_customer``, be bound to none)."""
    principal = await principal_of(request)
    principal.require(needed, action)
    if every_customer:
        unbound(principal, action)
    return principal


def _reading(billing: Billing, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    with billing.lock.reading():
        return function(*args, **kwargs)


def _writing(billing: Billing, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    with billing.lock.writing():
        return function(*args, **kwargs)


async def read(billing: Billing, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a worker thread, sharing billing's lock with other reads."""
    return await to_thread.run_sync(_reading, billing, function, *args)


async def write(billing: Billing, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a worker thread, holding billing's lock alone."""
    return await to_thread.run_sync(_writing, billing, function, *args)

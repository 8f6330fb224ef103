"""The composition root: every service a server runs over one ledger, opened in one place.

``open_services`` builds, for the ledger of a database, in one of three modes:

- embedded (``live=False``): billing beside the ledger, nothing more;
- live (the default): the webhook store and its dispatcher, and the live engine in its
  worker process (``LiveLink``), told of every append and every billing change, and
  queuing webhooks for the dispatcher;
- stream (``stream=``): the webhooks as in live mode, and a ``StreamFront`` that publishes
  batches to JetStream and mirrors the workers' access answers (``AccessMirror``).

The handlers find the result on ``app.state.services`` (``meterline.api.dependencies``)
and see the live engine only as a ``LiveFront``. ``Services.start`` and ``stop`` are the
application's lifespan: the stream front connects when the server starts; everything
opened here is stopped in reverse, and a billing service opened here is closed.

It lives in ``api`` because stream mode's front does: ``live`` (a lower layer) cannot
import the stream package. Billing's readers-writer lock is ``billing.lock``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TypedDict, Unpack

from meterline.api.stream_front import StreamFront
from meterline.billing.buckets import keep_buckets_if_wanted
from meterline.billing.keeper_process import KeeperProcess, start_keeper_process
from meterline.billing.line_cache import LineSequences
from meterline.billing.service import Billing
from meterline.billing.unbillable import publish_unbillable
from meterline.core.admission import LAG_MAX_MS_DEFAULT
from meterline.keys import Principal, authenticate
from meterline.ledger.billing_records import BillingStore
from meterline.ledger.event_ledger import Ledger
from meterline.ledger.webhook_records import WebhookStore
from meterline.live.front import LiveFront
from meterline.live.link import LiveLink
from meterline.live.webhook_service import Dispatcher, Webhooks
from meterline.stream.mirror import AccessMirror
from meterline.stream.settings import StreamSettings


@dataclass
class Services:
    """What the routes and pages of one server use, and what it must stop."""

    ledger: Ledger
    billing: Billing
    line_sequences: LineSequences
    """The ledger sequences behind finalized invoice lines (cached: they never change)."""
    owns_billing: bool = False
    """Close the billing store on ``stop`` (it was opened here)."""
    webhooks: Webhooks | None = None
    dispatcher: Dispatcher | None = None
    live: LiveFront | None = None
    """The live engine as the routes see it (None: embedded mode)."""
    engine: LiveLink | None = None
    """Live mode's link to the engine's worker process (told of appends and changes)."""
    stream: StreamFront | None = None
    """Stream mode's publisher and access mirror."""
    buckets: KeeperProcess | None = None
    """Embedded mode's background catch-up of the rated-usage buckets (``billing.buckets``),
    in a process of its own (``billing.keeper_process``: the fold never holds this
    interpreter)."""

    def authenticate(self, token: str | None) -> Principal:
        """The key behind a bearer token (``keys.authenticate`` over the ledger's keys)."""
        return authenticate(self.ledger.store, token)

    async def start(self) -> None:
        if self.stream is not None:
            await self.stream.start()

    async def stop(self) -> None:
        if self.buckets is not None:
            self.buckets.stop()
        if self.stream is not None:
            await self.stream.stop()
        elif self.engine is not None:
            self.ledger.listeners.remove(self.engine.appended)
            self.billing.listeners.remove(self.engine.billing_changed)
            self.engine.stop()
        if self.dispatcher is not None and self.webhooks is not None:
            self.dispatcher.stop()
            self.webhooks.store.close()
        if self.owns_billing:
            self.billing.store.close()


def billing_over(ledger: Ledger) -> Billing:
    """Billing beside the ledger's events (the same SQLite file or PostgreSQL schema), on
    the ledger's clock, keeping rated-usage buckets unless told not to (``billing.buckets``)."""
    billing = Billing(ledger, BillingStore(ledger.store.path), clock=ledger.clock)
    keep_buckets_if_wanted(billing.context)
    return billing


class ServiceOptions(TypedDict, total=False):
    """The mode the services run in, by name (``open_services`` says the defaults):
    ``live`` (the live engine and webhooks beside the API; default on), ``stream``
    (stream mode's settings; default none: embedded), ``webhooks_allow_private``
    (webhooks to private addresses; default: as the environment says) and
    ``lag_max_ms`` (stream mode's ingest lag bound, ``core.admission``; 0: off)."""

    live: bool
    stream: StreamSettings | None
    webhooks_allow_private: bool | None
    lag_max_ms: int


def open_services(
    ledger: Ledger, billing: Billing | None = None, **options: Unpack[ServiceOptions]
) -> Services:
    """The services over ``ledger`` in the mode the options name (see the module);
    ``billing`` defaults to one over the ledger's file, closed by ``Services.stop``."""
    live, stream = options.get("live", True), options.get("stream")
    webhooks_allow_private = options.get("webhooks_allow_private")
    lag_max_ms = options.get("lag_max_ms", LAG_MAX_MS_DEFAULT)
    service = billing_over(ledger) if billing is None else billing
    services = Services(ledger, service, LineSequences(service), owns_billing=billing is None)
    if stream is None:  # in stream mode the workers commit; `meterline keeper` keeps the buckets
        services.buckets = start_keeper_process(service.context)
    if live:
        services.webhooks = Webhooks(
            WebhookStore(service.store.path),
            clock=ledger.clock,
            allow_private=webhooks_allow_private,
        )
        services.dispatcher = Dispatcher(services.webhooks).start()
        # a close's unbillable usage becomes webhooks, once per event
        service.unbillable_listeners.append(partial(publish_unbillable, services.webhooks.publish))
    if stream is not None:
        mirror = AccessMirror(str(service.store.path), ledger.clock)
        services.live = mirror
        services.stream = StreamFront(stream, mirror, lag_max_ms)
    elif services.dispatcher is not None:
        # the live engine in its worker process, told of every append and billing change
        engine = LiveLink(str(service.store.path), ledger.clock, services.dispatcher.wake)
        services.live = services.engine = engine.start()
        ledger.listeners.append(engine.appended)
        service.listeners.append(engine.billing_changed)
    return services

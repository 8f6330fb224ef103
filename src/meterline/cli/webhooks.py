"""``meterline webhooks``: endpoints and the delivery log, each command one call into
``meterline.live.webhook_service.Webhooks`` over the ledger's file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import msgspec
import typer

from meterline.cli.options import DEFAULT_DB, DbOption, errors, fail
from meterline.core.events import format_timestamp
from meterline.ledger.location import ledger_exists

if TYPE_CHECKING:
    from meterline.live.webhook_service import Webhooks

webhooks_app = typer.Typer(
    help="Outgoing webhooks: endpoints and the delivery log.", no_args_is_help=True
)
_ENCODER = msgspec.json.Encoder(decimal_format="number")


def _fail(message: str, code: int = 2) -> typer.Exit:
    """``fail`` without highlighting: a path or an id in ``message`` stays plain."""
    return fail(message, code, highlight=False)


AllowPrivateOption = Annotated[
    bool,
    typer.Option(
        "--allow-private",
        help="Allow loopback, link-local and private addresses (else refused). Also"
        " METERLINE_WEBHOOKS_ALLOW_PRIVATE=1.",
    ),
]


@contextmanager
def _webhooks(db: str, create: bool = False, allow_private: bool = False) -> Iterator[Webhooks]:
    # imported here, not at the top: ``meterline --help`` loads no store
    from meterline.ledger.event_ledger import open_store
    from meterline.ledger.webhook_records import WebhookStore
    from meterline.live.webhook_service import (
        EndpointDisabled,
        WebhookError,
        WebhookNotFound,
        Webhooks,
    )

    """The webhook service over ``db``; a missing ledger is an error unless ``create``
    (which makes the ledger there, on either store, as the other commands find it).
    Private destinations are allowed with ``allow_private`` or by the environment."""
    if not ledger_exists(db):
        if not create:
            raise _fail(f"{db}: no such ledger")
        open_store(db).close()
    store = WebhookStore(db)
    try:
        yield Webhooks(store, allow_private=True if allow_private else None)
    except WebhookError as error:
        raise _fail(str(error)) from None
    except (WebhookNotFound, EndpointDisabled) as error:
        raise _fail(str(error), 1) from None
    finally:
        store.close()


def _when(instant_us: int | None) -> str:
    return "-" if instant_us is None else format_timestamp(instant_us)


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Option(help="Where to POST events (http:// or https://).")],
    kind: Annotated[
        list[str], typer.Option(help="An event kind to send, or '*' for all (repeat).")
    ],
    db: DbOption = DEFAULT_DB,
    description: Annotated[str, typer.Option(help="A label for the endpoint.")] = "",
    allow_private: AllowPrivateOption = False,
) -> None:
    """Add an endpoint; prints its id and its signing secret, once. The URL's host must
    resolve to public addresses only, unless --allow-private."""
    with _webhooks(db, create=True, allow_private=allow_private) as webhooks:
        endpoint, secret = webhooks.subscribe(url, kind, description)
    errors.print(
        f"added endpoint {endpoint.endpoint_id} for {', '.join(endpoint.kinds)};"
        " store the secret now, it is not shown again",
        highlight=False,
    )
    print(f"{endpoint.endpoint_id}\t{secret}")


@webhooks_app.command("list")
def webhooks_list(db: DbOption = DEFAULT_DB) -> None:
    """Endpoints: id, URL, kinds, created, state, description (never secrets)."""
    with _webhooks(db) as webhooks:
        endpoints = webhooks.endpoints()
    for endpoint in endpoints:
        state = "active" if endpoint.enabled else f"disabled {_when(endpoint.disabled_at_us)}"
        print(
            f"{endpoint.endpoint_id}\t{endpoint.url}\t{','.join(endpoint.kinds)}\t"
            f"{_when(endpoint.created_at_us)}\t{state}\t{endpoint.description}"
        )


@webhooks_app.command("disable")
def webhooks_disable(
    endpoint: Annotated[str, typer.Option(help="The endpoint id (we_...).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Disable an endpoint: no new deliveries, its pending ones fail (nothing is deleted)."""
    with _webhooks(db) as webhooks:
        webhooks.disable(endpoint)
    print(f"disabled {endpoint}")


@webhooks_app.command("deliveries")
def webhooks_deliveries(
    db: DbOption = DEFAULT_DB,
    status: Annotated[
        str | None, typer.Option(help="Only pending, delivered or failed ones.")
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object, attempts included.")
    ] = False,
) -> None:
    """The delivery log, newest first: id, endpoint, kind, event id, status, attempts."""
    from meterline.live.webhook_service import delivery_document

    with _webhooks(db) as webhooks:
        deliveries = webhooks.deliveries(endpoint, status, limit)
        logs = {
            delivery.delivery_id: webhooks.attempts(delivery.delivery_id) for delivery in deliveries
        }
    if as_json:
        documents = [
            delivery_document(delivery, logs[delivery.delivery_id]) for delivery in deliveries
        ]
        print(_ENCODER.encode({"deliveries": documents}).decode())
        return
    for delivery in deliveries:
        last = delivery.last_error or (delivery.last_status_code or "")
        print(
            f"{delivery.delivery_id}\t{delivery.endpoint_id}\t{delivery.kind}\t"
            f"{delivery.event_id}\t{delivery.status}\t{delivery.attempts}\t"
            f"{_when(delivery.next_attempt_at_us if delivery.status == 'pending' else None)}\t"
            f"{last}"
        )


@webhooks_app.command("deliver")
def webhooks_deliver(db: DbOption = DEFAULT_DB, allow_private: AllowPrivateOption = False) -> None:
    """Attempt every due delivery once; prints how many attempts were made. A delivery
    whose host now resolves to a refused address fails, saying so."""
    with _webhooks(db, allow_private=allow_private) as webhooks:
        made = webhooks.deliver_due()
    print(made)


@webhooks_app.command("retry")
def webhooks_retry(
    delivery: Annotated[str, typer.Option(help="The delivery id (wd_...).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Make a delivery pending and due now (the next `deliver` or dispatcher sends it)."""
    with _webhooks(db) as webhooks:
        webhooks.redeliver(delivery)
    print(f"queued {delivery}")

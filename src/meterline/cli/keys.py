"""``meterline keys create|list|revoke``: API keys over ``meterline.keys`` and the
ledger's store (only a key's hash is stored; the token is printed once)."""

from __future__ import annotations

from typing import Annotated

import typer

from meterline.cli.options import DEFAULT_DB, DbOption, errors, fail
from meterline.clock import system_clock_us

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="ingest, read, admin, editor or approver.")],
    db: DbOption = DEFAULT_DB,
    customer: Annotated[str | None, typer.Option(help="Bind the key to one customer.")] = None,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from meterline.keys import create_key
    from meterline.ledger.event_ledger import open_store

    store = open_store(db)
    try:
        key_id, token = create_key(store, scope, system_clock_us(), customer, name)
    except ValueError as error:
        raise fail(str(error)) from None
    finally:
        store.close()
    errors.print(f"created key {key_id} with scope {scope!r}; store it now, it is not shown again")
    print(token)


@keys_app.command("list")
def keys_list(db: DbOption = DEFAULT_DB) -> None:
    """List keys (ids, scopes, bindings; never secrets)."""
    from meterline.core.events import format_timestamp
    from meterline.ledger.event_ledger import open_store

    store = open_store(db)
    for key_id, scope, customer, name, created, revoked in store.list_keys():
        state = f"revoked {format_timestamp(revoked)}" if revoked else "active"
        print(f"{key_id}\t{scope}\t{customer or '*'}\t{name}\t{format_timestamp(created)}\t{state}")
    store.close()


@keys_app.command("revoke")
def keys_revoke(key_id: str, db: DbOption = DEFAULT_DB) -> None:
    """Revoke a key; it is refused from the next request on."""
    from meterline.ledger.event_ledger import open_store

    store = open_store(db)
    revoked = store.revoke_key(key_id, system_clock_us())
    store.close()
    if not revoked:
        raise fail(f"no active key {key_id!r}")
    print(f"revoked {key_id}")

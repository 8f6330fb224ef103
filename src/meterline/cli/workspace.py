"""``meterline users add|list`` and ``meterline workspace export|history``: the contract
workspace's users over ``meterline.keys`` (a password is stored only as its scrypt hash)
and its reads over ``meterline.billing.workspace`` (docs/workspace.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from meterline.cli.options import DEFAULT_DB, DbOption, errors, fail
from meterline.clock import system_clock_us

users_app = typer.Typer(help="Add and list workspace users (roles).", no_args_is_help=True)
workspace_app = typer.Typer(
    help="The contract workspace: export the configuration, read the history, preview a"
    " price experiment.",
    no_args_is_help=True,
)
PASSWORD_VARIABLE = "METERLINE_USER_PASSWORD"


@users_app.command("add")
def users_add(
    name: str,
    role: Annotated[str, typer.Option(help="viewer, editor, approver or admin.")],
    db: DbOption = DEFAULT_DB,
    customer: Annotated[str | None, typer.Option(help="Bind the user to one customer.")] = None,
) -> None:
    """Add a user with a role; the password is read from METERLINE_USER_PASSWORD or asked
    for (never an argument: it would stay in the shell's history)."""
    from meterline.billing.service import open_billing
    from meterline.errors import MeterlineError
    from meterline.keys import add_user

    password = os.environ.get(PASSWORD_VARIABLE) or typer.prompt(
        "password", hide_input=True, confirmation_prompt=True
    )
    with open_billing(db) as billing:
        try:
            add_user(billing.workspace_records, name, password, role, system_clock_us(), customer)
        except MeterlineError as error:
            raise fail(str(error)) from None
    errors.print(f"added user {name!r} with role {role!r}")


@users_app.command("list")
def users_list(db: DbOption = DEFAULT_DB) -> None:
    """List users (names, roles, bindings; never passwords)."""
    from meterline.billing.service import open_billing
    from meterline.core.events import format_timestamp

    with open_billing(db) as billing:
        for name, role, customer, created in billing.workspace_records.users():
            print(f"{name}\t{role}\t{customer or '*'}\t{format_timestamp(created)}")


@workspace_app.command("export")
def workspace_export(db: DbOption = DEFAULT_DB) -> None:
    """Print the configuration in force as YAML (`meterline apply -f` takes it back)."""
    from meterline.billing import workspace
    from meterline.billing.service import open_billing
    from meterline.errors import MeterlineError

    with open_billing(db) as billing:
        try:
            text = workspace.export_yaml(billing.context)
        except MeterlineError as error:
            raise fail(str(error)) from None
    print(text, end="")


@workspace_app.command("history")
def workspace_history(db: DbOption = DEFAULT_DB) -> None:
    """Print every proposal with its decision and every revision, as JSON."""
    from meterline.billing import workspace
    from meterline.billing.service import open_billing
    from meterline.keys import Principal

    with open_billing(db) as billing:
        everyone = Principal("cli", "read")
        found = workspace.history(billing.context, billing.workspace_records, everyone)
    print(json.dumps(found, indent=2))


@workspace_app.command("experiment")
def workspace_experiment(
    file: Annotated[Path, typer.Argument(help="The experiment as YAML: plan, effective, ...")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Preview a price experiment (a new plan version for new customers) over a sample
    of customers' last closed period, as JSON; nothing is stored (propose it over the
    API: POST /v1/workspace/experiments)."""
    from meterline.billing import workspace, workspace_preview
    from meterline.billing.service import open_billing
    from meterline.config.source import ConfigurationError

    if not file.exists():
        raise fail(f"{file}: no such file")
    with open_billing(db) as billing:
        try:
            experiment = workspace.read_experiment(file.read_text(), file.name)
            found = workspace_preview.preview(billing.context, experiment)
        except ConfigurationError as error:
            for problem in error.errors:
                errors.print(f"[red]error:[/red] {problem}", highlight=False)
            raise typer.Exit(1) from None
    print(json.dumps(found, indent=2, ensure_ascii=False))

"""The ``meterline`` command: the Typer app, every command registered on it, and ``main``.

The composition root of the CLI: each command module (``cli.ledger``, ``cli.invoices``...)
defines its commands and sub-apps over ``cli.options``; only this module knows them all.
Registration order is the order ``meterline --help`` lists them in.
"""

from __future__ import annotations

import os
import sys

import typer

from meterline.cli.bench import bench_app
from meterline.cli.checkpoints import checkpoints_app, prove_command, verify_proof_command
from meterline.cli.credits import credits_app
from meterline.cli.demo import demo
from meterline.cli.export import export_command, sql_command
from meterline.cli.finance import economics_command, journal_command, revenue_command
from meterline.cli.invoices import apply, explain, invoices_app, unbillable
from meterline.cli.keys import keys_app
from meterline.cli.ledger import audit, ingest, serve, verify
from meterline.cli.live import controls_app, live_app, reconcile_command
from meterline.cli.options import errors
from meterline.cli.payments import payments_app
from meterline.cli.stream import (
    keeper_command,
    partitions_command,
    status_command,
    worker_command,
)
from meterline.cli.webhooks import webhooks_app
from meterline.cli.workspace import users_app, workspace_app
from meterline.clock import NOW_VARIABLE, ClockSettingError, clock_offset_us, system_clock_us
from meterline.core.events import format_timestamp

app = typer.Typer(
    help="meterline: the usage ledger and monetization engine for AI products.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(keys_app, name="keys")
app.add_typer(invoices_app, name="invoices")
app.add_typer(credits_app, name="credits")
app.add_typer(payments_app, name="payments")
app.add_typer(bench_app, name="bench")
for command in (serve, verify, ingest, apply, unbillable, explain, audit, demo):
    app.command()(command)
app.command("reconcile")(reconcile_command)
app.command(name="journal")(journal_command)
app.command(name="revenue")(revenue_command)
app.command(name="economics")(economics_command)
app.add_typer(live_app, name="live")
app.add_typer(controls_app, name="controls")
app.add_typer(webhooks_app, name="webhooks")
app.command(name="export")(export_command)
app.command(name="sql")(sql_command)
app.add_typer(checkpoints_app, name="checkpoints")
app.command(name="prove")(prove_command)
app.command(name="verify-proof")(verify_proof_command)
app.command(name="worker")(worker_command)
app.command(name="keeper")(keeper_command)
app.command(name="status")(status_command)
app.command(name="partitions")(partitions_command)
app.add_typer(users_app, name="users")
app.add_typer(workspace_app, name="workspace")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        offset_us = clock_offset_us()
    except ClockSettingError as error:
        errors.print(f"[red]error:[/red] {error}")
        raise SystemExit(2) from None
    if offset_us and sys.stderr.isatty():  # scripts parse stderr: say it to people only
        errors.print(
            f"[yellow]note:[/yellow] {NOW_VARIABLE} is set: meterline's clock reads"
            f" {format_timestamp(system_clock_us())}, not the system's time"
        )
    app(prog_name="meterline")


if __name__ == "__main__":
    main()

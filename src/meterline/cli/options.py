"""What every ``meterline`` command shares: the consoles, the option aliases, the exit
codes and the helpers that fail a command with one line on stderr.

Invariants: this module imports only the standard library, Typer, Rich and the light
parts of meterline (no store, no driver, no server): every command module imports from it
and from the library, never from another command module or from ``meterline.cli``, so the
CLI has no import cycle. Errors go to stderr on one line, never wrapped.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from meterline.ledger.location import ledger_exists

PIPED_WIDTH = 140
"""Columns Rich uses when stdout is not a terminal (it would otherwise assume 80)."""

console = Console()
if not console.is_terminal:
    console = Console(width=PIPED_WIDTH)  # piped output: wide enough for invoice tables
errors = Console(stderr=True, soft_wrap=True)
"""Messages are not wrapped: one error is one line, whatever the terminal's width."""

DEFAULT_DB = "meterline.db"
"""The ledger a command opens without ``--db`` (and without METERLINE_DB)."""
DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="METERLINE_DB",
        help="Ledger: a SQLite file, or a postgresql:// URL (the production store).",
    ),
]

StreamOption = Annotated[
    str,
    typer.Option(
        "--stream",
        envvar="METERLINE_STREAM",
        help="NATS servers with JetStream (comma-separated nats:// URLs).",
    ),
]
DEFAULT_STREAM = "nats://127.0.0.1:4222"
"""The NATS server a stream command reaches without ``--stream``."""
NamespaceOption = Annotated[
    str,
    typer.Option(
        "--namespace",
        envvar="METERLINE_NAMESPACE",
        help="Names of the stream, subjects and buckets (several ledgers can share NATS).",
    ),
]
StreamsOption = Annotated[
    int,
    typer.Option(
        "--streams",
        envvar="METERLINE_STREAMS",
        help="JetStream streams the partitions are split over by range (1 to 64, at most"
        " the partitions); every API replica and worker of a deployment gives the same.",
    ),
]
ReplicasOption = Annotated[
    int,
    typer.Option(
        "--stream-replicas",
        envvar="METERLINE_STREAM_REPLICAS",
        help="Copies JetStream keeps of the stream and buckets when it creates them (3 on a"
        " 3-node cluster).",
    ),
]

AsOfOption = Annotated[
    str | None,
    typer.Option("--as-of", help="As of this date or RFC 3339 timestamp (default: now)."),
]

EXIT_FINDINGS = 1
"""``verify`` / ``audit``: the ledger was read and something in it does not check."""
EXIT_USAGE = 2
"""Bad usage: no such ledger, an invalid option."""
EXIT_UNREADABLE = 3
"""``verify`` / ``audit``: the store cannot be read (a damaged SQLite file, an
unreachable database), so nothing in it could be checked."""


def fail(message: str, code: int = EXIT_USAGE, *, highlight: bool = True) -> typer.Exit:
    """Print ``message`` (Rich markup) as an error on stderr; the exit to raise."""
    errors.print(f"[red]error:[/red] {message}", highlight=highlight)
    return typer.Exit(code)


def report(label: str, text: str) -> None:
    """One line on stderr, never wrapped, ``text`` printed as it is (no markup) but on
    one line (a driver's message may hold several)."""
    errors.print(f"{label} {escape(' '.join(text.split()))}", highlight=False, soft_wrap=True)


def existing_ledger(db: str) -> None:
    """Exit 2 when there is no ledger at ``db``, 3 when its server cannot be reached."""
    from meterline.errors import StoreError

    try:
        exists = ledger_exists(db)
    except StoreError as error:
        report("[red]error:[/red]", str(error))
        raise typer.Exit(EXIT_UNREADABLE) from None
    if not exists:
        report("[red]error:[/red]", f"{db}: no such ledger")
        raise typer.Exit(EXIT_USAGE)


def instant(value: str | None, name: str) -> int | None:
    """A CLI date (2026-11-01, UTC midnight) or RFC 3339 timestamp as microseconds."""
    from datetime import UTC, datetime

    from meterline.core.events import timestamp_to_us

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"{name}: {value!r} is not a date (2026-11-01) or RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return timestamp_to_us(moment)

"""The distributed path's commands: ``worker``, ``keeper``, ``status`` and ``partitions``.

Thin faces over ``meterline.stream`` (``meterline bench scale`` is in ``cli.bench``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from meterline.cli.options import (
    DEFAULT_DB,
    DEFAULT_STREAM,
    DbOption,
    NamespaceOption,
    ReplicasOption,
    StreamOption,
    StreamsOption,
    console,
    fail,
)
from meterline.errors import MeterlineError


def worker_command(
    db: DbOption = DEFAULT_DB,
    stream: StreamOption = DEFAULT_STREAM,
    partitions: Annotated[
        str,
        typer.Option(
            "--partitions",
            help="Partitions this worker applies: `all`, like `0-3,6`, or `auto` (take a"
            " fair share of the partitions by lease handover with the other workers). A"
            " worker appends a partition only while it holds its lease.",
        ),
    ] = "all",
    name: Annotated[
        str | None, typer.Option(help="Worker name in `meterline status` (host-pid).")
    ] = None,
    namespace: NamespaceOption = "meterline",
    replicas: ReplicasOption = 1,
    streams: StreamsOption = 1,
) -> None:
    """Apply stream partitions to the PostgreSQL ledger, run their customers' live state
    and controls, and publish access decisions (until SIGTERM)."""
    from meterline.logs import configure_logging
    from meterline.stream.errors import StreamLayoutError
    from meterline.stream.service import WorkerService

    configure_logging("meterline-worker")
    try:
        service = WorkerService.open(db, stream, partitions, name, namespace, replicas, streams)
    except (MeterlineError, ValueError) as error:
        raise fail(str(error)) from None
    try:
        service.run()
    except StreamLayoutError as error:
        raise fail(str(error)) from None


def keeper_command(db: DbOption = DEFAULT_DB) -> None:
    """Fold the ledger's committed events into its rated-usage buckets, as the one keeper
    of the ledger (others started wait and take over when it stops or dies), until
    SIGTERM."""
    import signal
    import threading

    from meterline.ledger.location import ledger_exists
    from meterline.logs import configure_logging
    from meterline.stream.keeper import LedgerKeeper

    configure_logging("meterline-keeper")
    if not ledger_exists(db):
        raise fail(f"--db: {db} does not exist")
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    LedgerKeeper(str(db)).run(stop)


def status_command(
    db: DbOption = DEFAULT_DB,
    stream: StreamOption = DEFAULT_STREAM,
    namespace: NamespaceOption = "meterline",
    streams: StreamsOption = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Partitions with their owner and consumer lag, workers with events/s, the stream,
    the ledger head and the blocked customers."""
    from meterline.ledger.location import ledger_exists
    from meterline.stream.inspect import read_status

    if not ledger_exists(db):
        raise fail(f"--db: {db} does not exist")
    try:
        status = read_status(db, stream, namespace, streams)
    except (MeterlineError, ValueError, OSError) as error:
        raise fail(str(error)) from None
    if as_json:
        console.print_json(json.dumps(status, default=str))
        return
    _print_status(status)


def _print_status(status: dict[str, Any]) -> None:
    stream = status["stream"]
    console.print(
        f"ledger head {status['ledger']['head_sequence']:,} ({status['ledger']['partitions']}"
        f" partitions); {_stream_names(stream)}: {stream['messages']:,} messages,"
        f" {stream['replicas']} replica(s); lag {status['lag']:,} events' messages;"
        f" {status['events_per_s']:,} events/s",
        highlight=False,
    )
    if len(status.get("streams", [])) > 1:
        streams = Table("stream", "partitions", "messages", "leader")
        for row in status["streams"]:
            leader = (row.get("cluster") or {}).get("leader") or "-"
            streams.add_row(row["name"], row["partitions"], f"{row['messages']:,}", leader)
        console.print(streams)
    partitions = Table("partition", "owner", "waiting", "unacked", "redelivered", "lag")
    for row in status["partitions"]:
        partitions.add_row(
            str(row["partition"]),
            row.get("owner") or "[red]none[/red]",
            *(str(row.get(name, "-")) for name in ("waiting", "unacknowledged", "redelivered")),
            str(row.get("lag", "-")),
        )
    console.print(partitions)
    workers = Table("worker", "partitions", "alive", "events/s", "applied", "dup", "conflicts")
    for row in status["workers"]:
        workers.add_row(
            str(row["worker"]),
            ",".join(str(p) for p in row["partitions"]),
            "yes" if row["alive"] else "[red]no[/red]",
            str(row["events_per_s"]),
            f"{row['events_applied']:,}",
            str(row["duplicates"]),
            str(row["conflicts"]),
        )
    console.print(workers)
    if status["blocked"]:
        blocked = Table("blocked customer", "policy", "reason")
        for row in status["blocked"]:
            blocked.add_row(row["customer"], str(row["policy"]), str(row["reason"]))
        console.print(blocked)
    else:
        console.print("no customer is blocked")


def _stream_names(stream: dict[str, Any]) -> str:
    count = int(stream.get("count", 1))
    if count == 1:
        return f"stream {stream['name']}"
    return f"{count} streams {stream['name']}-0 to {stream['name']}-{count - 1}"


def partitions_command(
    db: DbOption = DEFAULT_DB,
    set_count: Annotated[
        int | None,
        typer.Option(
            "--set",
            help="Spread new events over this many partitions (stop the workers first;"
            " existing chains stay as they are).",
        ),
    ] = None,
) -> None:
    """Show (or change) how many hash chains and stream partitions the ledger has."""
    from meterline.errors import StoreError
    from meterline.ledger.event_ledger import open_store

    store = open_store(db)
    try:
        if set_count is not None:
            setter = getattr(store, "set_partitions", None)
            if setter is None:
                raise fail("--set: a SQLite ledger has one chain; use PostgreSQL for more")
            try:
                setter(set_count)
            except (ValueError, StoreError) as error:
                raise fail(f"--set: {error}") from None
        console.print(f"{store.partitions} partitions")
    finally:
        store.close()

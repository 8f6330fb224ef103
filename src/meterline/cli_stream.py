"""The distributed path's commands: ``worker``, ``status``, ``partitions``, ``bench scale``.

Thin faces over ``meterline.stream`` and ``meterline.bench.scale``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from meterline.cli import DEFAULT_DB, DbOption, _fail, console
from meterline.errors import MeterlineError

StreamOption = Annotated[
    str,
    typer.Option(
        "--stream",
        envvar="METERLINE_STREAM",
        help="NATS servers with JetStream (comma-separated nats:// URLs).",
    ),
]
DEFAULT_STREAM = "nats://127.0.0.1:4222"
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
        raise _fail(str(error)) from None
    try:
        service.run()
    except StreamLayoutError as error:
        raise _fail(str(error)) from None


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
        raise _fail(f"--db: {db} does not exist")
    try:
        status = read_status(db, stream, namespace, streams)
    except (MeterlineError, ValueError, OSError) as error:
        raise _fail(str(error)) from None
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
    from meterline.ledger.ledger import open_store

    store = open_store(db)
    try:
        if set_count is not None:
            setter = getattr(store, "set_partitions", None)
            if setter is None:
                raise _fail("--set: a SQLite ledger has one chain; use PostgreSQL for more")
            try:
                setter(set_count)
            except (ValueError, StoreError) as error:
                raise _fail(f"--set: {error}") from None
        console.print(f"{store.partitions} partitions")
    finally:
        store.close()


def bench_scale_command(
    events: Annotated[
        int | None,
        typer.Option(help="Events per configuration (default 200,000; 10,000 with --quick)."),
    ] = None,
    partitions: Annotated[
        str,
        typer.Option(help="Partition counts to measure, comma-separated (default 1,2,8)."),
    ] = "",
    workers: Annotated[
        str,
        typer.Option(help="Worker counts to measure, comma-separated (default 1,2)."),
    ] = "",
    batch: Annotated[int, typer.Option(help="Events per HTTP request.")] = 1000,
    api_replicas: Annotated[
        int, typer.Option("--api-replicas", help="API replicas the load is spread over.")
    ] = 1,
    probes: Annotated[
        int | None,
        typer.Option(help="Kill-switch probes per configuration (default 10; 3 with --quick)."),
    ] = None,
    writers: Annotated[
        bool,
        typer.Option(
            "--writers/--no-writers",
            help="Also measure 1 and 2 partition writers fed prepared batches.",
        ),
    ] = True,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Fewer, smaller runs (partitions 1,2; 10,000 events)."),
    ] = False,
    profile: Annotated[
        bool,
        typer.Option(
            "--profile/--no-profile",
            help="Also run 1 worker (most partitions) under cProfile and list its top"
            " functions (one more run, not a figure).",
        ),
    ] = False,
    postgres: Annotated[
        str,
        typer.Option(
            "--postgres",
            envvar="METERLINE_BENCH_POSTGRES",
            help="PostgreSQL database the benchmark creates (and drops) its schemas in.",
        ),
    ] = "postgresql://postgres@127.0.0.1:5432/test",
    streams: Annotated[
        int,
        typer.Option(
            "--streams",
            help="JetStream streams the partitions are split over (a configuration with"
            " fewer partitions uses one stream per partition).",
        ),
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure the whole distributed path (API -> JetStream -> worker -> PostgreSQL) per
    partition and worker count on loopback: throughput, the CPU each component used per
    event against a one-process floor, lock waits, the kill switch under load, and
    partition writers fed prepared batches."""
    import shlex
    import sys

    from meterline.bench.scale import QUICK, run_scale_benchmark

    default_partitions = QUICK["partitions"] if quick else (1, 2, 8)
    try:
        result = run_scale_benchmark(
            events,
            partitions or default_partitions,  # type: ignore[arg-type]
            batch,
            progress=None if as_json else console,
            api_replicas=api_replicas,
            profile=profile,
            postgres_url=postgres,
            workers=workers or (1, 2),
            quick=quick,
            probes=probes,
            writers=writers,
            command="meterline " + shlex.join(sys.argv[1:]),
            streams=streams,
        )
    except ValueError as error:
        raise _fail(str(error)) from None
    if as_json:
        print(json.dumps(result))
    else:
        console.print_json(json.dumps(result))

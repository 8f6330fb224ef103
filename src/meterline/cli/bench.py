"""``meterline bench ingest|close|finance|controls|scale``: benchmarks that print their figures,
each one call into ``meterline.bench``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from meterline.cli.options import (
    console,
    fail,
)

bench_app = typer.Typer(help="Benchmarks that print their figures.", no_args_is_help=True)


def _print_figures(
    result: Mapping[str, Any], as_json: bool, width: int, *, markup: bool = True
) -> None:
    """A benchmark's figures: one JSON object, or one line each, names right-aligned in
    ``width`` and counts with thousands separators (``markup=False``: printed as is)."""
    if as_json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        counted = isinstance(value, int) and not isinstance(value, bool)
        figure = f"{value:,}" if counted else f"{value}"
        console.print(f"{name:>{width}}: {figure}", markup=markup)


@bench_app.command("ingest")
def bench_ingest(
    events: Annotated[int, typer.Option("--events", help="Events per path.")] = 200_000,
    batch: Annotated[int, typer.Option(help="Events per library and baseline append.")] = 1000,
    http_batch: Annotated[int, typer.Option(help="Events per HTTP request.")] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure ingest: library path, HTTP path and the plain-SQLite storage floor."""
    from meterline.bench.ingest import run_ingest_benchmark

    result = run_ingest_benchmark(events, batch, http_batch, progress=None if as_json else console)
    _print_figures(result, as_json, 24)


@bench_app.command("close")
def bench_close(
    events: Annotated[int, typer.Option("--events", help="Events in the period.")] = 1_000_000,
    customers: Annotated[int, typer.Option("--customers", help="Customers.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    credits: Annotated[
        bool, typer.Option("--credits", help="Every contract with a credit pool and a commit.")
    ] = False,
) -> None:
    """Measure a period close: rate and finalize N events across M customers."""
    from meterline.bench.close import run_close_benchmark

    result = run_close_benchmark(events, customers, credits=credits).as_dict()
    _print_figures(result, as_json, 24)


@bench_app.command("finance")
def bench_finance(
    events: Annotated[int, typer.Option("--events", help="Events in the month.")] = 20_000,
    customers: Annotated[int, typer.Option("--customers", help="Customers.")] = 20,
    repeats: Annotated[int, typer.Option("--repeats", help="Times each read is timed.")] = 5,
    baseline_repeats: Annotated[
        int | None,
        typer.Option(
            "--baseline-repeats",
            help="Times each re-rated baseline read is timed (default: --repeats; 0 skips).",
        ),
    ] = None,
    keep_db: Annotated[
        Path | None,
        typer.Option("--keep-db", help="Keep a copy of the ledger with buckets at this path."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure finance reads from rated-usage buckets (p95), ingest with and without
    keeping them, and audit throughput."""
    from meterline.bench.finance import run_finance_benchmark

    try:
        result = run_finance_benchmark(
            events,
            customers,
            repeats,
            progress=None if as_json else console,
            baseline_repeats=baseline_repeats,
            keep_db=keep_db,
        )
    except ValueError as error:
        raise fail(str(error), highlight=False) from None
    _print_figures(result, as_json, 36)


@bench_app.command("controls")
def bench_controls(
    probes: Annotated[
        int, typer.Option("--probes", help="Customers driven over their credit pool, one each.")
    ] = 200,
    events: Annotated[
        int, typer.Option("--events", help="Events per ingest throughput run.")
    ] = 200_000,
    rounds: Annotated[
        int,
        typer.Option("--rounds", help="Throughput runs per configuration (the best counts)."),
    ] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure the live controls: ingest to block, access answers, the SDK gate, and
    ingest throughput with controls against without, in one run."""
    from meterline.bench.control_latency import run_controls_benchmark

    result = run_controls_benchmark(
        probes, events, rounds=rounds, progress=None if as_json else console
    )
    _print_figures(result, as_json, 36, markup=False)


WritersOption = Annotated[
    bool,
    typer.Option(
        "--writers/--no-writers",
        help="Also measure 1 and 2 partition writers fed prepared batches.",
    ),
]
QuickOption = Annotated[
    bool,
    typer.Option("--quick", help="Fewer, smaller runs (partitions 1,2; 10,000 events)."),
]
ProfileOption = Annotated[
    bool,
    typer.Option(
        "--profile/--no-profile",
        help="Also run 1 worker (most partitions) under cProfile and list its top"
        " functions (one more run, not a figure).",
    ),
]
PostgresOption = Annotated[
    str,
    typer.Option(
        "--postgres",
        envvar="METERLINE_BENCH_POSTGRES",
        help="PostgreSQL database the benchmark creates (and drops) its schemas in.",
    ),
]
BenchStreamsOption = Annotated[
    int,
    typer.Option(
        "--streams",
        help="JetStream streams the partitions are split over (a configuration with"
        " fewer partitions uses one stream per partition).",
    ),
]


@bench_app.command("scale")
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
    writers: WritersOption = True,
    quick: QuickOption = False,
    profile: ProfileOption = False,
    postgres: PostgresOption = "postgresql://postgres@127.0.0.1:5432/test",
    streams: BenchStreamsOption = 1,
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
        raise fail(str(error)) from None
    if as_json:
        print(json.dumps(result))
    else:
        console.print_json(json.dumps(result))

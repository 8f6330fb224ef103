"""The ledger's commands: ``serve``, ``verify``, ``ingest`` and ``audit``, each a thin
face over one library call (``meterline.api.server``, ``meterline.ledger.integrity``,
``meterline.api.bulk``, ``meterline.billing.service.audit_ledger``).

Exit codes: 0 done; 1 findings (``verify``, ``audit``) or events refused (``ingest``);
2 bad usage; 3 the store cannot be read. Heavy imports stay inside the commands, so
``meterline --help`` loads no store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from meterline.cli.options import (
    DEFAULT_DB,
    EXIT_FINDINGS,
    EXIT_UNREADABLE,
    DbOption,
    console,
    errors,
    existing_ledger,
    fail,
    report,
)
from meterline.core.admission import LAG_MAX_MS_DEFAULT

ServeStreamOption = Annotated[
    str | None,
    typer.Option(
        "--stream",
        envvar="METERLINE_STREAM",
        help="Stream mode: publish events to NATS JetStream (comma-separated nats://"
        " servers) for `meterline worker`, answer access from the workers' decisions.",
    ),
]
ServeNamespaceOption = Annotated[
    str,
    typer.Option(
        "--namespace",
        envvar="METERLINE_NAMESPACE",
        help="Stream mode: names of the stream, subjects and buckets.",
    ),
]
ServeReplicasOption = Annotated[
    int,
    typer.Option(
        "--stream-replicas",
        envvar="METERLINE_STREAM_REPLICAS",
        help="Stream mode: copies JetStream keeps of the stream and buckets (if it creates them).",
    ),
]
ServeStreamsOption = Annotated[
    int,
    typer.Option(
        "--streams",
        envvar="METERLINE_STREAMS",
        help="Stream mode: JetStream streams the partitions are split over by range"
        " (1 to 64, at most the partitions; give workers the same).",
    ),
]
AllowPrivateOption = Annotated[
    bool,
    typer.Option(
        "--webhooks-allow-private",
        help="Let webhooks go to loopback, link-local and private addresses (a receiver"
        " on this host or network); else they are refused. Also"
        " METERLINE_WEBHOOKS_ALLOW_PRIVATE=1.",
    ),
]
LagMaxOption = Annotated[
    str,
    typer.Option(
        "--lag-max-ms",
        envvar="METERLINE_LAG_MAX_MS",
        help="Stream mode: the ingest lag bound. A batch touching a partition whose"
        " oldest acknowledged message the workers have not decided on for longer than"
        " this is refused (429, Retry-After); 0 or off: never.",
    ),
]


def serve(
    db: DbOption = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    stream: ServeStreamOption = None,
    namespace: ServeNamespaceOption = "meterline",
    replicas: ServeReplicasOption = 1,
    streams: ServeStreamsOption = 1,
    webhooks_allow_private: AllowPrivateOption = False,
    lag_max_ms: LagMaxOption = str(LAG_MAX_MS_DEFAULT),
    fd: Annotated[
        int | None,
        typer.Option(
            help="Serve on this inherited, already listening socket instead of binding"
            " --host/--port (socket activation by a supervisor).",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs)."""
    from meterline.api.server import serve as run_server
    from meterline.core.admission import parse_lag_bound
    from meterline.errors import MeterlineError

    try:
        bound = parse_lag_bound(lag_max_ms)
    except ValueError as error:
        raise fail(f"--lag-max-ms: {error}") from None
    try:
        run_server(
            db,
            host,
            port,
            stream,
            namespace,
            replicas,
            webhooks_allow_private=True if webhooks_allow_private else None,
            streams=streams,
            lag_max_ms=bound,
            fd=fd,
        )
    except ValueError as error:
        message = str(error)
        raise fail(message if message.startswith("--") else f"--stream: {message}") from None
    except MeterlineError as error:  # the streams on NATS are laid out otherwise
        raise fail(str(error)) from None


def verify(
    db: DbOption = DEFAULT_DB,
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            help="Checkpoints exported earlier (`meterline checkpoints export`): the ledger"
            " must still hold everything they recorded.",
        ),
    ] = None,
    public_key: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="Check checkpoint signatures with this key (base64, or a file holding it);"
            " else METERLINE_CHECKPOINT_PUBLIC_KEY, else the configured signing key's.",
        ),
    ] = None,
) -> None:
    """Check the store, its append-only triggers, every partition's events, batches and
    head, and every checkpoint (stored, and those in --checkpoints); exit 1 naming the
    first bad item, 3 if the store cannot be read."""
    from meterline.ledger.checkpoints import CheckpointKeyError, load_public_key, split_notes
    from meterline.ledger.integrity import verify_ledger

    existing_ledger(db)
    try:
        key = load_public_key(public_key)
        notes = (
            []
            if checkpoints is None
            else [
                (f"{checkpoints.name} note {number}", note)
                for number, note in enumerate(split_notes(checkpoints.read_text()), 1)
            ]
        )
    except (CheckpointKeyError, OSError) as error:
        raise fail(str(error)) from None
    verification = verify_ledger(db, notes, key)
    if verification.unreadable:
        for finding in verification.findings:
            report("[red]error:[/red]", str(finding))
        raise typer.Exit(EXIT_UNREADABLE)
    chain = verification.chain
    assert chain is not None
    if verification.passed:
        console.print(
            f"[green]intact[/green]: {chain.records:,} events, head sequence "
            f"{chain.head_sequence}, head hash {chain.head_hash.hex()}"
        )
        return
    for finding in verification.findings:
        report("[red]BROKEN[/red]", str(finding))
    if chain.intact:
        errors.print(f"(the chain itself is intact: {chain.records:,} events)")
    else:
        errors.print(f"({chain.records:,} events verified before the first bad one)")
    raise typer.Exit(EXIT_FINDINGS)


def ingest(
    file: Annotated[Path, typer.Argument(help="JSON array or NDJSON file of events; - for stdin.")],
    db: DbOption = DEFAULT_DB,
    cloudevents: Annotated[bool, typer.Option(help="Events are CloudEvents 1.0.")] = False,
    batch: Annotated[int, typer.Option(help="Events per atomic append.")] = 1000,
) -> None:
    """Bulk-ingest a file of events; exit 1 if any event was rejected or conflicted."""
    from meterline.api.bulk import ingest_file
    from meterline.errors import InputError
    from meterline.ledger import open_ledger

    with open_ledger(db) as ledger:
        try:
            totals = ingest_file(ledger, file, cloudevents=cloudevents, batch_events=batch)
        except InputError as error:
            raise fail(str(error)) from None
    console.print(json.dumps(totals.counts))
    for problem in totals.problems[:20]:
        errors.print(problem)
    if totals.counts["rejected"] or totals.counts["conflict"]:
        raise typer.Exit(1)


def audit(db: DbOption = DEFAULT_DB) -> None:
    """Re-derive every finalized invoice from the raw ledger and check everything verify
    does and every revision's hashes; exit 1 naming the first bad item, 3 if the store
    cannot be read."""
    from meterline.billing.render import audit_lines
    from meterline.billing.service import audit_ledger

    existing_ledger(db)
    audit_report = audit_ledger(db)
    if audit_report.unreadable:
        for finding in audit_report.findings:
            if finding.check == "store":
                report("[red]error:[/red]", str(finding))
        raise typer.Exit(EXIT_UNREADABLE)
    for text in audit_lines(audit_report):
        (console if audit_report.passed else errors).print(text, highlight=False, soft_wrap=True)
    if not audit_report.passed:
        raise typer.Exit(EXIT_FINDINGS)

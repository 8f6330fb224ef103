"""The ``meterline`` command: one thin command per job, each a call into the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from meterline.clock import NOW_VARIABLE, ClockSettingError, clock_offset_us, system_clock_us
from meterline.core.admission import LAG_MAX_MS_DEFAULT
from meterline.core.events import format_timestamp
from meterline.ledger.location import ledger_exists

if TYPE_CHECKING:
    from meterline.billing.service import Billing

PIPED_WIDTH = 140
"""Columns Rich uses when stdout is not a terminal (it would otherwise assume 80)."""

app = typer.Typer(
    help="meterline: the usage ledger and monetization engine for AI products.",
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print their figures.", no_args_is_help=True)
invoices_app = typer.Typer(
    help="Draft, close, list, show and correct invoices.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(invoices_app, name="invoices")
credits_app = typer.Typer(
    help="Credit balances and ledger; grant, void and adjust credits.", no_args_is_help=True
)
app.add_typer(credits_app, name="credits")
app.add_typer(bench_app, name="bench")
console = Console()
if not console.is_terminal:
    console = Console(width=PIPED_WIDTH)  # piped output: wide enough for invoice tables
errors = Console(stderr=True, soft_wrap=True)
"""Messages are not wrapped: one error is one line, whatever the terminal's width."""

DEFAULT_DB = "meterline.db"
DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="METERLINE_DB",
        help="Ledger: a SQLite file, or a postgresql:// URL (the production store).",
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@app.command()
def serve(
    db: DbOption = DEFAULT_DB,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8787,
    stream: Annotated[
        str | None,
        typer.Option(
            "--stream",
            envvar="METERLINE_STREAM",
            help="Stream mode: publish events to NATS JetStream (comma-separated nats://"
            " servers) for `meterline worker`, answer access from the workers' decisions.",
        ),
    ] = None,
    namespace: Annotated[
        str,
        typer.Option(
            "--namespace",
            envvar="METERLINE_NAMESPACE",
            help="Stream mode: names of the stream, subjects and buckets.",
        ),
    ] = "meterline",
    replicas: Annotated[
        int,
        typer.Option(
            "--stream-replicas",
            envvar="METERLINE_STREAM_REPLICAS",
            help="Stream mode: copies JetStream keeps of the stream and buckets (if it"
            " creates them).",
        ),
    ] = 1,
    streams: Annotated[
        int,
        typer.Option(
            "--streams",
            envvar="METERLINE_STREAMS",
            help="Stream mode: JetStream streams the partitions are split over by range"
            " (1 to 64, at most the partitions; give workers the same).",
        ),
    ] = 1,
    webhooks_allow_private: Annotated[
        bool,
        typer.Option(
            "--webhooks-allow-private",
            help="Let webhooks go to loopback, link-local and private addresses (a receiver"
            " on this host or network); else they are refused. Also"
            " METERLINE_WEBHOOKS_ALLOW_PRIVATE=1.",
        ),
    ] = False,
    lag_max_ms: Annotated[
        str,
        typer.Option(
            "--lag-max-ms",
            envvar="METERLINE_LAG_MAX_MS",
            help="Stream mode: the ingest lag bound. A batch touching a partition whose"
            " oldest acknowledged message the workers have not decided on for longer than"
            " this is refused (429, Retry-After); 0 or off: never.",
        ),
    ] = str(LAG_MAX_MS_DEFAULT),
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, docs at /docs)."""
    from meterline.core.admission import parse_lag_bound
    from meterline.errors import MeterlineError
    from meterline.server import serve as run_server

    try:
        bound = parse_lag_bound(lag_max_ms)
    except ValueError as error:
        raise _fail(f"--lag-max-ms: {error}") from None
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
        )
    except ValueError as error:
        message = str(error)
        raise _fail(message if message.startswith("--") else f"--stream: {message}") from None
    except MeterlineError as error:  # the streams on NATS are laid out otherwise
        raise _fail(str(error)) from None


EXIT_FINDINGS = 1
"""``verify`` / ``audit``: the ledger was read and something in it does not check."""
EXIT_USAGE = 2
"""Bad usage: no such ledger, an invalid option."""
EXIT_UNREADABLE = 3
"""``verify`` / ``audit``: the store cannot be read (a damaged SQLite file, an
unreachable database), so nothing in it could be checked."""


def _existing_ledger(db: str) -> None:
    """Exit 2 when there is no ledger at ``db``, 3 when its server cannot be reached."""
    from meterline.errors import StoreError

    try:
        exists = ledger_exists(db)
    except StoreError as error:
        _report("[red]error:[/red]", str(error))
        raise typer.Exit(EXIT_UNREADABLE) from None
    if not exists:
        _report("[red]error:[/red]", f"{db}: no such ledger")
        raise typer.Exit(EXIT_USAGE)


def _report(label: str, text: str) -> None:
    """One line on stderr, never wrapped, ``text`` printed as it is (no markup) but on
    one line (a driver's message may hold several)."""
    errors.print(f"{label} {escape(' '.join(text.split()))}", highlight=False, soft_wrap=True)


@app.command()
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

    _existing_ledger(db)
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
        raise _fail(str(error)) from None
    report = verify_ledger(db, notes, key)
    if report.unreadable:
        for finding in report.findings:
            _report("[red]error:[/red]", str(finding))
        raise typer.Exit(EXIT_UNREADABLE)
    chain = report.chain
    assert chain is not None
    if report.passed:
        console.print(
            f"[green]intact[/green]: {chain.records:,} events, head sequence "
            f"{chain.head_sequence}, head hash {chain.head_hash.hex()}"
        )
        return
    for finding in report.findings:
        _report("[red]BROKEN[/red]", str(finding))
    if chain.intact:
        errors.print(f"(the chain itself is intact: {chain.records:,} events)")
    else:
        errors.print(f"({chain.records:,} events verified before the first bad one)")
    raise typer.Exit(EXIT_FINDINGS)


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="JSON array or NDJSON file of events; - for stdin.")],
    db: DbOption = DEFAULT_DB,
    cloudevents: Annotated[bool, typer.Option(help="Events are CloudEvents 1.0.")] = False,
    batch: Annotated[int, typer.Option(help="Events per atomic append.")] = 1000,
) -> None:
    """Bulk-ingest a file of events; exit 1 if any event was rejected or conflicted."""
    from meterline.bulk import ingest_file
    from meterline.errors import InputError
    from meterline.ledger import open_ledger

    with open_ledger(db) as ledger:
        try:
            totals = ingest_file(ledger, file, cloudevents=cloudevents, batch_events=batch)
        except InputError as error:
            raise _fail(str(error)) from None
    console.print(json.dumps(totals.counts))
    for problem in totals.problems[:20]:
        errors.print(problem)
    if totals.counts["rejected"] or totals.counts["conflict"]:
        raise typer.Exit(1)


@keys_app.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="ingest, read or admin.")],
    db: DbOption = DEFAULT_DB,
    customer: Annotated[str | None, typer.Option(help="Bind the key to one customer.")] = None,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from meterline.keys import create_key
    from meterline.ledger.ledger import open_store

    store = open_store(db)
    try:
        key_id, token = create_key(store, scope, system_clock_us(), customer, name)
    except ValueError as error:
        raise _fail(str(error)) from None
    finally:
        store.close()
    errors.print(f"created key {key_id} with scope {scope!r}; store it now, it is not shown again")
    print(token)


@keys_app.command("list")
def keys_list(db: DbOption = DEFAULT_DB) -> None:
    """List keys (ids, scopes, bindings; never secrets)."""
    from meterline.core.events import format_timestamp
    from meterline.ledger.ledger import open_store

    store = open_store(db)
    for key_id, scope, customer, name, created, revoked in store.list_keys():
        state = f"revoked {format_timestamp(revoked)}" if revoked else "active"
        print(f"{key_id}\t{scope}\t{customer or '*'}\t{name}\t{format_timestamp(created)}\t{state}")
    store.close()


@keys_app.command("revoke")
def keys_revoke(key_id: str, db: DbOption = DEFAULT_DB) -> None:
    """Revoke a key; it is refused from the next request on."""
    from meterline.ledger.ledger import open_store

    store = open_store(db)
    revoked = store.revoke_key(key_id, system_clock_us())
    store.close()
    if not revoked:
        raise _fail(f"no active key {key_id!r}")
    print(f"revoked {key_id}")


def _instant(value: str | None, name: str) -> int | None:
    """A CLI date (2026-11-01, UTC midnight) or RFC 3339 timestamp as microseconds."""
    from datetime import UTC, datetime

    from meterline.core.events import timestamp_to_us

    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(f"{name}: {value!r} is not a date (2026-11-01) or RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return timestamp_to_us(moment)


@app.command()
def apply(
    file: Annotated[Path, typer.Option("--file", "-f", help="Pricing YAML to apply.")],
    db: DbOption = DEFAULT_DB,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and simulate only; store nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    allow_retire_all: Annotated[
        bool,
        typer.Option(
            "--allow-retire-all",
            help="Apply even a file that defines no meters, plans or contracts, or keeps none"
            " of those in force (it retires every one).",
        ),
    ] = False,
) -> None:
    """Apply a pricing file: plan of changes, customers affected, last period simulated."""
    from meterline.billing.render import changes_table, simulation_table
    from meterline.billing.service import open_billing
    from meterline.config.source import ConfigurationError, RetireAllRefused

    if not file.exists():
        raise _fail(f"{file}: no such file")
    with open_billing(db) as billing:
        try:
            report = billing.apply(
                file.read_text(),
                name=file.name,
                dry_run=dry_run,
                allow_retire_all=allow_retire_all,
            )
        except ConfigurationError as error:
            for problem in error.errors:
                errors.print(f"[red]error:[/red] {problem}", highlight=False)
            if isinstance(error, RetireAllRefused):
                errors.print("nothing applied; to do this on purpose: --allow-retire-all")
            raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    console.print(changes_table(report))
    console.print(f"customers affected: {', '.join(report.customers_affected) or 'none'}")
    if report.simulation:
        console.print(simulation_table(report))
    if dry_run:
        console.print("[yellow]dry run[/yellow]: nothing stored")
    else:
        console.print(f"applied as revision [bold]{report.revision}[/bold]")


def _print_document(document: dict[str, object], as_json: bool) -> None:
    from meterline.billing.render import invoice_table

    if as_json:
        print(json.dumps(document))
    else:
        console.print(invoice_table(document))


@invoices_app.command("draft")
def invoices_draft(
    customer: str,
    db: DbOption = DEFAULT_DB,
    at: Annotated[str | None, typer.Option(help="An instant in the period (default now).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the document as JSON.")] = False,
) -> None:
    """The current period's invoice, recomputed from the ledger now."""
    from meterline.billing.service import BillingError, open_billing

    with open_billing(db) as billing:
        try:
            document = billing.draft(customer, _instant(at, "--at"))
        except BillingError as error:
            raise _fail(str(error), 1) from None
    _print_document(document, as_json)


@invoices_app.command("close")
def invoices_close(
    db: DbOption = DEFAULT_DB,
    through: Annotated[
        str | None, typer.Option(help="Close periods ending by this instant (default now).")
    ] = None,
) -> None:
    """Finalize every period that has ended: numbered, immutable, hashed. A customer that
    cannot be rated is named with the reason (exit 1); the others are closed regardless."""
    from meterline.billing.service import BillingError, open_billing
    from meterline.billing.unbillable import publish_unbillable
    from meterline.core.events import decode_exact
    from meterline.ledger.webhooks import WebhookStore
    from meterline.live.webhooks import Webhooks

    with open_billing(db) as billing:
        webhooks = Webhooks(WebhookStore(billing.store.path), clock=billing.clock)
        billing.unbillable_listeners.append(
            lambda found: publish_unbillable(webhooks.publish, found)
        )
        try:
            report = billing.close(_instant(through, "--through"))
        except BillingError as error:
            raise _fail(str(error), 1) from None
        finally:
            webhooks.store.close()
    for invoice in report:
        total = decode_exact(invoice.document)["total"]
        print(f"{invoice.invoice_id}\t{invoice.customer}\t{total}\t{invoice.document_sha256.hex()}")
    for failure in report.failed:
        errors.print(
            f"[red]not closed:[/red] {failure.customer}: {failure.reason}", highlight=False
        )
    if report.unbillable:
        events = len({record.sequence for record in report.unbillable})
        customers = len({record.customer for record in report.unbillable})
        errors.print(
            f"unbillable usage: {events} events of {customers} customers"
            " (meterline unbillable lists them)"
        )
    errors.print(f"finalized {len(report)} invoices")
    if report.failed:
        errors.print(f"[red]{len(report.failed)} customers not closed[/red]")
        raise typer.Exit(1)


@app.command()
def unbillable(
    db: DbOption = DEFAULT_DB,
    customer: Annotated[str | None, typer.Option(help="Only this customer's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Usage no invoice can bill (unmeasurable values, no contract...), per customer and
    reason, re-derived from the ledger; and the customers that cannot be rated."""
    from meterline.billing.render import unbillable_tables
    from meterline.billing.service import BillingError, open_billing
    from meterline.billing.unbillable import unbillable_report

    if not ledger_exists(db):
        raise _fail(f"{db}: no such ledger")
    with open_billing(db) as billing:
        try:
            document = unbillable_report(billing, customer).as_dict()
        except BillingError as error:
            raise _fail(str(error), 1) from None
    if as_json:
        print(json.dumps(document))
        return
    for table in unbillable_tables(document):
        console.print(table)
    console.print(
        f"{document['events']:,} unbillable events; {len(document['failed'])} customers"
        " cannot be rated"
    )


@invoices_app.command("thresholds")
def invoices_thresholds(db: DbOption = DEFAULT_DB) -> None:
    """Bill now every customer whose unbilled usage reached its contract's threshold."""
    from meterline.billing.service import BillingError, open_billing
    from meterline.core.events import decode_exact

    with open_billing(db) as billing:
        try:
            made = billing.check_thresholds()
        except BillingError as error:
            raise _fail(str(error), 1) from None
    for invoice in made:
        total = decode_exact(invoice.document)["total"]
        print(f"{invoice.invoice_id}\t{invoice.customer}\t{total}")
    errors.print(f"finalized {len(made)} threshold invoices")


@invoices_app.command("list")
def invoices_list(
    db: DbOption = DEFAULT_DB,
    customer: Annotated[str | None, typer.Option(help="Only this customer's.")] = None,
) -> None:
    """Finalized invoices: id, customer, period, total, hash."""
    from meterline.billing.service import open_billing
    from meterline.core.events import decode_exact, format_timestamp

    with open_billing(db) as billing:
        for invoice in billing.store.invoices(customer):
            document = decode_exact(invoice.document)
            print(
                f"{invoice.invoice_id}\t{invoice.customer}\t"
                f"{format_timestamp(invoice.period_start_us)[:10]}\t"
                f"{document['total']} {document['currency']}\t{invoice.document_sha256.hex()}"
            )


@invoices_app.command("show")
def invoices_show(
    invoice: str,
    db: DbOption = DEFAULT_DB,
    as_json: Annotated[bool, typer.Option("--json", help="Print the document as JSON.")] = False,
) -> None:
    """One finalized invoice with each line's lineage."""
    from meterline.billing.service import BillingError, open_billing

    with open_billing(db) as billing:
        try:
            document = billing.document(invoice)
        except BillingError as error:
            raise _fail(str(error), 1) from None
    _print_document(document, as_json)


@invoices_app.command("credit-note")
def invoices_credit_note(
    invoice: str,
    reason: Annotated[str, typer.Option(help="Why (kept on the note).")],
    db: DbOption = DEFAULT_DB,
    void: Annotated[
        bool, typer.Option("--void", help="Credit the whole invoice (voiding it).")
    ] = False,
) -> None:
    """Issue a credit note: settle an invoice's late events now, or --void it."""
    from meterline.billing.service import BillingError, open_billing

    with open_billing(db) as billing:
        try:
            note = billing.credit_note(invoice, reason, void=void)
        except BillingError as error:
            raise _fail(str(error), 1) from None
    print(note.document.decode())
    errors.print(f"issued {note.note_id} against {invoice}")


@app.command()
def explain(
    invoice: str,
    db: DbOption = DEFAULT_DB,
    line: Annotated[int | None, typer.Option(help="List the events behind this line.")] = None,
    limit: Annotated[int, typer.Option(help="Events to print at most.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Trace an invoice to the ledger: its lines' lineage, or one line's events."""
    from meterline.billing.render import invoice_table
    from meterline.billing.service import BillingError, open_billing

    with open_billing(db) as billing:
        try:
            if line is None:
                console.print(invoice_table(billing.document(invoice)))
                return
            events = billing.explain(invoice, line)
        except BillingError as error:
            raise _fail(str(error), 1) from None
    for record in events[:limit]:
        if as_json:
            print(json.dumps(record, default=str))
        else:
            print(
                f"{record['sequence']}\t{record['timestamp']}\t{record['type']}\t{record['id']}"
                f"\t{json.dumps(record['properties'], default=str)}"
            )
    errors.print(
        f"line {line} of {invoice}: {len(events):,} events ({min(limit, len(events))} shown)"
    )


def _plan_currency(billing: Billing, customer: str) -> str | None:
    """The currency ``customer``'s plan bills in now (what its grants are paid in), for
    display; None when it has no terms in force."""
    from meterline.core.model import TermsError, terms_at

    loaded = billing.load()
    contract = None if loaded is None else loaded.configuration.contract(customer)
    if loaded is None or contract is None:
        return None
    now = billing.clock()
    try:
        return terms_at(loaded.configuration, contract, now, now).plan.currency
    except TermsError:
        return None


@credits_app.command("show")
def credits_show(
    customer: str,
    db: DbOption = DEFAULT_DB,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="The ledger as of this instant (default now).")
    ] = None,
    entries: Annotated[bool, typer.Option(help="Also list every ledger entry.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ledger as JSON.")] = False,
) -> None:
    """A customer's grants with their balances (sums of entries) and per-unit totals."""
    from meterline.billing.render import credit_totals_table, credits_table
    from meterline.billing.service import BillingError, open_billing
    from meterline.core.money import display_amount

    with open_billing(db) as billing:
        try:
            report = billing.credits(customer, _instant(as_of, "--as-of"))
        except BillingError as error:
            raise _fail(str(error), 1) from None
        currency = _plan_currency(billing, customer)
    if as_json:
        print(json.dumps(report))
        return
    console.print(credits_table(report, currency))
    console.print(credit_totals_table(report))
    if entries:
        for entry in report["entries"]:
            amount = display_amount(entry["amount"], entry["unit"])
            console.print(
                f"{entry['at']}  {entry['kind']:<8} {amount:>14} {entry['unit']:<8}"
                f" {entry['debit']} <- {entry['credit']}  {entry['reason']}"
            )


@credits_app.command("grant")
def credits_grant(
    customer: str,
    credit_type: Annotated[str, typer.Option("--type", help="Credit type or currency.")],
    amount: Annotated[str, typer.Option(help="Units granted (exact decimal).")],
    reason: Annotated[str, typer.Option(help="Why (kept on the ledger).")],
    db: DbOption = DEFAULT_DB,
    paid: Annotated[str, typer.Option(help="Price paid (invoiced now); 0: free.")] = "0",
    priority: Annotated[int, typer.Option(help="Lower burns first.")] = 50,
    effective: Annotated[str | None, typer.Option(help="From (default now).")] = None,
    expires: Annotated[str | None, typer.Option(help="Until (default never).")] = None,
    scope: Annotated[
        list[str] | None, typer.Option(help="A meter it may pay for (repeat); default all.")
    ] = None,
) -> None:
    """Grant credit to a customer; a paid grant is invoiced at once."""
    from meterline.billing.service import BillingError, open_billing
    from meterline.core.money import MoneyError, to_bounded_amount

    try:
        units = to_bounded_amount(amount, "--amount")
        price = to_bounded_amount(paid, "--paid")
    except MoneyError as error:
        raise _fail(str(error)) from None
    with open_billing(db) as billing:
        try:
            stored, invoice = billing.grant(
                customer,
                credit_type,
                units,
                reason,
                paid=price,
                priority=priority,
                effective_us=_instant(effective, "--effective"),
                expires_us=_instant(expires, "--expires"),
                scope=tuple(scope or ()),
                source="cli",
            )
        except BillingError as error:
            raise _fail(str(error), 1) from None
    print(f"{stored.grant_id}\t{customer}\t{units} {credit_type}")
    if invoice is not None:
        errors.print(f"invoiced on {invoice.invoice_id}")


@credits_app.command("void")
def credits_void(
    customer: str,
    grant: str,
    reason: Annotated[str, typer.Option(help="Why (kept on the ledger).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Void a grant from now on; its balance leaves to voided (nothing is deleted)."""
    from meterline.billing.service import BillingError, open_billing

    with open_billing(db) as billing:
        try:
            billing.void_grant(customer, grant, reason)
        except BillingError as error:
            raise _fail(str(error), 1) from None
    print(f"voided {grant}")


@credits_app.command("adjust")
def credits_adjust(
    customer: str,
    grant: str,
    amount: Annotated[str, typer.Option(help="Signed units to add or take.")],
    reason: Annotated[str, typer.Option(help="Why (kept on the ledger).")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Adjust a grant's balance by hand, with a reason."""
    from meterline.billing.service import BillingError, open_billing
    from meterline.core.money import MoneyError, to_bounded_amount

    try:
        units = to_bounded_amount(amount, "--amount")
    except MoneyError as error:
        raise _fail(str(error)) from None
    with open_billing(db) as billing:
        try:
            billing.adjust_grant(customer, grant, units, reason)
        except BillingError as error:
            raise _fail(str(error), 1) from None
    print(f"adjusted {grant} by {units}")


@app.command()
def audit(db: DbOption = DEFAULT_DB) -> None:
    """Re-derive every finalized invoice from the raw ledger and check everything verify
    does and every revision's hashes; exit 1 naming the first bad item, 3 if the store
    cannot be read."""
    from meterline.billing.render import audit_lines
    from meterline.billing.service import audit_ledger

    _existing_ledger(db)
    report = audit_ledger(db)
    if report.unreadable:
        for finding in report.findings:
            if finding.check == "store":
                _report("[red]error:[/red]", str(finding))
        raise typer.Exit(EXIT_UNREADABLE)
    for text in audit_lines(report):
        (console if report.passed else errors).print(text, highlight=False, soft_wrap=True)
    if not report.passed:
        raise typer.Exit(EXIT_FINDINGS)


@app.command()
def demo(
    db: Annotated[
        str,
        typer.Option(
            "--db",
            help="Demo ledger: a SQLite file (the default) or a postgresql:// URL; rerunning"
            " on the same ledger adds nothing.",
        ),
    ] = "meterline-demo.db",
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the API after the story.")
    ] = True,
    port: Annotated[int, typer.Option(help="Port for --serve.")] = 8787,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic month.")] = 7,
    scale: Annotated[float, typer.Option(help="Multiply the usage volume.")] = 1.0,
) -> None:
    """Ingest a realistic synthetic month of AI usage and tell what happened."""
    from meterline.demo.story import run_demo

    run_demo(db, console, seed=seed, scale=scale, serve_port=port if serve_after else None)


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
    if as_json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        console.print(
            f"{name:>24}: {value:,}" if isinstance(value, int) else f"{name:>24}: {value}"
        )


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
    if as_json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        counted = isinstance(value, int) and not isinstance(value, bool)
        console.print(f"{name:>24}: {value:,}" if counted else f"{name:>24}: {value}")


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
    from meterline.bench.controls import run_controls_benchmark

    result = run_controls_benchmark(
        probes, events, rounds=rounds, progress=None if as_json else console
    )
    if as_json:
        print(json.dumps(result))
        return
    for name, value in result.items():
        counted = isinstance(value, int) and not isinstance(value, bool)
        console.print(f"{name:>36}: {value:,}" if counted else f"{name:>36}: {value}", markup=False)


# The live engine's and the webhooks' commands live in their own modules (which import
# the shared options above), registered here so every entry point sees them.
from meterline.cli_live import (  # noqa: E402
    controls_app,
    live_app,
    reconcile_command,
)
from meterline.cli_webhooks import webhooks_app  # noqa: E402

app.command("reconcile")(reconcile_command)
from meterline.cli_finance import (  # noqa: E402
    economics_command,
    journal_command,
    revenue_command,
)

app.command(name="journal")(journal_command)
app.command(name="revenue")(revenue_command)
app.command(name="economics")(economics_command)
app.add_typer(live_app, name="live")
app.add_typer(controls_app, name="controls")
app.add_typer(webhooks_app, name="webhooks")
from meterline.cli_export import export_command, sql_command  # noqa: E402

app.command(name="export")(export_command)
app.command(name="sql")(sql_command)
from meterline.cli_checkpoints import (  # noqa: E402
    checkpoints_app,
    prove_command,
    verify_proof_command,
)
from meterline.cli_stream import (  # noqa: E402
    bench_scale_command,
    partitions_command,
    status_command,
    worker_command,
)

app.add_typer(checkpoints_app, name="checkpoints")
app.command(name="prove")(prove_command)
app.command(name="verify-proof")(verify_proof_command)
app.command(name="worker")(worker_command)
app.command(name="status")(status_command)
app.command(name="partitions")(partitions_command)
bench_app.command(name="scale")(bench_scale_command)


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

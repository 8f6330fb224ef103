"""Billing's commands: ``apply`` (a pricing file), ``invoices draft|close|thresholds|
list|show|credit-note``, ``unbillable`` and ``explain``, each one call into
``meterline.billing.service`` printed by ``meterline.billing.render``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meterline.cli.options import DEFAULT_DB, DbOption, console, errors, fail, instant
from meterline.ledger.location import ledger_exists

if TYPE_CHECKING:
    from meterline.core.documents import Invoice

invoices_app = typer.Typer(
    help="Draft, close, list, show and correct invoices.", no_args_is_help=True
)


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
        raise fail(f"{file}: no such file")
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


def _print_document(document: Invoice, as_json: bool) -> None:
    from meterline.billing.render import invoice_table
    from meterline.core.documents import document_data

    if as_json:
        print(json.dumps(document_data(document)))
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
            document = billing.draft(customer, instant(at, "--at"))
        except BillingError as error:
            raise fail(str(error), 1) from None
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
    from meterline.ledger.webhook_records import WebhookStore
    from meterline.live.webhook_service import Webhooks

    with open_billing(db) as billing:
        webhooks = Webhooks(WebhookStore(billing.store.path), clock=billing.clock)
        billing.unbillable_listeners.append(
            lambda found: publish_unbillable(webhooks.publish, found)
        )
        try:
            report = billing.close(instant(through, "--through"))
        except BillingError as error:
            raise fail(str(error), 1) from None
        finally:
            webhooks.store.close()
    for invoice in report:
        total = invoice.record.total
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


def unbillable(
    db: DbOption = DEFAULT_DB,
    customer: Annotated[str | None, typer.Option(help="Only this customer's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Usage no invoice can bill (unmeasurable values, no contract...), per customer and
    reason, re-derived from the ledger; and the customers that cannot be rated."""
    from meterline.billing.render import unbillable_tables
    from meterline.billing.service import BillingError, open_billing
    from meterline.billing.unbillable_report import unbillable_report

    if not ledger_exists(db):
        raise fail(f"{db}: no such ledger")
    with open_billing(db) as billing:
        try:
            document = unbillable_report(billing, customer).as_dict()
        except BillingError as error:
            raise fail(str(error), 1) from None
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

    with open_billing(db) as billing:
        try:
            made = billing.check_thresholds()
        except BillingError as error:
            raise fail(str(error), 1) from None
    for invoice in made:
        total = invoice.record.total
        print(f"{invoice.invoice_id}\t{invoice.customer}\t{total}")
    errors.print(f"finalized {len(made)} threshold invoices")


@invoices_app.command("list")
def invoices_list(
    db: DbOption = DEFAULT_DB,
    customer: Annotated[str | None, typer.Option(help="Only this customer's.")] = None,
) -> None:
    """Finalized invoices: id, customer, period, total, hash."""
    from meterline.billing.service import open_billing
    from meterline.core.events import format_timestamp

    with open_billing(db) as billing:
        for invoice in billing.store.invoices(customer):
            document = invoice.record
            print(
                f"{invoice.invoice_id}\t{invoice.customer}\t"
                f"{format_timestamp(invoice.period_start_us)[:10]}\t"
                f"{document.total} {document.currency}\t{invoice.document_sha256.hex()}"
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
            raise fail(str(error), 1) from None
    _print_document(document, as_json)


@invoices_app.command("credit-note")
def invoices_credit_note(
    invoice: str,
    reason: Annotated[str, typer.Option(help="Why (kept on the note).")],
    db: DbOption = DEFAULT_DB,
    void: Annotated[
        bool, typer.Option("--void", help="Credit the whole invoice (voiding it).")
    ] = False,
    line: Annotated[
        list[int] | None,
        typer.Option("--line", help="Credit this line in full, with its tax (repeatable)."),
    ] = None,
    amount: Annotated[
        str | None,
        typer.Option("--amount", help="Credit this pre-tax amount, spread over the charges."),
    ] = None,
) -> None:
    """Issue a credit note: settle an invoice's late events now, credit chosen --line(s) or
    an --amount (with their tax), or --void it."""
    from meterline.billing.service import BillingError, open_billing
    from meterline.core.money import MoneyError, to_bounded_amount

    try:
        exact = None if amount is None else to_bounded_amount(amount, "--amount")
    except MoneyError as error:
        raise fail(str(error), 2) from None
    with open_billing(db) as billing:
        try:
            note = billing.credit_note(invoice, reason, void=void, lines=line or (), amount=exact)
        except BillingError as error:
            raise fail(str(error), 1) from None
    print(note.document.decode())
    errors.print(f"issued {note.note_id} against {invoice}")


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
            raise fail(str(error), 1) from None
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

"""The live engine's commands: ``reconcile``, ``live show``, ``access`` and the controls
(``controls firings``, ``controls unblock|extend|grant``). Thin over ``meterline.live``.

Commands that act (overrides) record in the ledger's file; a running server applies an
override recorded by another process within a second (``LiveEngine`` polls for them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from meterline.cli.options import DEFAULT_DB, DbOption, console, fail
from meterline.ledger.location import ledger_exists

if TYPE_CHECKING:
    from meterline.live.service import LiveEngine

controls_app = typer.Typer(
    help="Control firings and finance's overrides (unblock, extend, grant).",
    no_args_is_help=True,
)
live_app = typer.Typer(help="Live figures from the live projection.", no_args_is_help=True)


@contextmanager
def _engine(db: str, act: bool = True) -> Iterator[LiveEngine]:
    """A live engine over ``db`` in this process (no thread): rebuilt from the ledger;
    without ``act``, a read-only look that evaluates and records nothing."""
    from meterline.live.local import local_engine

    if not ledger_exists(db):
        raise fail(f"--db: {db} does not exist")
    with local_engine(db, act) as engine:
        yield engine


def reconcile_command(
    db: DbOption = DEFAULT_DB,
    url: Annotated[
        str | None, typer.Option(help="Check this running server's live figures instead.")
    ] = None,
    key: Annotated[
        str | None, typer.Option(envvar="METERLINE_KEY", help="API key (read) for --url.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    chain: Annotated[
        bool,
        typer.Option(
            "--chain/--no-chain",
            help="Also prove events -> rated usage -> invoices -> journal -> reports agree.",
        ),
    ] = True,
) -> None:
    """Prove live figures equal a full re-rating, and that events, rated usage, invoices,
    the journal and its reports agree (exit 1 on any difference)."""
    import httpx

    from meterline.billing.service import BillingError, open_billing
    from meterline.live.reconcile import reconcile

    if url is not None and not key:
        raise fail("--key: --url needs an API key with the read scope")
    if not ledger_exists(db):
        raise fail(f"--db: {db} does not exist")
    from meterline.finance.truth import one_truth

    truth = None
    with open_billing(db) as billing:
        try:
            report = reconcile(billing, url, key)
            truth = one_truth(billing) if chain else None
        except BillingError as error:
            raise fail(str(error), 1) from None
        except httpx.HTTPStatusError as error:
            # a refusal is not a difference (exit 1): say which option is wrong
            status = error.response.status_code
            named = "--key" if status in (401, 403) else "--url"
            raise fail(f"{named}: {url} answered {status} {error.response.text[:200]}") from None
        except httpx.HTTPError as error:
            raise fail(f"--url: cannot read {url}: {error}") from None
    agrees = truth is None or truth.agrees
    if as_json:
        document = report.as_dict()
        if truth is not None:
            document["chain"] = truth.as_dict()
        print(json.dumps(document))
    else:
        table = Table(title=f"Reconcile through ledger cut {report.through}")
        for column in ("customer", "figure", "live", "batch", ""):
            table.add_column(column)
        for check in report.customers:
            for name, (live, batch) in check.checked.items():
                mark = "ok" if live == batch else "[red]DIFFERS[/red]"
                table.add_row(check.customer, name, live, batch, mark)
            for difference in check.differences:
                table.add_row(check.customer, "[red]difference[/red]", difference, "", "")
        console.print(table)
        source = f"server {url}" if url else f"{report.batches} committed batches replayed"
        verdict = "[green]live == batch[/green]" if report.passed else "[red]DIFFERENT[/red]"
        console.print(f"{verdict} ({source}; {len(report.customers)} customers)")
        if report.bucket_difference is not None:
            console.print(f"[red]rated-usage buckets differ:[/red] {report.bucket_difference}")
        elif report.buckets_checked:
            console.print("[green]rated-usage buckets == a re-derivation from raw events[/green]")
        if truth is not None:
            from meterline.finance.render import truth_table

            console.print(truth_table(truth))
    if not report.passed or not agrees:
        raise typer.Exit(1)


@live_app.command("show")
def live_show(
    customer: str,
    db: DbOption = DEFAULT_DB,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """A customer's live figures: spend, cost, margin, prepaid, remaining credit, lines."""
    from meterline.billing.service import BillingError
    from meterline.core.live_documents import plain

    with _engine(db, act=False) as engine:
        try:
            figures = engine.projection.figures(customer)
        except BillingError as error:  # this customer cannot be rated: say why
            raise fail(str(error), 1) from None
        access = engine.controls.access(customer)
    if figures is None:
        raise fail(f"customer: {customer!r} has no contract in force", 1)
    document = plain(figures.document(access))
    if as_json:
        print(json.dumps(document))
        return
    from meterline.core.money import display_amount, display_quantity

    currency = document["currency"]

    def shown(name: str) -> str:
        return display_amount(document[name], currency)

    console.print(
        f"{customer}  {document['period']['start']} .. {document['period']['end']}"
        f"  spend {shown('spend')}  cost {shown('cost')}  margin {shown('margin')}"
        f"  prepaid {shown('prepaid')}  {currency}"
    )
    for unit, value in document["remaining"].items():
        console.print(f"remaining {unit}: {display_amount(value, unit)}")
    console.print(f"access: {'allowed' if access.allowed else 'DENIED'} {access.reason}".rstrip())
    table = Table()
    for column in ("meter", "group", "quantity", "amount", "unit", "cost"):
        table.add_column(column)
    for line in document["lines"]:
        group = ",".join(f"{k}={v}" for k, v in line["group"].items())
        amount = line["amount"]
        table.add_row(
            line["meter"],
            group,
            display_quantity(line["quantity"]),
            "" if amount is None else display_amount(amount, line["unit"] or currency),
            line["unit"] or "",
            display_amount(line["cost"], currency),
        )
    console.print(table)


@controls_app.command("firings")
def controls_firings(
    db: DbOption = DEFAULT_DB,
    customer: Annotated[str | None, typer.Option(help="Only this customer.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the firings as JSON.")] = False,
) -> None:
    """Every control firing: policy, level, observed values, actions and their outcomes."""
    from meterline.core.live_documents import plain
    from meterline.ledger.control_records import ControlStore
    from meterline.live.control_engine import firing_document

    if not ledger_exists(db):
        raise fail(f"--db: {db} does not exist")
    store = ControlStore(db)
    try:
        results = store.results()
        rows = [plain(firing_document(f, results)) for f in store.firings(customer)]
        overrides = store.overrides(customer)
    finally:
        store.close()
    if as_json:
        print(json.dumps({"firings": rows}))
        return
    table = Table(title="Control firings")
    for column in (
        "firing",
        "at",
        "customer",
        "policy",
        "level",
        "sequence",
        "observed",
        "actions",
    ):
        table.add_column(column)
    from meterline.core.money import display_figure

    for row in rows:
        observed = ", ".join(f"{k}={display_figure(v)}" for k, v in row["observed"].items())
        outcomes = "; ".join(f"{a}: {json.dumps(r)}" for a, r in row["results"].items())
        table.add_row(
            row["firing"],
            row["at"],
            row["customer"],
            row["policy"],
            row["level"],
            str(row["sequence"]),
            observed,
            outcomes,
        )
    console.print(table)
    for override in overrides:
        console.print(
            f"{override.override_id} {override.kind} {override.customer}"
            f" {override.policy or ''} {override.amount or ''}"
            f" by {override.actor}: {override.reason}"
        )


def _override(db: str, customer: str, kind: str, reason: str, **fields: Any) -> None:
    from meterline.billing.service import BillingError
    from meterline.live.control_engine import OverrideError
    from meterline.live.control_overrides import Override

    with _engine(db) as engine:
        try:
            record = engine.controls.override(Override(customer, kind, reason, "cli", **fields))
        except (OverrideError, BillingError) as error:
            raise fail(str(error), 1) from None
        access = engine.controls.access(customer)
    console.print(
        f"{record.override_id}: {kind} {customer} recorded; access now"
        f" {'allowed' if access.allowed else 'denied: ' + access.reason}"
    )


def _amount(value: str, name: str) -> object:
    from meterline.core.money import MoneyError, to_bounded_amount

    try:
        return to_bounded_amount(value, name)
    except MoneyError as error:
        raise fail(str(error)) from None


ReasonOption = Annotated[str, typer.Option(help="Why (recorded with the override).")]


@controls_app.command("unblock")
def controls_unblock(
    customer: str,
    reason: ReasonOption,
    db: DbOption = DEFAULT_DB,
    policy: Annotated[str | None, typer.Option(help="Only this control's block.")] = None,
) -> None:
    """Lift a customer's blocks (all, or one control's); the control re-fires only after
    its condition clears and crosses again."""
    _override(db, customer, "unblock", reason, policy=policy)


@controls_app.command("extend")
def controls_extend(
    customer: str,
    policy: Annotated[str, typer.Option(help="The control whose limit to raise.")],
    amount: Annotated[str, typer.Option(help="How much to raise it (exact decimal).")],
    reason: ReasonOption,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Raise a control's limit for a customer (a balance may go this much further below
    zero; a spend or cost limit moves up by it)."""
    _override(db, customer, "extend", reason, policy=policy, amount=_amount(amount, "--amount"))


@controls_app.command("grant")
def controls_grant(
    customer: str,
    credit_type: Annotated[str, typer.Option("--type", help="Credit type or currency.")],
    amount: Annotated[str, typer.Option(help="Units granted (exact decimal).")],
    reason: ReasonOption,
    db: DbOption = DEFAULT_DB,
    paid: Annotated[str, typer.Option(help="Price paid (invoiced now); 0: free.")] = "0",
) -> None:
    """Grant credits as an override (recorded with the reason; a block on an exhausted
    balance lifts when the balance is positive again)."""
    _override(
        db,
        customer,
        "grant",
        reason,
        amount=_amount(amount, "--amount"),
        credit_type=credit_type,
        paid=_amount(paid, "--paid"),
    )


@controls_app.command("access")
def controls_access(
    customer: str,
    db: DbOption = DEFAULT_DB,
    feature: Annotated[str | None, typer.Option(help="The feature asked about.")] = None,
) -> None:
    """The access answer for a customer (and feature), as the API gives it: the controls
    are evaluated on the ledger as it stands (recording any crossing, once, as a server
    would)."""
    from meterline.core.live_documents import plain

    with _engine(db) as engine:
        answer = engine.controls.access(customer, feature)
    print(json.dumps(plain(answer)))
    if not answer.allowed:
        raise typer.Exit(3)

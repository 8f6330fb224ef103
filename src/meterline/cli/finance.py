"""Finance's commands: ``journal``, ``revenue`` and ``economics``, each one call into
``meterline.finance`` over the ledger's file, printed as a table, CSV, Beancount or JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from meterline.cli.options import DEFAULT_DB, AsOfOption, DbOption, console, fail, instant
from meterline.ledger.location import ledger_exists

JOURNAL_FORMATS = ("table", "csv", "beancount", "json")


@contextmanager
def _billing(db: str) -> Iterator[Any]:
    from meterline.billing.service import open_billing

    if not ledger_exists(db):
        raise fail(f"--db: {db} does not exist")
    with open_billing(db) as billing:
        if billing.load() is None:
            raise fail(f"--db: {db} has no pricing applied (meterline apply)")
        yield billing


def _write(text: str, out: Path | None) -> None:
    if out is None:
        print(text, end="")
        return
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(out)
    console.print(f"wrote {out}")


def journal_command(
    db: DbOption = DEFAULT_DB,
    output_format: Annotated[
        str, typer.Option("--format", help="table, csv (general-ledger rows), beancount, json.")
    ] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
    customer: Annotated[
        str | None, typer.Option("--customer", help="Only this customer's entries.")
    ] = None,
    as_of: AsOfOption = None,
    monthly: Annotated[
        bool,
        typer.Option(
            "--monthly",
            help="The monthly summary journal for the general ledger (one entry per month and"
            " currency; the daily entries are its subledger).",
        ),
    ] = False,
) -> None:
    """The revenue-recognition journal (double entry), derived from invoices and credits."""
    from meterline.finance.books import Books, build_books, journal_rows
    from meterline.finance.general_ledger_files import journal_beancount, journal_csv

    if output_format not in JOURNAL_FORMATS:
        raise fail(f"--format: {output_format!r} is not one of {', '.join(JOURNAL_FORMATS)}")
    at = instant(as_of, "--as-of")
    with _billing(db) as billing:
        books = build_books(billing, at)
    if customer is not None:
        books = Books(books.for_customer(customer), books.grants, books.as_of, books.reporting)
    if monthly:
        from meterline.core.journal import monthly_summary

        books = Books(monthly_summary(books.entries), books.grants, books.as_of, books.reporting)
    if output_format == "csv":
        _write(journal_csv(books), out)
    elif output_format == "beancount":
        _write(journal_beancount(books), out)
    elif output_format == "json":
        rows = [
            {k: str(v) if isinstance(v, Decimal | date) else v for k, v in row.items()}
            for row in journal_rows(books)
        ]
        _write(json.dumps(rows) + "\n", out)
    else:
        from meterline.core.money import display_amount

        table = Table(title=f"Journal ({len(books.entries)} entries)")
        for column in ("date", "entry", "account", "debit", "credit", "cause"):
            table.add_column(column, justify="right" if column in ("debit", "credit") else "left")
        for row in journal_rows(books):
            currency = row["currency"]
            table.add_row(
                row["date"].isoformat(),
                row["entry_id"],
                row["account"],
                f"{display_amount(row['debit'], currency)} {currency}" if row["debit"] else "",
                f"{display_amount(row['credit'], currency)} {currency}" if row["credit"] else "",
                row["cause"],
            )
        console.print(table)


def revenue_command(
    db: DbOption = DEFAULT_DB,
    month: Annotated[
        str | None,
        typer.Option("--month", help="Roll deferred revenue forward over this month (YYYY-MM)."),
    ] = None,
    as_of: AsOfOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
    balances_at: Annotated[
        str | None,
        typer.Option(
            "--balances-at",
            help="The trial balance at the end of this date (YYYY-MM-DD), as known now or"
            " --as-of.",
        ),
    ] = None,
    bridge: Annotated[
        str | None,
        typer.Option(
            "--bridge",
            help="Bridge this month (YYYY-MM) from billed to recognized revenue, line by line"
            " (instead of the reports).",
        ),
    ] = None,
    billed: Annotated[
        str,
        typer.Option(
            "--billed",
            help="With --bridge: billed means invoiced (finalized in the month) or period"
            " (the invoices for the month's billing periods).",
        ),
    ] = "invoiced",
    charges: Annotated[
        bool,
        typer.Option(
            "--charges",
            help="With --bridge: also bridge the month's list-price charges (economics) to"
            " what their periods' invoices billed.",
        ),
    ] = False,
) -> None:
    """Revenue reports: the waterfall by month, deferred revenue roll-forward, trial
    balance; or, with ``--bridge``, a month's billed-to-recognized bridge."""
    from meterline.finance.books import build_books
    from meterline.finance.render import revenue_tables
    from meterline.finance.reports import revenue_reports

    at = instant(as_of, "--as-of")
    if bridge is not None:
        _bridge(db, bridge, billed, charges, at, as_json)
        return
    with _billing(db) as billing:
        books = build_books(billing, at)
    try:
        day = None if balances_at is None else date.fromisoformat(balances_at)
    except ValueError:
        raise fail(f"--balances-at: {balances_at!r} is not a date (YYYY-MM-DD)") from None
    try:
        reports = revenue_reports(books, month, day)
    except ValueError as error:
        raise fail(f"--month: {error}") from None
    if as_json:
        print(json.dumps(reports))
        return
    for table in revenue_tables(reports):
        console.print(table)


def _bridge(
    db: str, month: str, basis: str, charges: bool, at: int | None, as_json: bool
) -> None:
    """``revenue --bridge``: the month's bridges, as tables or JSON."""
    from meterline.finance.month_bridge import BASES, charges_bridges, month_bridge
    from meterline.finance.render import bridge_table
    from meterline.finance.reports import month_span

    if basis not in BASES:
        raise fail(f"--billed: {basis!r} is not one of {', '.join(BASES)}")
    try:
        month_span(month)
    except ValueError as error:
        raise fail(f"--bridge: {error}") from None
    with _billing(db) as billing:
        now = billing.clock() if at is None else at
        bridges = month_bridge(billing, month, at_us=now, basis=basis)
        priced = []
        if charges:
            from meterline.finance.economics import usage_slices

            slices = usage_slices(billing, now, recognized=False)
            priced = charges_bridges(billing, month, slices, now)
    if as_json:
        print(
            json.dumps(
                {
                    "month": month,
                    "billed": basis,
                    "bridges": [b.as_dict() for b in bridges],
                    "charges_bridges": [b.as_dict() for b in priced],
                }
            )
        )
        return
    billed_as = "invoiced in" if basis == "invoiced" else "for the periods of"
    for item in bridges:
        console.print(bridge_table(item, f"{month}: billed ({billed_as} it) to recognized"))
    for item in priced:
        console.print(bridge_table(item, f"{month}: list-price charges to billed (its periods)"))
    if not bridges and not priced:
        console.print(f"{month}: nothing billed or recognized")


def economics_command(
    db: DbOption = DEFAULT_DB,
    by: Annotated[
        str,
        typer.Option(
            "--by",
            help="Dimensions, comma-separated: customer, period, day, meter, model, product, plan.",
        ),
    ] = "customer",
    period: Annotated[
        str | None, typer.Option("--period", help="Only this billing period (its label).")
    ] = None,
    customer: Annotated[str | None, typer.Option("--customer", help="Only this customer.")] = None,
    as_of: AsOfOption = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="The current period per customer from the live projection (no re-rating).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    reporting: Annotated[
        bool,
        typer.Option(
            "--reporting",
            help="In the pricing file's reporting currency (revenue and cost each converted"
            " at its day's rate).",
        ),
    ] = False,
) -> None:
    """Unit economics: charges at list price, recognized revenue, COGS, gross margin (on
    recognized revenue) and margin % (negative flagged)."""
    from meterline.core.economics import DIMENSIONS
    from meterline.finance.render import margin_table

    dimensions = [name.strip() for name in by.split(",") if name.strip()]
    unknown = [name for name in dimensions if name not in DIMENSIONS]
    if unknown or not dimensions:
        raise fail(f"--by: {', '.join(unknown) or 'nothing'}: use {', '.join(DIMENSIONS)}")
    if live:
        if dimensions != ["customer"]:
            raise fail("--by: the live projection answers by customer only")
        rows = _live_rows(db, customer)
    else:
        rows = _closed_rows(db, dimensions, period, customer, as_of, reporting)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        **dict(zip(dimensions, margin.key, strict=True)),
                        "currency": margin.currency,
                        "list_price_charges": str(margin.list_price_charges),
                        "revenue": str(margin.revenue),
                        "cost": str(margin.cost),
                        "margin": str(margin.margin),
                        "margin_percent": None
                        if margin.margin_percent is None
                        else str(margin.margin_percent),
                        "negative": margin.negative,
                        "open": margin.open,
                        "margin_at_list_price": str(margin.margin_at_list_price),
                    }
                    for margin in rows
                ]
            )
        )
        return
    title = f"Unit economics by {', '.join(dimensions)}"
    if live:
        title += " (live: the current period at list price; revenue is recognized at its close)"
    console.print(margin_table(rows, dimensions, title, live=live))


def _live_rows(db: str, customer: str | None) -> list[Any]:
    """Each customer's current period from the live projection."""
    from meterline.finance.economics import live_margins
    from meterline.live.local import local_engine

    if not ledger_exists(db):
        raise fail(f"--db: {db} does not exist")
    with local_engine(db, act=False) as engine:
        projection = engine.projection
        documents = [
            figures.as_dict()
            for name in sorted(projection.customers)
            if customer in (None, name)
            and (figures := projection.figures(name, credits=False)) is not None
        ]
    return [item.margin() for item in live_margins(documents)]


def _closed_rows(
    db: str,
    dimensions: list[str],
    period: str | None,
    customer: str | None,
    as_of: str | None,
    reporting: bool,
) -> list[Any]:
    """Re-rated periods summed by ``dimensions`` (in the reporting currency if asked)."""
    from meterline.core.economics import in_reporting, summarize
    from meterline.core.exchange import ExchangeError
    from meterline.finance.economics import usage_slices

    at = instant(as_of, "--as-of")
    with _billing(db) as billing:
        # a slice per line unless a day is asked for (or converted at its day's rate)
        days = "day" in dimensions or reporting
        slices = usage_slices(billing, at, customer, days=days)
        loaded = billing.load()
    if period is not None:
        slices = [s for s in slices if s.period == period]
    if reporting:
        declared = None if loaded is None else loaded.configuration.reporting
        if declared is None:
            raise fail("--reporting: the pricing file declares no reporting currency")
        slices = in_reporting(slices, declared)
    try:
        return summarize(slices, dimensions)
    except ExchangeError as error:
        raise fail(str(error)) from None

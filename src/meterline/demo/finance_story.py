"""The demo's last chapter: what finance reads. The month's revenue, COGS and margin by
model and customer, its three figures (list-price charges, billed, recognized) with the
bridges that explain their differences line by line, revenue recognized by month with
deferred revenue rolled forward, the journal as files a general ledger imports, and the
proof that it is all one truth."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from rich.console import Console

from meterline.billing.service import open_billing
from meterline.clock import Clock, system_clock_us
from meterline.core.economics import summarize
from meterline.core.money import display_amount
from meterline.core.revenue_bridge import Bridge
from meterline.demo.calendar import REFERENCE_MONTH
from meterline.finance.books import build_books
from meterline.finance.economics import usage_slices
from meterline.finance.general_ledger_files import journal_beancount, journal_csv
from meterline.finance.month_bridge import charges_bridges, month_bridge
from meterline.finance.render import bridge_table, margin_table, revenue_tables, truth_table
from meterline.finance.reports import revenue_reports
from meterline.finance.truth import one_truth
from meterline.ledger.location import is_postgres


def tell_finance(
    db: str | Path,
    console: Console,
    month: date = REFERENCE_MONTH,
    clock: Clock = system_clock_us,
) -> None:
    """The finance chapter over the demo ledger, ``month`` (its first day) closed."""
    console.rule("The finance view: unit economics, revenue recognition, one truth")
    label = month.isoformat()  # the billing period's label
    with open_billing(db, clock=clock) as billing:
        books = build_books(billing)
        every_slice = usage_slices(billing, books=books)
        slices = [s for s in every_slice if s.period == label]
        truth = one_truth(billing)
        month_label = label[:7]
        to_recognized = month_bridge(billing, month_label, books, basis="period")
        to_billed = charges_bridges(billing, month_label, every_slice)
    for total in summarize(slices, []):
        console.print(
            f"{month:%B}, closed: revenue {display_amount(total.revenue, total.currency)}"
            f" {total.currency} recognized (charges at list price"
            f" {display_amount(total.list_price_charges, total.currency)} {total.currency}),"
            f" COGS {display_amount(total.cost, total.currency)}, gross"
            f" margin {display_amount(total.margin, total.currency)}"
            f" ({total.margin_percent}%). Revenue is the journal's (credits earn at their"
            " cost basis); COGS is each line's quantity x the provider's rate per model, or"
            " the cost each GPU event carried."
        )
    tell_bridges(console, month, to_billed, to_recognized)
    usage = [s for s in slices if not s.meter.startswith("(")]
    console.print(margin_table(summarize(usage, ["model"]), ["model"], "Usage margin by model"))
    by_customer = summarize(slices, ["customer"])
    console.print(margin_table(by_customer, ["customer"], f"Margin by customer ({month:%B})"))
    negative = [margin.key[0] for margin in by_customer if margin.negative]
    if negative:
        console.print(
            f"Negative margin: {', '.join(negative)} (they cost more to serve than they pay); "
            "a margin_floor control alerts on it live."
        )
    reports = revenue_reports(books)
    console.print(
        f"The journal: {len(books.entries)} balanced entries derived from the invoices and "
        "the credit books (fees ratably by day, usage as delivered, prepaid credit at its "
        "cost basis, breakage, rollover)."
    )
    for table in revenue_tables(reports):
        console.print(table)
    # beside a SQLite file; in the working directory for a PostgreSQL ledger
    files = Path("meterline-demo") if is_postgres(db) else Path(db)
    beancount = files.with_suffix(".beancount")
    general_ledger = files.with_suffix(".journal.csv")
    beancount.write_text(journal_beancount(books))
    general_ledger.write_text(journal_csv(books))
    deferred = sum(
        (Decimal(row["closing"]) for row in reports["rollforward"] if row["month"] == label[:7]),
        Decimal(0),
    )
    console.print(
        f"Deferred at the end of {month:%B}: {display_amount(deferred, 'USD')} USD (prepaid"
        " credit not yet consumed). "
        f"Journal written for the general ledger: {general_ledger} (CSV) and {beancount} "
        f"(check it: bean-check {beancount}). Parquet for the warehouse: "
        f"meterline export --db {db} --out DIR; ad-hoc SQL: meterline sql --db {db} "
        '"SELECT ..."'
    )
    console.print(truth_table(truth))
    console.print(f"Prove it again any time: [bold]meterline reconcile --db {db}[/bold]")


def tell_bridges(
    console: Console, month: date, to_billed: list[Bridge], to_recognized: list[Bridge]
) -> None:
    """The month's three figures (list-price charges, billed, recognized) and the two
    bridges that explain their differences line by line, each closing to the cent."""
    priced_in = {bridge.currency: bridge for bridge in to_billed}
    for journal in to_recognized:
        currency = journal.currency
        priced = priced_in.get(currency)
        if priced is None:
            continue
        console.print(
            f"{month:%B}'s three figures: list-price charges"
            f" {display_amount(priced.start, currency)}, billed for its periods"
            f" {display_amount(journal.start, currency)} (its invoices and credit notes,"
            f" finalized after the month closed), recognized"
            f" {display_amount(journal.end, currency)} {currency}. Why they differ, line by"
            " line (every line names its invoice lines, credit notes and grants; each bridge"
            f" closes to the cent: meterline revenue --bridge {month:%Y-%m} --billed period"
            " --charges):"
        )
        console.print(bridge_table(priced, f"{month:%B}: list-price charges to billed"))
        console.print(bridge_table(journal, f"{month:%B}: billed to recognized"))

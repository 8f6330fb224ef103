"""Finance's figures as Rich tables, for the CLI and the demo (no I/O of its own)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from meterline.core.economics import Margin
from meterline.finance.truth import TruthReport


def margin_table(rows: Sequence[Margin], dimensions: Sequence[str], title: str) -> Table:
    """Revenue, COGS, margin and margin % per row; a negative margin is flagged."""
    table = Table(title=title)
    for name in dimensions:
        table.add_column(name)
    for column in ("revenue", "COGS", "margin", "margin %", ""):
        table.add_column(column, justify="right")
    for margin in rows:
        percent = "" if margin.margin_percent is None else f"{margin.margin_percent}%"
        flag = "[red]negative margin[/red]" if margin.negative else ""
        table.add_row(
            *margin.key,
            f"{margin.revenue} {margin.currency}",
            str(margin.cost),
            str(margin.margin),
            percent,
            flag,
        )
    return table


def revenue_tables(reports: dict[str, Any]) -> list[Table]:
    """The waterfall, the deferred revenue roll-forward and the trial balance."""
    months = reports["months"]
    waterfall = Table(title="Revenue waterfall (recognized, by month)")
    waterfall.add_column("account")
    for name in months:
        waterfall.add_column(name, justify="right")
    waterfall.add_column("total", justify="right")
    for row in reports["waterfall"]:
        waterfall.add_row(
            f"{row['account']} ({row['currency']})",
            *[row["months"].get(name, "") for name in months],
            row["total"],
        )
    waterfall.add_row(
        "[bold]total[/bold]", *[reports["waterfall_totals"][name] for name in months], ""
    )
    rolled = Table(title="Deferred revenue roll-forward")
    for column in ("month", "account", "opening", "+ billed", "- recognized", "= closing"):
        rolled.add_column(column, justify="left" if column in ("month", "account") else "right")
    for row in reports["rollforward"]:
        rolled.add_row(
            row["month"],
            f"{row['account']} ({row['currency']})",
            row["opening"],
            row["billed"],
            row["recognized"],
            row["closing"],
        )
    trial = Table(title=f"Trial balance as of {reports['as_of']}")
    for column in ("account", "debit", "credit"):
        trial.add_column(column, justify="left" if column == "account" else "right")
    for row in reports["trial_balance"]:
        trial.add_row(f"{row['account']} ({row['currency']})", row["debit"], row["credit"])
    totals = reports["trial_balance_totals"]
    trial.add_row("[bold]total[/bold]", totals["debit"], totals["credit"])
    return [waterfall, rolled, trial]


def truth_table(truth: TruthReport) -> Table:
    """The chain's steps side by side: each figure and what it must equal."""
    table = Table(title="One truth: events -> rated usage -> invoices -> journal -> reports")
    for column in ("step", "figure", "this step", "must equal", "from", ""):
        table.add_column(column)
    for check in truth.checks:
        mark = "ok" if check.agrees else "[red]DIFFERS[/red]"
        table.add_row(check.step, check.figure, check.value, check.expected, check.source, mark)
    verdict = "one truth" if truth.agrees else "DIFFERENT"
    table.caption = f"{verdict}: {len(truth.checks)} checks"
    return table

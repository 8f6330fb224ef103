"""The finance benchmark runs end to end on a tiny workload and reports every figure."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from meterline.cli.app import app
from meterline.ledger.location import bucket_file

FIGURES = (
    "economics_by_customer_model_p95_ms",
    "economics_by_customer_model_first_ms",
    "economics_uncached_ms",
    "draft_from_buckets_p95_ms",
    "revenue_p95_ms",
    "reconcile_buckets_check_p95_ms",
    "audit_events_per_s",
    "audit_closed_events_per_s",
    "audit_workers",
    "ingest_events_per_s_without_buckets",
    "ingest_events_per_s_with_buckets",
    "bucket_ingest_ratio",
)
COUNTS = ("bucket_backlog_events", "bucket_current_after_ms", "bucket_fold_events_per_s")
"""Figures that may be zero (the keeper may have folded everything by the last append)."""


def test_bench_finance_prints_every_figure_as_json() -> None:
    """``meterline bench finance --json`` prints one object with each figure positive."""
    result = CliRunner().invoke(
        app, ["bench", "finance", "--events", "400", "--customers", "3", "--repeats", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["events"], figures["customers"]) == (400, 3)
    for name in FIGURES:
        assert figures[name] > 0, name
    for name in COUNTS:
        assert figures[name] >= 0, name
    customer = "/dashboard/customers/customer-00000"
    open_pages = {"/dashboard", "/dashboard/customers", customer, "/dashboard/revenue"}
    open_pages |= {"/dashboard/controls", "/dashboard/unbillable"}
    invoice = next(page for page in figures["closed_page_p95_ms"] if "/invoices/" in page)
    closed_pages = open_pages | {
        invoice,
        *(p for p in figures["closed_page_p95_ms"] if "/lines/" in p),
    }
    assert len(closed_pages) == len(open_pages) + 2  # an invoice and one of its lines
    for name, pages in (("page_", open_pages), ("closed_page_", closed_pages)):
        for kind in ("p95_ms", "first_ms"):
            timed = figures[f"{name}{kind}"]
            assert set(timed) == pages, name
            assert all(ms > 0 for ms in timed.values()), name


def test_buckets_are_kept_unless_turned_off() -> None:
    from meterline.billing.buckets import buckets_wanted

    assert buckets_wanted({})
    assert buckets_wanted({"METERLINE_BUCKETS": "on"})
    assert not any(
        buckets_wanted({"METERLINE_BUCKETS": off}) for off in ("off", "0", "FALSE", " no ")
    )


def test_bench_finance_skips_the_baseline_and_keeps_the_ledger(tmp_path) -> None:
    """``--baseline-repeats 0`` times no re-rated read; ``--keep-db`` keeps the ledger with
    buckets, which holds every event (the page timing's too) and a current watermark."""
    import sqlite3

    kept = tmp_path / "kept.db"
    arguments = ["bench", "finance", "--events", "300", "--customers", "2", "--repeats", "1"]
    result = CliRunner().invoke(
        app, [*arguments, "--baseline-repeats", "0", "--keep-db", str(kept), "--json"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert "economics_rerated_p95_ms" not in figures
    assert figures["economics_by_customer_model_p95_ms"] > 0
    # the month's events, and one more before each timed economics read and page load
    loads = 1 + len(figures["page_p95_ms"]) + len(figures["closed_page_p95_ms"])
    with sqlite3.connect(kept) as connection:
        assert connection.execute("SELECT count(*) FROM events").fetchone() == (300 + loads,)
    with sqlite3.connect(bucket_file(kept)) as connection:  # the buckets' file goes with it
        assert connection.execute("SELECT count(*) FROM usage_buckets").fetchone()[0] > 0


def test_bench_finance_refuses_a_negative_baseline() -> None:
    arguments = ["bench", "finance", "--events", "10", "--baseline-repeats", "-1"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    assert "baseline_repeats must not be negative" in result.output

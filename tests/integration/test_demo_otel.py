"""The demo's OpenTelemetry chapter (``demo.otel_story``) on each store: one twin's calls
arrive as OTel spans over OTLP/HTTP, the other's as the SDK's events, and the table the
demo prints shows the same figures for both; a rerun exports the same spans again and
adds nothing. Run on a fixed clock, so it holds on any date."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from rich.console import Console

from meterline.clock import parse_instant_us
from meterline.demo.otel_story import CALLS, OTEL_CUSTOMER, SDK_CUSTOMER, tell_otel
from tests.conftest import Location

MONTH = date(2026, 10, 1)
NOW_US = parse_instant_us("2026-11-15T12:00:00Z")  # after the spans (2026-11-01 00:00 on)


def told(db: Location) -> str:
    """The chapter's output, as the terminal would show it (wide: no wrapped cells)."""
    console = Console(record=True, width=240, color_system=None)
    tell_otel(db, console, MONTH, lambda: NOW_US)
    return console.export_text()


def rows(text: str) -> dict[str, list[str]]:
    """The table's cells by customer: arrived as, events, tokens in and out, models."""
    found = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells and cells[0] in (OTEL_CUSTOMER, SDK_CUSTOMER):
            found[cells[0]] = cells[1:]
    return found


def test_the_spans_and_the_sdk_events_show_the_same_figures(
    new_db: Callable[..., Location],
) -> None:
    """Both doors: the same events, tokens and models; the re-export adds no event."""
    db = new_db("demo-otel")
    first = told(db)
    table = rows(first)
    spans, sdk = table[OTEL_CUSTOMER], table[SDK_CUSTOMER]
    assert (spans[0], sdk[0]) == ("OTel spans", "SDK events")
    input_tokens = sum(call[2] for call in CALLS)
    output_tokens = sum(call[3] for call in CALLS)
    assert spans[1:] == sdk[1:]
    assert spans[1:4] == [str(len(CALLS)), f"{input_tokens:,}", f"{output_tokens:,}"]
    flat = " ".join(first.split())
    assert f"{len(CALLS)} chat spans exported over OTLP/HTTP to POST /v1/traces (rejected: 0)" in (
        flat
    )
    assert "exported again (rejected: 0), 0 events added" in flat
    again = told(db)
    assert rows(again) == table
    assert "exported again (rejected: 0), 0 events added" in " ".join(again.split())

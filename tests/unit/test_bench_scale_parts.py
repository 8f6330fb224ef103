"""The pure parts of ``meterline bench scale``: counts, the merged pricing, pooled
kill-switch quantiles."""

from __future__ import annotations

import inspect
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from meterline.bench.scale import _parse_counts, _pooled_kill_switch
from meterline.bench.scale_probes import merged_pricing
from meterline.bench.scale_profile import PROFILED_COMPONENTS
from meterline.bench.scale_setup import component_command
from meterline.bench.synthetic_pricing import probe_customer
from meterline.cli import app


def test_counts_parse_from_text_or_sequence() -> None:
    assert _parse_counts("1,2,8", "partitions") == (1, 2, 8)
    assert _parse_counts("4", "partitions") == (4,)
    assert _parse_counts((1, 2), "workers") == (1, 2)
    for bad in ("", "0", "a,b", "1,-2"):
        with pytest.raises(ValueError):
            _parse_counts(bad, "partitions")


def test_merged_pricing_keeps_both_documents() -> None:
    ingest = """\
meters:
  - {key: calls, event_type: call, aggregation: count}
contracts:
  - {customer: customer-0000, plan: usage, start: 2026-12-01}
"""
    merged = yaml.safe_load(merged_pricing(ingest, 2, date(2026, 11, 1)))
    assert [meter["key"] for meter in merged["meters"]] == ["calls", "probe_calls"]
    customers = [contract["customer"] for contract in merged["contracts"]]
    assert customers[0] == "customer-0000"
    assert probe_customer(0) in customers and probe_customer(1) in customers
    assert merged["credit_types"][0]["key"] == "credits"


def test_pooled_kill_switch_takes_every_probe() -> None:
    runs = [
        {"kill_switch": {"ms": [10.0, 30.0]}},
        {"kill_switch": None},
        {"kill_switch": {"ms": [20.0]}},
    ]
    pooled = _pooled_kill_switch(runs)
    assert pooled["probes"] == 3
    assert pooled["kill_switch_ms_p50"] == 20.0
    assert pooled["kill_switch_ms_p99"] == pooled["kill_switch_ms_max"] == 30.0
    assert _pooled_kill_switch([{"kill_switch": None}]) == {"probes": 0}


def test_retry_pause_follows_the_hint_and_stays_bounded() -> None:
    from meterline.bench.scale_probes import RETRY_PAUSE_MAX_S, RETRY_PAUSE_S, retry_pause_s

    refusal = b'{"error": {"code": "ingest_lagging", "message": "m", "retry_after_ms": 40}}'
    assert retry_pause_s("1", refusal, 1) == pytest.approx(0.04)
    assert retry_pause_s("1", refusal, 2) == pytest.approx(0.06)
    assert retry_pause_s("1", refusal, 50) == RETRY_PAUSE_MAX_S
    assert retry_pause_s("2", b'{"error": {"code": "stream_unavailable"}}', 1) == 1.0
    assert retry_pause_s(None, b"<html>", 1) == RETRY_PAUSE_S


@pytest.mark.parametrize(
    ("component", "options"),
    [
        (
            "worker",
            {
                "db": "postgresql://127.0.0.1/test?options=-csearch_path=bench",
                "stream": "nats://127.0.0.1:4222",
                "namespace": "bench_one_0a1b",
                "streams": 2,
                "partitions": "0-3,6",
                "name": "one-w0",
            },
        ),
        (
            "serve",
            {
                "db": "postgresql://127.0.0.1/test",
                "port": 8123,
                "stream": "nats://127.0.0.1:4222",
                "namespace": "bench_one_0a1b",
                "streams": 2,
            },
        ),
    ],
)
def test_a_component_runs_the_same_with_or_without_the_profiler(
    component: str, options: dict[str, Any], tmp_path: Path
) -> None:
    """The command line an unprofiled child runs parses, by the CLI, to ``options``; the
    profiled child calls the library with the same options (the benchmark imports no
    CLI, so nothing else ties the two)."""
    arguments = component_command(component, options)
    assert arguments[:3] == ["-m", "meterline", component]
    command = typer.main.get_command(app).get_command(None, component)  # type: ignore[attr-defined]
    parsed = command.make_context(component, arguments[3:]).params
    assert {name: parsed[name] for name in options} == options

    profiled = component_command(component, options, tmp_path / "a.prof")
    assert profiled[:5] == [
        "-m",
        "meterline.bench.scale",
        "profile",
        str(tmp_path / "a.prof"),
        component,
    ]
    run = PROFILED_COMPONENTS[component]
    inspect.signature(run).bind(**json.loads(profiled[5]))

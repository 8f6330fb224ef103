"""The controls benchmark at a tiny size: the figures' shape and sanity, never their speed."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

from meterline.bench.control_latency import run_controls_benchmark
from meterline.bench.quantiles import percentile
from meterline.bench.synthetic_pricing import ingest_pricing, probe_pricing, retimed
from meterline.bench.workload import synthetic_events
from meterline.config.schema import parse_configuration
from meterline.config.source import read_yaml
from meterline.core.events import timestamp_to_us
from meterline.core.model import Configuration

FIGURES = (
    "ingest_to_block_ms_p50",
    "ingest_to_block_ms_p99",
    "access_check_ms_p50",
    "access_check_ms_p99",
    "gate_check_us_p50",
    "gate_check_us_p99",
    "gate_check_us_mean_loop",
    "ingest_events_per_s_without_controls",
    "ingest_events_per_s_with_controls",
    "ingest_events_per_s_live_off",
    "ingest_ratio_with_controls",
    "ingest_ratio_live_engine",
)


def _parse(text: str) -> Configuration:
    data, positions = read_yaml(text, "pricing.yaml")
    return parse_configuration(data, positions, "pricing.yaml")


def test_pricing_files_parse_with_the_declared_controls() -> None:
    start = date(2026, 10, 1)
    probes = _parse(probe_pricing(3, start))
    assert [c.customer for c in probes.contracts] == [
        *(f"probe-{i:04d}" for i in range(3)),
        *(f"open-{i:04d}" for i in range(3)),
    ]
    assert all([p.kind for p in c.controls] == ["balance_exhausted"] for c in probes.contracts)
    plain = _parse(ingest_pricing(start, controls=False))
    assert len(plain.contracts) == 100
    assert all(not c.controls for c in plain.contracts)
    guarded = _parse(ingest_pricing(start, controls=True))
    assert guarded.costs
    assert all(
        sorted(p.kind for p in c.controls)
        == ["balance_exhausted", "cost_exceeds_prepayment", "spend_threshold", "usage_spike"]
        for c in guarded.contracts
    )


def test_retimed_events_ascend_within_the_span() -> None:
    end_us = timestamp_to_us(datetime(2026, 11, 24, tzinfo=UTC))
    events = retimed(synthetic_events(1_000), end_us, 60_000_000)
    instants = [timestamp_to_us(datetime.fromisoformat(e["timestamp"])) for e in events]
    assert instants == sorted(instants)
    assert instants[0] == end_us - 60_000_000
    assert instants[-1] < end_us


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 0.50) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([7], 0.99) == 7


def test_a_tiny_run_has_every_figure_and_blocks_every_probe() -> None:
    result = run_controls_benchmark(
        probes=5, events=2_000, access_checks=300, gate_checks=5_000, live_off=True, rounds=1
    )
    assert result["probes"] == 5
    assert result["probes_denied"] == 5
    assert result["probes_never_denied"] == []
    assert 0 <= result["probes_denied_on_first_poll"] <= 5
    assert result["customers_checked_blocked"] == 5
    assert result["access_checks"] == 300
    assert result["gate_checks"] == 5_000
    assert result["events"] == 2_000
    assert result["ingest_rounds"] == 1
    for name in ("without_controls", "with_controls", "live_off"):
        assert result[f"ingest_events_per_s_{name}_rounds"] == [
            result[f"ingest_events_per_s_{name}"]
        ]
    for figure in FIGURES:
        value = result[figure]
        assert isinstance(value, int | float) and not math.isnan(value) and value > 0, figure
    assert result["ingest_to_block_ms_p50"] <= result["ingest_to_block_ms_p99"]
    assert result["access_check_ms_p50"] <= result["access_check_ms_p99"]
    assert result["gate_check_us_p50"] <= result["gate_check_us_p99"]
    ratio = (
        result["ingest_events_per_s_with_controls"] / result["ingest_events_per_s_without_controls"]
    )
    assert math.isclose(result["ingest_ratio_with_controls"], ratio, abs_tol=0.001)
    assert not math.isnan(result["live_feed_lag_ms_with_controls"])
    assert not math.isnan(result["access_exact_ms_with_controls"])
    assert result["control_firings_with_controls"] >= 0
    assert result["server_log_lines"] == len(result["server_log_excerpt"]) or (
        result["server_log_lines"] > len(result["server_log_excerpt"]) == 5
    )
    assert result["cpus"] and result["python"]

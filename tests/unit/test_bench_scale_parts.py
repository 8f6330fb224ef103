"""The pure parts of ``meterline bench scale``: counts, the merged pricing, pooled
kill-switch quantiles."""

from __future__ import annotations

from datetime import date

import pytest
import yaml

from meterline.bench.controls import probe_customer
from meterline.bench.scale import _parse_counts, _pooled_kill_switch
from meterline.bench.scale_probes import merged_pricing


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

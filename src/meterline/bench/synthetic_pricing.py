"""The pricing and timing the benchmarks' synthetic workloads run under: a contract
started the month before now, the probe customers (a small prepaid pool blocked when
exhausted) beside open ones, the synthetic customers' prices, costs, pools and controls
(``ingest_pricing``), and events re-stamped into the open period. Shared by ``meterline
bench controls`` and ``meterline bench scale``."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from meterline.core.events import format_timestamp, timestamp_to_us

PROBE_POOL_CREDITS = 10
"""Each probe customer's prepaid pool, in credits; one probe event costs one credit."""

SYNTHETIC_CUSTOMERS = 100
"""``synthetic_events``' default: the customers the throughput runs' contracts cover."""

INGEST_SPAN_US = 30 * 60 * 1_000_000
"""The throughput runs' events are spread over this much time, ending just before now."""


def contract_start(now_us: int) -> date:
    """The first day of the month before ``now_us``'s (UTC): a monthly calendar contract
    started well before now, whose current period holds now."""
    today = datetime.fromtimestamp(now_us / 1_000_000, UTC).date()
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return date(year, month, 1)


def month_start_us(now_us: int) -> int:
    today = datetime.fromtimestamp(now_us / 1_000_000, UTC)
    return timestamp_to_us(datetime(today.year, today.month, 1, tzinfo=UTC))


def probe_customer(index: int) -> str:
    return f"probe-{index:04d}"


def open_customer(index: int) -> str:
    """A contract customer with a pool too large to exhaust: stays allowed."""
    return f"open-{index:04d}"


def unknown_customer(index: int) -> str:
    """A customer without a contract: allowed, "no restriction"."""
    return f"stranger-{index:04d}"


def probe_pricing(probes: int, start: date) -> str:
    """Probe customers with a 10-credit prepaid pool and a block when it is exhausted, and
    as many open customers with the same control and a pool they never reach."""
    lines = [
        f"""\
# meterline bench controls: probe customers (a small prepaid pool, blocked when exhausted)
credit_types:
  - {{key: credits, name: Credits, currency: USD, unit_value: "0.01"}}
meters:
  - {{key: probe_calls, event_type: probe.call, aggregation: count}}
plans:
  - key: probe
    name: Probe
    versions:
      - version: 1
        effective_from: {start.isoformat()}
        currency: USD
        billing: {{cycle: monthly, anchor: calendar}}
        prices:
          - {{meter: probe_calls, model: per_unit, unit_amount: "1", credit_type: credits}}
contracts:
"""
    ]
    control = "{key: pool-empty, policy: balance_exhausted, unit: credits, actions: [block]}"
    for names, amount, paid in (
        ((probe_customer(i) for i in range(probes)), PROBE_POOL_CREDITS, "0.10"),
        ((open_customer(i) for i in range(probes)), 1_000_000, "10000.00"),
    ):
        for name in names:
            lines.append(
                f"  - {{customer: {name}, plan: probe, start: {start.isoformat()},"
                f" credits: {{grants: [{{key: pool, credit_type: credits, amount: {amount},"
                f" paid: '{paid}'}}]}}, controls: [{control}]}}\n"
            )
    return "".join(lines)


_INGEST_PRICES = """\
meters:
  - {{key: input_tokens, event_type: llm.completion, aggregation: sum,
     property: input_tokens, group_by: [model]}}
  - {{key: output_tokens, event_type: llm.completion, aggregation: sum,
     property: output_tokens, group_by: [model]}}
plans:
  - key: usage
    name: Usage
    versions:
      - version: 1
        effective_from: {start}
        currency: USD
        billing: {{cycle: monthly, anchor: calendar}}
        prices:
          - meter: input_tokens
            description: Input tokens
            model: matrix
            matrix:
              - {{values: {{model: gpt-4o}}, unit_amount: "0.0000025"}}
              - {{values: {{model: gpt-4o-mini}}, unit_amount: "0.00000015"}}
              - {{values: {{model: claude-sonnet-4}}, unit_amount: "0.000003"}}
              - {{values: {{model: claude-haiku-4}}, unit_amount: "0.0000008"}}
            default: "0.000001"
          - meter: output_tokens
            description: Output tokens
            model: matrix
            matrix:
              - {{values: {{model: gpt-4o}}, unit_amount: "0.00001"}}
              - {{values: {{model: gpt-4o-mini}}, unit_amount: "0.0000006"}}
              - {{values: {{model: claude-sonnet-4}}, unit_amount: "0.000015"}}
              - {{values: {{model: claude-haiku-4}}, unit_amount: "0.000004"}}
            default: "0.000003"
"""

_INGEST_COSTS = """\
costs:
  - {meter: input_tokens, per_unit: "0.000001"}
  - {meter: output_tokens, per_unit: "0.000004"}
"""

_INGEST_POOL = ", credits: {commits: [{kind: prepaid, key: pool, amount: '1000.00', paid: '2.00'}]}"
"""Per synthetic customer: a $1,000 pool prepaid with $2 (never exhausted at 100,000
events, so a block on it stays armed)."""

_INGEST_CONTROLS = (
    ", controls: ["
    "{key: pool-empty, policy: balance_exhausted, unit: USD, actions: [block]}, "
    "{key: budget, policy: spend_threshold, amount: 6, percents: [50, 80, 100],"
    " actions: [alert]}, "
    "{key: rogue-agent, policy: usage_spike, meter: input_tokens, window: 5m, baseline: 1h,"
    " factor: 11, minimum: 1000000, actions: [alert]}, "
    "{key: cogs-guard, policy: cost_exceeds_prepayment, margin_percent: 10, actions: [alert]}]"
)
"""Per synthetic customer: a block when the pool is exhausted, a budget whose 50% and 80%
levels a 100,000-event run crosses, a spike watch, and a cost guard the run's cost of goods
crosses."""


def ingest_pricing(start: date, controls: bool) -> str:
    """The synthetic meters priced for the synthetic customers, with cost rates and a
    prepaid pool on every contract (the live figures' balances and cost of goods: the
    same in every configuration); with ``controls``, also the four kinds of control on
    every contract. The configurations differ by the controls alone."""
    lines = ["# meterline bench controls: the synthetic workload's prices\n", _INGEST_COSTS]
    lines.append(_INGEST_PRICES.format(start=start.isoformat()))
    lines.append("contracts:\n")
    terms = _INGEST_POOL + (_INGEST_CONTROLS if controls else "")
    for index in range(SYNTHETIC_CUSTOMERS):
        lines.append(
            f"  - {{customer: customer-{index:04d}, plan: usage, start: {start.isoformat()}"
            f"{terms}}}\n"
        )
    return "".join(lines)


def retimed(events: list[dict[str, Any]], end_us: int, span_us: int) -> list[dict[str, Any]]:
    """``events`` re-stamped evenly over ``span_us`` ending at ``end_us``, in order."""
    count = max(1, len(events))
    start_us = end_us - span_us
    for number, event in enumerate(events):
        event["timestamp"] = format_timestamp(start_us + number * span_us // count)
    return events

"""Unbillable usage: events that are usage but that no invoice can bill, kept as data.

Nothing a customer sends can stop billing: an event whose value a meter cannot measure
(a string where a sum expects a number, NaN, 1e400, a negative value a meter rejects), an
event before its customer's contract starts or after it ends, an event of a customer with
no contract, an event whose stored body does not decode: each is *unbillable usage*,
found by the rating (``core.rating``, ``core.meters``), never counted as zero and never
dropped silently. Each record names the customer, the event (id, partition and sequence
within it),
the meter and the reason (a code of ``core.rating.UNBILLABLE_REASONS``, and words).

- ``unbillable_report`` re-derives every record from the ledger (like ``audit``: one scan
  per rating, each finalized period under the revision it was billed with, the open ones
  under the current pricing, and the events no period covers), per customer and reason;
  ``meterline unbillable``, ``GET /v1/unbillable`` and the dashboard's page show it.
- ``Billing.close`` returns the records its ratings met and tells its
  ``unbillable_listeners``; the live engine does the same for each appended batch.
  ``publish_unbillable`` turns records into ``usage.unbillable`` webhooks, one per ledger
  event, its webhook event id ``usage.unbillable:<sequence>`` (``usage.unbillable:
  <partition>:<sequence>`` past partition 0): the webhook store sends an
  event id once, so a close or a rebuild finding the same event again sends nothing.
- ``CustomerFailure`` is a customer a close (or this report) could not rate at all, with
  the reason: the other customers are closed regardless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meterline.billing.scan import RatingJob
from meterline.core.cuts import Cut
from meterline.core.events import format_timestamp
from meterline.core.meters import MeterProblem
from meterline.core.partitions import partition_of
from meterline.core.periods import BillingPeriod
from meterline.ledger import event_reads

WEBHOOK_KIND = "usage.unbillable"
LOOKUP_CHUNK = 500
"""Sequences named per query when reading the events behind records."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UnbillableUsage:
    """One event a meter (or, with ``meter`` empty, any rating) could not bill."""

    customer: str
    event_id: str
    sequence: int
    type: str
    timestamp_us: int
    meter: str
    reason: str
    """A code of ``core.rating.UNBILLABLE_REASONS``."""
    detail: str
    partition: int = 0
    """The ledger partition holding the event (its sequence is within it)."""

    @property
    def event(self) -> tuple[int, int]:
        """The event's identity in the ledger: (partition, sequence)."""
        return self.partition, self.sequence

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer": self.customer,
            "event_id": self.event_id,
            "partition": self.partition,
            "sequence": self.sequence,
            "type": self.type,
            "timestamp": format_timestamp(self.timestamp_us),
            "meter": self.meter or None,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class CustomerFailure:
    """A customer that could not be rated (closed, drafted, reported) at all, and why."""

    customer: str
    reason: str
    period: BillingPeriod | None = None

    def as_dict(self) -> dict[str, Any]:
        period = None
        if self.period is not None:
            period = {
                "start": format_timestamp(self.period.start_us),
                "end": format_timestamp(self.period.end_us),
            }
        return {"customer": self.customer, "reason": self.reason, "period": period}


def failure_reason(error: BaseException) -> str:
    """Why a rating failed, in words (a decimal trap names no value: say what it means)."""
    if isinstance(error, ArithmeticError):
        return f"an amount or quantity is beyond exact decimal arithmetic ({type(error).__name__})"
    text = str(error).strip()
    return text or type(error).__name__


def job_problems(jobs: Iterable[RatingJob]) -> list[tuple[str, MeterProblem]]:
    """What the raters of ``jobs`` could not bill: (customer, problem) pairs."""
    return [(job.customer, problem) for job in jobs for problem in job.rater.problems]


def usage_records(
    connection: Any, partitions: int, found: Iterable[tuple[str, MeterProblem]]
) -> list[UnbillableUsage]:
    """``found`` as records with each event's id, type and time (read by partition and
    sequence), one per (event, meter, reason), in (customer, sequence, meter) order."""
    unique: dict[tuple[int, int, str, str], tuple[str, MeterProblem]] = {}
    for customer, problem in found:
        partition = partition_of(customer, partitions)
        key = (partition, problem.sequence, problem.meter, problem.code)
        unique.setdefault(key, (customer, problem))
    if not unique:
        return []
    events = event_reads.event_summaries(
        connection, partitions, {(partition, sequence) for partition, sequence, _, _ in unique}
    )
    records = []
    for (partition, sequence, meter, code), (customer, problem) in unique.items():
        event_id, event_type, timestamp_us = events.get((partition, sequence), ("", "", 0))
        records.append(
            UnbillableUsage(
                customer,
                event_id,
                sequence,
                event_type,
                timestamp_us,
                meter,
                code,
                problem.reason,
                partition,
            )
        )
    return sorted(records, key=lambda r: (r.customer, r.sequence, r.meter, r.reason))


@dataclass
class UnbillableReport:
    """The ledger's unbillable usage as of ``at_us`` (events inside the cut ``through``),
    and the customers that could not be rated at all."""

    at_us: int
    through: Cut
    usage: list[UnbillableUsage] = field(default_factory=list)
    failed: list[CustomerFailure] = field(default_factory=list)

    def customers(self) -> list[dict[str, Any]]:
        """Per customer: its unbillable events (distinct), records, events per reason,
        and the records themselves."""
        by_customer: dict[str, list[UnbillableUsage]] = {}
        for record in self.usage:
            by_customer.setdefault(record.customer, []).append(record)
        result = []
        for customer, records in sorted(by_customer.items()):
            reasons: dict[str, set[tuple[int, int]]] = {}
            for record in records:
                reasons.setdefault(record.reason, set()).add(record.event)
            result.append(
                {
                    "customer": customer,
                    "events": len({record.event for record in records}),
                    "records": len(records),
                    "reasons": {code: len(events) for code, events in sorted(reasons.items())},
                    "usage": [record.as_dict() for record in records],
                }
            )
        return result

    def as_dict(self) -> dict[str, Any]:
        reasons: dict[str, set[tuple[int, int]]] = {}
        for record in self.usage:
            reasons.setdefault(record.reason, set()).add(record.event)
        return {
            "at": format_timestamp(self.at_us),
            "through": self.through.to_json(),
            "events": len({record.event for record in self.usage}),
            "reasons": {code: len(events) for code, events in sorted(reasons.items())},
            "customers": self.customers(),
            "failed": [failure.as_dict() for failure in self.failed],
        }


# -- webhooks --------------------------------------------------------------------------------

Publish = Callable[[str, dict[str, Any], str], object]
"""``publish(kind, data, event_id)``: ``live.webhook_service.Webhooks.publish``."""


def webhook_events(records: Sequence[UnbillableUsage]) -> list[tuple[str, dict[str, Any], str]]:
    """One ``usage.unbillable`` webhook per ledger event among ``records``: (kind, data,
    event id); the event id names the ledger sequence, so it is the same whoever finds
    the event (a batch, a close, a report)."""
    by_event: dict[tuple[int, int], list[UnbillableUsage]] = {}
    for record in records:
        by_event.setdefault(record.event, []).append(record)
    result = []
    for (partition, sequence), group in sorted(by_event.items()):
        first = group[0]
        data = {
            "customer": first.customer,
            "event": {
                "id": first.event_id,
                "partition": partition,
                "sequence": sequence,
                "type": first.type,
                "timestamp": format_timestamp(first.timestamp_us),
            },
            "reasons": sorted({record.reason for record in group}),
            "problems": [
                {"meter": record.meter or None, "reason": record.reason, "detail": record.detail}
                for record in group
            ],
        }
        name = f"{sequence}" if partition == 0 else f"{partition}:{sequence}"
        result.append((WEBHOOK_KIND, data, f"{WEBHOOK_KIND}:{name}"))
    return result


def publish_unbillable(publish: Publish, records: Sequence[UnbillableUsage]) -> int:
    """Queue the ``usage.unbillable`` webhooks of ``records``; how many were handed over.
    A webhook that cannot be queued is logged: it never stops a close or a batch."""
    handed = 0
    for kind, data, event_id in webhook_events(records):
        try:
            publish(kind, data, event_id)
        except Exception:
            _log.exception("webhook %s could not be queued", event_id)
            continue
        handed += 1
    return handed

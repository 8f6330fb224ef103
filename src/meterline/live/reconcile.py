"""``meterline reconcile``: prove the live figures equal a full re-rating, to the cent.

The live side is the projection as the server builds it: started from an empty state and
fed the ledger batch by batch, in the splits the ledger committed them (its ``commits``
checkpoints), so the incremental path is what is checked; or a running server's own live
figures (``--url``). The batch side is authoritative and independent of the projection:

- every usage line's quantity and amount against ``Billing.draft`` (the invoice path);
- every credit unit's remaining balance against ``Billing.credits`` at the same instant;
- spend and cost against a projection built by one full scan of the ledger;
- the rated-usage buckets (``billing.buckets``) against buckets re-derived from raw
  events, naming the first bucket that differs (when the ledger keeps them).

Any difference is listed and makes the command exit non-zero. A customer that cannot be
rated at all is reported with the reason (a difference too); the others are checked
regardless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from msgspec import UNSET

from meterline.billing import bucket_checks, buckets
from meterline.billing.service import Billing, BillingError, NotFound, RatingFailed
from meterline.billing.unbillable import failure_reason
from meterline.core.cuts import Cut
from meterline.core.documents import MeterUsageLine
from meterline.live.customer_period import LiveEvent
from meterline.live.figures import Figures
from meterline.live.projection import LiveProjection

ZERO = Decimal(0)


@dataclass
class CustomerCheck:
    customer: str
    checked: dict[str, tuple[str, str]] = field(default_factory=dict)
    """figure -> (live, batch), for the report."""
    differences: list[str] = field(default_factory=list)


@dataclass
class ReconcileReport:
    at_us: int
    through: Cut
    """Both sides hold the events inside this cut."""
    batches: int
    customers: list[CustomerCheck]
    buckets_checked: bool = False
    """Whether the current revision's buckets were built, and so checked."""
    bucket_difference: str | None = None
    """The first bucket that differs from a re-derivation from raw events, described."""

    @property
    def passed(self) -> bool:
        checks_agree = all(not check.differences for check in self.customers)
        return checks_agree and self.bucket_difference is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "through": self.through.to_json(),
            "batches_replayed": self.batches,
            "customers": [
                {
                    "customer": c.customer,
                    "checked": {k: {"live": v[0], "batch": v[1]} for k, v in c.checked.items()},
                    "differences": c.differences,
                }
                for c in self.customers
            ],
            "buckets": {
                "checked": self.buckets_checked,
                "first_difference": self.bucket_difference,
            },
        }


def replayed_projection(billing: Billing, through: Cut) -> tuple[LiveProjection, int]:
    """A projection fed the ledger inside ``through`` incrementally, one committed batch
    at a time (rebuilding a customer from the ledger only where the live path itself
    would)."""
    projection = LiveProjection(billing)
    projection.rebuild(through=Cut.empty(through.partitions))
    ends = {
        (committed.partition, committed.last_sequence)
        for committed in billing.ledger.store.batches()
    }
    batches = 0
    batch: list[LiveEvent] = []
    for record in billing.ledger.store.records():
        if not through.covers(record.partition, record.sequence):
            continue
        batch.append(
            LiveEvent.decoded(
                record.sequence,
                record.customer,
                record.type,
                record.timestamp_us,
                record.body,
                record.partition,
            )
        )
        if (record.partition, record.sequence) in ends:
            projection.feed(batch)
            projection.refresh(through=projection.cut)
            batches += 1
            batch = []
    if batch:
        projection.feed(batch)
        batches += 1
    projection.refresh(through=through)
    return projection, batches


def _live_from_server(url: str, token: str, customer: str) -> dict[str, Any] | None:
    answer = httpx.get(
        f"{url.rstrip('/')}/v1/live/{customer}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    if answer.status_code == 404:
        return None
    if answer.status_code == 409:  # the server cannot rate this customer: say why
        raise BillingError(answer.json().get("error", {}).get("message", answer.text[:200]))
    answer.raise_for_status()
    document: dict[str, Any] = answer.json()
    return document


def reconcile(
    billing: Billing, url: str | None = None, token: str | None = None
) -> ReconcileReport:
    """Compare live figures (replayed, or the server's at ``url``) with a full re-rating."""
    at_us = billing.clock()
    batches = 0
    replayed = None
    through = billing.ledger_cut()
    if url is None:
        replayed, batches = replayed_projection(billing, through)
    scanned = LiveProjection(billing)
    scanned.rebuild(through=through)
    ahead = _stamped_ahead(billing, int(at_us))
    checks = []
    for customer in sorted(set(scanned.customers) | set(scanned.failures)):
        check = CustomerCheck(customer)
        checks.append(check)
        try:
            _check_customer(billing, check, scanned, replayed, url, token, ahead, int(at_us))
        except (BillingError, ArithmeticError, ValueError) as error:
            reason = error.reason if isinstance(error, RatingFailed) else failure_reason(error)
            check.differences.append(f"cannot be rated: {reason}")
    checked = buckets.ensure_built(billing.context)
    difference = bucket_checks.check_buckets(billing.context) if checked else None
    described = None if difference is None else difference.describe()
    return ReconcileReport(at_us, through, batches, checks, checked, described)


def _check_customer(
    billing: Billing,
    check: CustomerCheck,
    scanned: LiveProjection,
    replayed: LiveProjection | None,
    url: str | None,
    token: str | None,
    ahead: dict[str, list[int]],
    at_us: int,
) -> None:
    """Compare one customer's live figures with the batch side (see ``reconcile``)."""
    customer = check.customer
    batch = scanned.figures(customer)
    if url is not None:
        assert token is not None
        live = _live_from_server(url, token, customer)
    else:
        assert replayed is not None
        figures = replayed.figures(customer)
        live = None if figures is None else figures.as_dict()
    if batch is None or live is None:
        check.differences.append("no live figures" if live is None else "no batch figures")
        return
    _compare(check, "spend", live["spend"], batch.spend)
    _compare(check, "cost", live["cost"], batch.cost)
    _compare(check, "prepaid", live["prepaid"], batch.prepaid)
    _check_lines(billing, check, live)
    balances_at = _balances_instant(ahead.get(customer, []), batch, at_us)
    if replayed is not None and balances_at != at_us:
        remaining = replayed.remaining(customer, balances_at)
        live["remaining"] = {unit: str(value) for unit, value in remaining.items()}
    _check_credits(billing, check, live, balances_at)


def _stamped_ahead(billing: Billing, at_us: int) -> dict[str, list[int]]:
    """Per customer, the timestamps of the events stamped at or after ``at_us`` (the
    ledger accepts events up to its clock-skew limit ahead of its clock): one scan."""
    ahead: dict[str, list[int]] = {}
    for customer, timestamp_us in billing.events_stamped_from(at_us):
        ahead.setdefault(customer, []).append(timestamp_us)
    return ahead


def _balances_instant(stamped: list[int], batch: Figures, at_us: int) -> int:
    """When a customer's balances are compared: now, or just after the newest event of
    its current period stamped later. The live book consumes every event it was fed, in
    the window open now; ``Billing.credits`` as of an instant consumes only the usage
    stamped before it; after the newest event, both consume it all."""
    inside = [t for t in stamped if t < batch.period.end_us]
    return max(at_us, max(inside) + 1) if inside else at_us


def _compare(check: CustomerCheck, name: str, live: Any, batch: Any) -> None:
    live_value = None if live is None else Decimal(str(live))
    batch_value = None if batch is None else Decimal(str(batch))
    check.checked[name] = (str(live_value), str(batch_value))
    if live_value != batch_value:
        check.differences.append(f"{name}: live {live_value}, batch {batch_value}")


def _check_lines(billing: Billing, check: CustomerCheck, live: dict[str, Any]) -> None:
    """Every priced line, by meter and group; a period an amendment split has a line per
    segment for the same meter and group, compared in segment order (the live lines and
    the draft's both come in that order)."""
    try:
        draft = billing.draft(check.customer)
    except NotFound:
        return
    drafted: dict[tuple[str, Any], list[tuple[Decimal, Decimal]]] = {}
    usage = [line for line in draft.lines if isinstance(line, MeterUsageLine)]
    for line in sorted(usage, key=lambda line: line.service.start):
        key = (line.meter, tuple(sorted(line.group.items())))
        amount: Decimal = line.amount_exact if line.units is UNSET else line.units
        drafted.setdefault(key, []).append((Decimal(line.quantity), Decimal(amount)))
    priced: dict[tuple[str, Any], list[tuple[Decimal, Decimal]]] = {}
    for line in live["lines"]:
        if line["amount"] is None:
            continue  # not priced (a meter measured for its cost only)
        quantity, amount = Decimal(line["quantity"]), Decimal(line["amount"])
        if line["events"] == 0 and amount == 0:
            continue  # an idle line the invoice leaves out, as ``Rater.lines`` does
        key = (line["meter"], tuple(sorted(line["group"].items())))
        priced.setdefault(key, []).append((quantity, amount))
    check.checked["usage lines"] = (
        str(sum(map(len, priced.values()))),
        str(sum(map(len, drafted.values()))),
    )
    for key in sorted(set(drafted) | set(priced), key=str):
        name = key[0] + "".join(f" {v}" for _, v in key[1] if v is not None)
        live_lines, draft_lines = priced.get(key, []), drafted.get(key, [])
        for index in range(max(len(live_lines), len(draft_lines))):
            label = name if max(len(live_lines), len(draft_lines)) == 1 else f"{name} #{index + 1}"
            if index >= len(live_lines) or index >= len(draft_lines):
                where = "only in the invoice draft" if index < len(draft_lines) else "only live"
                check.differences.append(f"line {label}: {where}")
            elif live_lines[index] != draft_lines[index]:
                (live_quantity, live_amount), (quantity, amount) = (
                    live_lines[index],
                    draft_lines[index],
                )
                check.differences.append(
                    f"line {label}: live {live_quantity} for {live_amount},"
                    f" draft {quantity} for {amount}"
                )


def _check_credits(
    billing: Billing, check: CustomerCheck, live: dict[str, Any], at_us: int
) -> None:
    remaining = live.get("remaining") or {}
    try:
        report = billing.credits(check.customer, at_us)
    except NotFound:
        return
    for unit, totals in report["totals"].items():
        if unit not in remaining and Decimal(totals["remaining"]) == 0:
            continue
        _compare(check, f"remaining {unit}", remaining.get(unit), totals["remaining"])

"""A customer's live figures: what the projection answers for its current period, and
their derivation from the period in memory (pure over a ``CustomerLive`` and an instant).

- quantities and rated amounts per line: amount(total after) - amount(total before) by
  construction, since a line is priced on its running total (tiers and volume stay exact);
- spend: usage in the contract's currency (credit-priced usage at its value), less the
  contract's discount;
- cost (COGS): each line's quantity times the cost rate of its meter and group;
- prepaid: what the customer paid for the grants active in the period;
- remaining credit per unit: the credit book (``core.credits``) over the earlier periods'
  charges and this period's window charges, the open window ending now.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, localcontext
from typing import Any

from msgspec import UNSET

from meterline.billing.credits import credit_book
from meterline.billing.service import Billing
from meterline.billing.thresholds import usage_before
from meterline.core.credit_records import CreditError
from meterline.core.cuts import Cut
from meterline.core.events import format_timestamp
from meterline.core.live_documents import (
    AccessAnswer,
    FigureLine,
    FigurePeriod,
    LiveFigures,
    ThresholdProgress,
    plain,
)
from meterline.core.model import Contract
from meterline.core.money import MONEY_CONTEXT
from meterline.core.periods import BillingPeriod
from meterline.core.rating import window_charges
from meterline.live.customer_period import CustomerLive

ZERO = Decimal(0)
NOT_PRICED: tuple[Decimal | None, str | None] = (None, None)
HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class LineFigures:
    meter: str
    group: dict[str, str | None]
    quantity: Decimal
    events: int
    amount: Decimal | None
    unit: str | None
    cost: Decimal


@dataclass(frozen=True, slots=True)
class Figures:
    """A customer's live figures for its current period (exact; see the module doc)."""

    customer: str
    currency: str
    period: BillingPeriod
    through: Cut
    """The figures hold every event of the customer inside this cut."""
    at_us: int
    spend: Decimal
    cost: Decimal
    prepaid: Decimal
    remaining: dict[str, Decimal]
    lines: tuple[LineFigures, ...]
    next_threshold: tuple[Decimal, Decimal, str] | None = None
    """Progressive billing's progress (``core.thresholds``): the period's figure so far,
    the next level, and what they count (the currency, or a meter's units)."""

    @property
    def margin(self) -> Decimal:
        with localcontext(MONEY_CONTEXT):
            return self.spend - self.cost

    def threshold_progress(self) -> ThresholdProgress | None:
        """``next_threshold`` as the figures and the access answers show it (None: no
        progressive threshold, or no level left)."""
        if self.next_threshold is None:
            return None
        so_far, level, of = self.next_threshold
        return ThresholdProgress(str(so_far), str(level), of)

    def document(self, access: AccessAnswer | None = None) -> LiveFigures:
        """The figures as the live route answers them (with the ``access`` answer when
        given): exact amounts as their ``str``, the credit balances by unit."""
        progress = self.threshold_progress()
        return LiveFigures(
            self.customer,
            self.currency,
            FigurePeriod(
                format_timestamp(self.period.start_us), format_timestamp(self.period.end_us)
            ),
            self.through.to_json(),
            format_timestamp(self.at_us),
            str(self.spend),
            str(self.cost),
            str(self.margin),
            str(self.prepaid),
            {unit: str(value) for unit, value in sorted(self.remaining.items())},
            tuple(
                FigureLine(
                    line.meter,
                    line.group,
                    str(line.quantity),
                    line.events,
                    None if line.amount is None else str(line.amount),
                    line.unit,
                    str(line.cost),
                )
                for line in self.lines
            ),
            UNSET if progress is None else progress,
            UNSET if access is None else access,
        )

    def as_dict(self) -> dict[str, Any]:
        """``document()`` as plain data (what the CLI prints and reconcile compares)."""
        data: dict[str, Any] = plain(self.document())
        return data


def derive(live: CustomerLive, now_us: int, through: Cut, with_credits: bool = True) -> Figures:
    """The figures of ``live`` at ``now_us`` (pure over its state)."""
    job = live.job
    configuration = job.configuration
    currency = live.currency
    rater = job.rater
    rated = rater.lines(currency, configuration)
    with localcontext(MONEY_CONTEXT):
        # spend as ``core.invoicing.usage_lines`` values each line: credit-priced usage
        # at its credit type's value at the segment start; then the segment's discount
        spend = ZERO
        for usage in rated:
            segment_terms = job.segments[usage.segment]
            amount = usage.amount
            if usage.unit != segment_terms.terms.plan.currency:
                credit = configuration.credit_type(usage.unit)
                assert credit is not None
                amount = amount * credit.value_at(segment_terms.start_us)
            percent = segment_terms.terms.discount_percent or ZERO
            spend += amount - amount * percent / HUNDRED if percent else amount
        amounts: dict[Any, tuple[Decimal | None, str | None]] = {
            (usage.segment, usage.meter, tuple(v for _, v in usage.group)): (
                usage.amount,
                usage.unit,
            )
            for usage in rated
        }
        lines = []
        cost = ZERO
        for segment, meter, group, quantity, count in sorted(
            rater.quantities(), key=lambda item: (item[0], item[1].key, str(item[2]))
        ):
            line_cost = ZERO
            rate = live.cost_rate(segment, meter, group)
            if rate is not None:
                line_cost = quantity * rate
            cost += line_cost
            priced, unit = amounts.get((segment, meter.key, group), NOT_PRICED)
            lines.append(
                LineFigures(
                    meter.key,
                    dict(zip(meter.group_by, group, strict=True)),
                    quantity,
                    count,
                    priced,
                    unit,
                    line_cost,
                )
            )
        prepaid = ZERO
        period = job.period
        for grant in live.inputs.grants:
            if grant.paid_currency not in (None, currency) or grant.paid <= 0:
                continue
            ends = min(
                t for t in (grant.expires_us, grant.reset_us, period.end_us) if t is not None
            )
            if grant.effective_us < period.end_us and ends > period.start_us:
                prepaid += grant.paid
    remaining: dict[str, Decimal] = {}
    if with_credits and not live.inputs.is_empty():
        remaining = remaining_credit(live, now_us)
    return Figures(
        live.contract.customer,
        currency,
        job.period,
        through,
        now_us,
        spend,
        cost,
        prepaid,
        remaining,
        tuple(lines),
        _progress(live, spend, lines, currency),
    )


def _progress(
    live: CustomerLive, spend: Decimal, lines: list[LineFigures], currency: str
) -> tuple[Decimal, Decimal, str] | None:
    """The period's figure so far and the next progressive threshold above it."""
    levels = live.contract.credits.threshold_levels
    figure = threshold_figure(live, spend, lines)
    if levels is None or figure is None:
        return None
    following = levels.next_level(figure)
    if following is None:
        return None
    return figure, following, levels.meter or currency


def threshold_figure(
    live: CustomerLive, spend: Decimal, lines: Sequence[LineFigures]
) -> Decimal | None:
    """What the contract's progressive thresholds count so far: the period's spend (with
    ``scope: lifetime``, plus the usage of earlier periods' finalized invoices), or the
    quantity of their meter in the period (None: no progressive thresholds)."""
    levels = live.contract.credits.threshold_levels
    if levels is None:
        return None
    with localcontext(MONEY_CONTEXT):
        if levels.meter is None:
            return spend + live.usage_before if levels.scope == "lifetime" else spend
        return sum((line.quantity for line in lines if line.meter == levels.meter), ZERO)


def lifetime_usage_before(billing: Billing, contract: Contract, period: BillingPeriod) -> Decimal:
    """The usage ``contract``'s lifetime thresholds count from periods before ``period``
    (its finalized period invoices' usage, as billing counts it); 0 without them."""
    levels = contract.credits.threshold_levels
    if levels is None or levels.scope != "lifetime":
        return ZERO
    stored = billing.store.invoices(contract.customer)
    return usage_before(stored, format_timestamp(period.start_us))


def remaining_credit(live: CustomerLive, now_us: int) -> dict[str, Decimal]:
    """Each unit's remaining balance at ``now_us``: the book over earlier periods' charges
    and this period's window charges, the open window ending now."""
    job = live.job
    charges = []
    for charge in window_charges(job.rater, live.currency, job.configuration):
        if charge.start_us <= now_us < charge.end_us:
            charge = replace(charge, end_us=now_us)  # the open window ends now
        charges.append(charge)
    try:
        book = credit_book(live.inputs, [*live.prior, *charges], until_us=now_us)
    except CreditError:
        return {}
    remaining: dict[str, Decimal] = {}
    with localcontext(MONEY_CONTEXT):
        for grant_id, grant in book.grants.items():
            if grant.effective_us > now_us:
                continue
            remaining[grant.unit] = remaining.get(grant.unit, ZERO) + book.balance(grant_id)
    return remaining

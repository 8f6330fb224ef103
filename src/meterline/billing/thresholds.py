"""Threshold billing: invoice a customer early when its usage crosses its threshold, and
true-ups on request.

Invariants: a threshold invoice bills what the open period's draft owes beyond what was
billed early already; the period's invoice later nets it as ``prepaid``, no further than
that invoice owes (netting never makes an invoice negative), and a surplus carries to the
customer's next period invoices (``billing.netting``).
"""

from __future__ import annotations

import hashlib
import logging
from decimal import Decimal, localcontext
from typing import Any

from msgspec.structs import replace

from meterline.billing import drafts
from meterline.billing.context import BillingContext, Loaded, billing_cycle
from meterline.billing.credits import BILLED_EARLY_KINDS, threshold_document, unbilled_usage
from meterline.billing.errors import NotFound, RatingFailed
from meterline.core.cuts import Cut
from meterline.core.documents import Invoice, MeterUsageLine, ThresholdLine
from meterline.core.events import format_timestamp
from meterline.core.invoicing import invoice_bytes
from meterline.core.model import Contract
from meterline.core.money import MONEY_CONTEXT
from meterline.core.periods import period_containing
from meterline.ledger.billing_records import BillingConflict, StoredInvoice

ZERO = Decimal(0)
_log = logging.getLogger("meterline.billing.service")
"""The logger billing has always written to (before its split into modules)."""


def check_thresholds(context: BillingContext, customer: str | None = None) -> list[StoredInvoice]:
    """Bill now every contract whose unbilled usage this period reached its threshold:
    fires when ``previous < threshold <= current`` (``previous`` is zero after each
    threshold invoice, which bills everything unbilled), once per crossing: the store
    refuses a second invoice computed from the same state (a concurrent check)."""
    loaded = context.current()
    result = []
    for contract in loaded.configuration.contracts:
        terms = contract.credits
        if terms.threshold is None and terms.threshold_levels is None:
            continue
        if customer is not None and contract.customer != customer:
            continue
        try:
            document = drafts.draft(context, contract.customer)
        except NotFound:
            continue
        except RatingFailed:
            _log.warning("threshold of %s not checked: cannot be rated", contract.customer)
            continue
        if document.status != "draft":
            continue
        unbilled = unbilled_usage(document)
        decided = _crossed(context, contract, document, unbilled)
        if decided is None:
            continue
        threshold, level = decided
        invoice = threshold_invoice(
            context, loaded, contract, document, unbilled, threshold, level=level
        )
        if invoice is not None:
            result.append(invoice)
    return result


def _crossed(
    context: BillingContext, contract: Contract, draft: Invoice, unbilled: Decimal
) -> tuple[Decimal, int | None] | None:
    """The threshold ``draft`` has crossed, and its level number for progressive levels:
    the single ``threshold`` when the unbilled usage reached it; the highest level of the
    cumulative usage (money billed early plus unbilled, or a meter's quantity; with
    ``scope: lifetime`` plus every earlier period's usage) not reached by an earlier
    threshold invoice (of the period, or, lifetime, of the contract) nor, lifetime, by
    what earlier periods and this period's threshold invoices billed
    (``core.thresholds``)."""
    terms = contract.credits
    levels = terms.threshold_levels
    if levels is None:
        threshold = terms.threshold
        return None if threshold is None or unbilled < threshold else (threshold, None)
    if unbilled <= 0:
        return None
    start = draft.period_span().start
    lifetime = levels.scope == "lifetime"
    stored = context.store.invoices(contract.customer)
    # this period's threshold invoices (True) and, lifetime, earlier periods' (False)
    earlier: dict[bool, list[Invoice]] = {}
    for item in stored:
        this_period = format_timestamp(item.period_start_us) == start
        if item.kind == "threshold" and (lifetime or this_period):
            earlier.setdefault(this_period, []).append(item.record)
    fired = max(
        (
            line.threshold_level or 0
            for docs in earlier.values()
            for doc in docs
            for line in doc.lines
            if isinstance(line, ThresholdLine)
        ),
        default=0,
    )
    if levels.meter is not None:
        figure = sum(
            (
                line.quantity
                for line in draft.lines
                if isinstance(line, MeterUsageLine) and line.meter == levels.meter
            ),
            Decimal(0),
        )
    else:
        with localcontext(MONEY_CONTEXT):
            billed = sum((doc.total for doc in earlier.get(True, [])), ZERO)
            if lifetime:
                billed += usage_before(stored, start)
                fired = max(fired, levels.reached(billed))
            figure = unbilled + billed
    reached = levels.reached(figure)
    if reached <= fired:
        return None
    return levels.level(reached) or Decimal(0), reached


def usage_before(stored: list[StoredInvoice], start: str) -> Decimal:
    """The usage (net of discounts and credits, as a threshold measures it) of every
    finalized period invoice of periods before the one starting at ``start``: what the
    contract's lifetime usage counts from earlier periods."""
    total = ZERO
    with localcontext(MONEY_CONTEXT):
        for item in stored:
            if item.kind != "period" or format_timestamp(item.period_start_us) >= start:
                continue
            for line in item.record.lines:
                if line.kind in BILLED_EARLY_KINDS and line.kind != "prepaid":
                    total += line.amount
    return total


def true_up(
    context: BillingContext, customer: str, reason: str, control: str
) -> StoredInvoice | None:
    """Bill ``customer``'s unbilled usage of the period now, because ``control`` (a
    control firing's id) said so; the period invoice nets it like a threshold invoice.
    Idempotent by ``control``: a second call returns the invoice the first made. None
    when nothing is unbilled."""
    for invoice in context.store.invoices(customer):
        if invoice.kind == "threshold" and invoice.record.control == control:
            return invoice
    loaded = context.current()
    contract = context.contract(loaded, customer)
    document = drafts.draft(context, customer)
    if document.status != "draft":
        return None
    unbilled = unbilled_usage(document)
    if unbilled <= 0:
        return None
    return threshold_invoice(
        context, loaded, contract, document, unbilled, None, reason=reason, control=control
    )


def threshold_invoice(
    context: BillingContext,
    loaded: Loaded,
    contract: Contract,
    draft: Invoice,
    unbilled: Decimal,
    threshold: Decimal | None,
    reason: str | None = None,
    control: str | None = None,
    level: int | None = None,
) -> StoredInvoice | None:
    cycle = billing_cycle(loaded.configuration, contract)
    now_us = context.clock()
    period = period_containing(cycle, now_us)
    seen = len(
        [
            i
            for i in context.store.invoices(contract.customer)
            if i.kind == "threshold" and i.period_start_us == period.start_us
        ]
    )
    head = Cut.from_json(draft.through(), "ledger.through")
    invoice_id = context.store.next_invoice_id()
    document = threshold_document(
        invoice_id, draft, unbilled, threshold, head.to_json(), now_us, reason, control
    )
    if level is not None:  # progressive levels: which one this invoice answered
        line = replace(
            document.lines[0],
            threshold_level=level,
            description=f"Usage to date (the period's usage reached {threshold})",
        )
        document = replace(document, lines=[line])
    content = invoice_bytes(document)
    stored = StoredInvoice(
        invoice_id,
        contract.customer,
        period.start_us,
        period.end_us,
        loaded.revision,
        head.head(context.partition(contract.customer)),
        now_us,
        content,
        hashlib.sha256(content).digest(),
        "threshold",
    )

    def guard(connection: Any) -> None:
        count = connection.execute(
            "SELECT COUNT(*) FROM invoices WHERE customer = ? AND kind = 'threshold'"
            " AND period_start_us = ?",
            (contract.customer, period.start_us),
        ).fetchone()[0]
        if count != seen:
            raise BillingConflict("a threshold invoice was made meanwhile")

    try:
        context.store.add_invoices([stored], guard)
    except BillingConflict:
        return None
    return stored

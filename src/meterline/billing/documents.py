"""An invoice document built from a rating job, and what every rating shares.

Owns: building a document (``invoice_document``) from a rated job and its credit part, the
window edges of a period's credit burn-down (``credit_cuts``), and how a failure to rate
one customer is named (``rating_of``, ``customer_failure``).

Invariants: pure over its inputs (no clock, no store): the same job, configuration and
credit part give the same document; a customer's rating failure names that customer and
never another.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from meterline.billing.context import BillingContext, billing_cycle
from meterline.billing.credits import CreditInputs
from meterline.billing.errors import BillingError, RatingFailed
from meterline.billing.scan import RatingJob
from meterline.billing.unbillable import CustomerFailure, failure_reason
from meterline.core.coupons import Coupon, coupons_in_force
from meterline.core.credits import Charge, CreditBook, cut_instants
from meterline.core.documents import CreditsSection, Invoice, record_data
from meterline.core.invoicing import Adjustment, ExtraLine, InvoiceHeader, build_invoice
from meterline.core.model import Configuration, Contract, Segment
from meterline.core.periods import BillingPeriod, local_date, local_midnight_us
from meterline.core.tax import TaxAsk

_log = logging.getLogger("meterline.billing.service")
"""The logger billing has always written to (before its split into modules)."""


@dataclass
class CreditPart:
    """A period's credit ledger as it shows on the invoice."""

    lines: list[ExtraLine]
    section: CreditsSection
    charges: list[Charge]
    book: CreditBook


def currency_of(segment_list: list[Segment]) -> str:
    return segment_list[0].terms.plan.currency if segment_list else "USD"


def credit_cuts(
    inputs: CreditInputs, period: BillingPeriod, timezone: str, *more: int
) -> tuple[int, ...] | None:
    """Window edges for a period's credit burn-down: every instant the active grants may
    change, and each local midnight (so the credit ledger is at least daily); None when
    the customer has no credit terms and no grants (the invoice then needs no windows)."""
    if inputs.is_empty():
        return None
    instants = set(cut_instants(inputs.grants, inputs.voids, period.start_us, period.end_us))
    day = local_date(timezone, period.start_us)
    while True:
        day += timedelta(days=1)
        midnight = local_midnight_us(timezone, day)
        if midnight >= period.end_us:
            break
        instants.add(midnight)
    instants.update(t for t in more if period.start_us < t < period.end_us)
    return tuple(sorted(instants))


@contextmanager
def rating_of(customer: str) -> Iterator[None]:
    """Turn a failure to rate ``customer`` (arithmetic beyond exact, a price that cannot
    apply) into ``RatingFailed``, naming the customer; billing errors pass as they are."""
    try:
        yield
    except BillingError:
        raise
    except (ArithmeticError, ValueError) as error:
        raise RatingFailed(customer, failure_reason(error)) from error


def customer_failure(
    customer: str, error: Exception, period: BillingPeriod | None = None
) -> CustomerFailure:
    """A customer a close could not close, and why (an unexpected error is logged whole)."""
    if not isinstance(error, (BillingError, ArithmeticError, ValueError)):
        _log.exception("closing %s failed", customer, exc_info=error)
    reason = error.reason if isinstance(error, RatingFailed) else failure_reason(error)
    return CustomerFailure(customer, reason, period)


def ordered_failures(failed: dict[str, CustomerFailure]) -> list[CustomerFailure]:
    return sorted(failed.values(), key=lambda failure: failure.customer)


def invoice_document(
    context: BillingContext,
    job: RatingJob,
    configuration: Configuration,
    revision: int,
    configuration_hash: str,
    number: str | None,
    finalized_at_us: int | None,
    adjustments: list[Adjustment],
    credit: CreditPart | None = None,
) -> Invoice:
    contract = configuration.contract(job.customer)
    assert contract is not None
    currency = currency_of(job.segments)
    rated = job.rater.lines(currency, configuration)
    header = InvoiceHeader(
        job.customer,
        currency,
        contract.timezone,
        job.period,
        revision,
        configuration_hash,
        job.through,
        number,
        finalized_at_us,
    )
    return build_invoice(
        header,
        job.segments,
        rated,
        adjustments,
        configuration,
        contract.credits.minimum_commit,
        [] if credit is None else credit.lines,
        None if credit is None else record_data(credit.section),
        redeemed_coupons(configuration, contract, job.period),
        tax_ask(configuration, contract),
    )


def redeemed_coupons(
    configuration: Configuration, contract: Contract, period: BillingPeriod
) -> list[Coupon]:
    """The contract's coupons that apply to ``period``'s invoice (``core.coupons``)."""
    if not contract.coupons:
        return []
    coupons = {coupon.code: coupon for coupon in configuration.coupons}
    cycle = billing_cycle(configuration, contract)
    return coupons_in_force(coupons, contract.coupons, cycle, period)


def tax_ask(configuration: Configuration, contract: Contract) -> TaxAsk | None:
    """How the contract's invoices are taxed; None when the pricing file has no rates."""
    if not configuration.tax_rates:
        return None
    provider = configuration.tax_provider()
    return TaxAsk(provider, contract.tax_jurisdiction, configuration.tax_rounding)

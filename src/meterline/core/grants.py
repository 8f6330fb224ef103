"""A contract's declared credit (``CreditSpec``) as the grants it creates over time (pure).

A one-off spec is one grant, effective from its start (the contract's when unset) until
its expiry. A recurring spec (``recurrence: period``) is one grant per billing period the
contract is in force, each with the full amount, effective from the period start (or the
contract's, or the spec's, whichever is later) and reset at the period end, where its
rollover rule decides what is kept; the kept amount expires at the end of the
``rollover_periods``-th following period. A recurring grant cut short (the contract or the
spec ends mid-period) simply expires there, rolling nothing. A declared expiry is the
instant the grant stops paying, or one microsecond after it when the pricing file's
``semantics.grant_end`` is ``inclusive`` (``core.semantics.declared_expiry``); a declared
start is rounded to the whole minute when ``semantics.grant_start`` says so
(``core.semantics.declared_start``), never before the contract's start. Grant ids are stable:
``<key>`` for a one-off grant, ``<key>@<period start date>`` for a recurring one, so
re-deriving the grants always gives the same ids.
"""

from __future__ import annotations

from meterline.core.credit_records import Grant
from meterline.core.model import Configuration, Contract, CreditSpec, TermsError, terms_at
from meterline.core.money import cost_of
from meterline.core.periods import BillingCycle, local_date, next_period, periods_overlapping
from meterline.core.semantics import declared_expiry, declared_start


def spec_unit(configuration: Configuration, contract: Contract, spec: CreditSpec, at: int) -> str:
    """The spec's unit; ``""`` resolves to the plan currency in force at ``at``."""
    if spec.unit:
        return spec.unit
    try:
        return terms_at(configuration, contract, at, at).plan.currency
    except TermsError:
        return ""


def contract_grants(
    configuration: Configuration, contract: Contract, cycle: BillingCycle, through_us: int
) -> list[Grant]:
    """Every grant ``contract``'s credit terms create that is effective by ``through_us``."""
    result: list[Grant] = []
    semantics = configuration.semantics_for(contract.customer)
    for spec in contract.credits.grants:
        begin = (
            contract.start_us
            if spec.start_us is None
            else max(declared_start(spec.start_us, semantics), contract.start_us)
        )
        ends = [t for t in (spec.end_us, contract.end_us) if t is not None]
        stop = min(ends) if ends else None
        if begin > through_us or (stop is not None and stop <= begin):
            continue
        if spec.recurrence == "none":
            result.append(_grant(configuration, contract, spec, spec.key, begin, None, None))
            continue
        last = through_us + 1 if stop is None else min(through_us + 1, stop)
        for period in periods_overlapping(cycle, begin, last):
            effective = max(period.start_us, begin)
            if effective > through_us:
                break
            cut = stop is not None and stop < period.end_us
            rolled_until = None
            if not cut and spec.rollover_periods is not None:
                later = period
                for _ in range(spec.rollover_periods):
                    later = next_period(cycle, later)
                rolled_until = later.end_us
            grant_id = f"{spec.key}@{local_date(cycle.timezone, period.start_us)}"
            result.append(
                _grant(
                    configuration,
                    contract,
                    spec,
                    grant_id,
                    effective,
                    None if cut else period.end_us,
                    rolled_until,
                    expires=stop if cut else None,
                )
            )
    return result


def _grant(
    configuration: Configuration,
    contract: Contract,
    spec: CreditSpec,
    grant_id: str,
    effective: int,
    reset: int | None,
    rolled_until: int | None,
    expires: int | None = None,
) -> Grant:
    unit = spec_unit(configuration, contract, spec, effective)
    semantics = configuration.semantics_for(contract.customer)
    currency = unit
    credit = configuration.credit_type(unit)
    if credit is not None:
        currency = credit.currency
    return Grant(
        grant_id=grant_id,
        unit=unit,
        amount=spec.amount,
        effective_us=effective,
        expires_us=declared_expiry(spec.expires_us, semantics) if expires is None else expires,
        priority=spec.priority,
        paid=spec.paid
        if spec.unit_cost is None
        else cost_of(spec.amount, spec.unit_cost, currency),
        paid_currency=currency,
        scope=spec.scope,
        reset_us=reset,
        rollover=spec.rollover if reset is not None else None,
        rollover_expires_us=rolled_until,
        source="commit" if spec.commit else "contract",
        reason=spec.description or (f"prepaid commit {spec.key}" if spec.commit else spec.key),
    )

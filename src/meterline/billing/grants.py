"""Credit grants: grant (purchase or promotional), void and adjust.

Invariants: a grant, void or adjustment is appended to the store, never edited; the
listeners are told the customer whose credit changed; a grant id belongs to one customer.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import TypedDict, Unpack

from meterline.billing import balances
from meterline.billing.context import BillingContext
from meterline.billing.credits import grant_document, grant_errors, purchase_document
from meterline.billing.errors import BillingError, InvalidRequest, NotFound
from meterline.core.credits import Grant
from meterline.core.invoicing import invoice_bytes
from meterline.core.model import Configuration, Contract, TermsError, terms_at
from meterline.core.money import MINOR_UNITS
from meterline.ledger.billing_records import CreditAction, StoredGrant, StoredInvoice


def grant_ids(
    context: BillingContext, configuration: Configuration, contract: Contract
) -> set[str]:
    """Every grant of the customer effective by now, and those made to start later."""
    now_us = context.clock()
    inputs = balances.credit_inputs(
        context, configuration, contract, max(now_us, contract.start_us)
    )
    ids = {grant.grant_id for grant in inputs.grants}
    ids.update(row.grant_id for row in context.store.grants(contract.customer))
    return ids


class GrantTerms(TypedDict, total=False):
    """A grant's optional terms, by name (``grant``'s defaults apply to those left out):
    what was paid for it, its burn priority, when it takes effect and expires, the meters
    it may pay for (empty: any) and who made it."""

    paid: Decimal
    priority: int
    effective_us: int | None
    expires_us: int | None
    scope: tuple[str, ...]
    source: str


def grant(
    context: BillingContext,
    customer: str,
    unit: str,
    amount: Decimal,
    reason: str,
    **terms: Unpack[GrantTerms],
) -> tuple[StoredGrant, StoredInvoice | None]:
    """Grant credit to ``customer`` now (or from ``effective_us``, never in the past);
    a paid grant is invoiced at once, atomically with it (a ``purchase`` invoice)."""
    paid, priority = terms.get("paid", Decimal(0)), terms.get("priority", 50)
    effective_us, expires_us = terms.get("effective_us"), terms.get("expires_us")
    scope, source = terms.get("scope", ()), terms.get("source", "api")
    loaded = context.current()
    configuration = loaded.configuration
    contract = context.contract(loaded, customer)
    now_us = context.clock()
    effective = now_us if effective_us is None else effective_us
    errors = grant_errors(
        configuration, unit, amount, paid, priority, scope, reason, effective, expires_us
    )
    if effective < now_us:
        errors.append("effective: must not be in the past (history is not rewritten)")
    if contract.end_us is not None and effective >= contract.end_us:
        errors.append("effective: the contract has ended by then")
    try:
        plan = terms_at(configuration, contract, max(effective, contract.start_us), effective)
    except TermsError:
        errors.append("effective: no plan is in force for the contract then")
        raise InvalidRequest(errors) from None
    currency = plan.plan.currency
    if unit in MINOR_UNITS and unit != currency:
        errors.append(f"credit_type: {unit} is not this contract's currency ({currency})")
    if errors:
        raise InvalidRequest(errors)
    credit_type = configuration.credit_type(unit)
    if credit_type is not None and credit_type.currency != currency:
        raise BillingError(f"unit: {unit} is valued in {credit_type.currency}, not {currency}")
    grant = Grant(
        grant_id="",
        unit=unit,
        amount=amount,
        effective_us=effective,
        expires_us=expires_us,
        priority=priority,
        paid=paid,
        paid_currency=currency,
        scope=scope,
        created_us=now_us,
        source=source,
        reason=reason,
    )
    make_invoice = None
    if paid > 0:

        def make_invoice(grant_id: str, invoice_id: str) -> StoredInvoice:
            document = purchase_document(
                invoice_id, customer, currency, contract.timezone, grant, grant_id, now_us
            )
            content = invoice_bytes(document)
            return StoredInvoice(
                invoice_id,
                customer,
                now_us,
                now_us,
                loaded.revision,
                context.ledger_cut().head(context.partition(customer)),
                now_us,
                content,
                hashlib.sha256(content).digest(),
                "purchase",
            )

    made = context.store.add_grant(
        customer, now_us, lambda grant_id: grant_document(grant), make_invoice
    )
    context.changed(customer)
    return made


def own_grant(context: BillingContext, customer: str, grant_id: str) -> None:
    loaded = context.current()
    contract = context.contract(loaded, customer)
    if grant_id not in grant_ids(context, loaded.configuration, contract):
        raise NotFound(f"customer {customer!r} has no grant {grant_id!r}")


def grant_status(context: BillingContext, customer: str, grant_id: str) -> str:
    report = balances.credits(context, customer)
    return next((g["status"] for g in report["grants"] if g["grant"] == grant_id), "pending")


def void_grant(context: BillingContext, customer: str, grant_id: str, reason: str) -> CreditAction:
    """Void a grant from now on: its balance leaves to ``voided`` (never deleted)."""
    if not reason.strip():
        raise InvalidRequest(["reason: a void needs a reason"])
    own_grant(context, customer, grant_id)
    if any(a.kind == "void" and a.grant_id == grant_id for a in context.store.actions(customer)):
        raise BillingError(f"grant {grant_id} is already void")
    status = grant_status(context, customer, grant_id)
    if status in ("expired", "reset"):
        raise BillingError(f"grant {grant_id} has {status}; nothing is left to void")
    action = CreditAction(grant_id, customer, context.clock(), "void", None, reason)
    context.store.add_action(action)
    context.changed(customer)
    return action


def adjust_grant(
    context: BillingContext, customer: str, grant_id: str, amount: Decimal, reason: str
) -> CreditAction:
    """Add to (positive) or take from (negative) a grant's balance by hand, now."""
    if not reason.strip():
        raise InvalidRequest(["reason: an adjustment needs a reason"])
    if amount == 0:
        raise InvalidRequest(["amount: an adjustment must not be zero"])
    own_grant(context, customer, grant_id)
    status = grant_status(context, customer, grant_id)
    if status not in ("active", "exhausted"):
        raise BillingError(f"grant {grant_id} is {status}; only a grant in force can be adjusted")
    action = CreditAction(grant_id, customer, context.clock(), "adjust", str(amount), reason)
    context.store.add_action(action)
    context.changed(customer)
    return action

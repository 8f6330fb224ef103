"""What the controls' slower actions do, each idempotent by its firing id: ``true_up``
finalizes an invoice for the usage not yet billed (the invoice's ``control`` field names
the firing), ``top_up`` grants a policy's top-up credit (the grant's reason names it);
and which webhook an ``alert`` sends. ``live.control_engine`` decides when they run and records
their outcomes."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from meterline.billing.service import Billing
from meterline.clock import Clock
from meterline.core.live_documents import InvoiceFinalized, WebhookData
from meterline.ledger.control_records import StoredFiring
from meterline.live.projection import LiveProjection

DAY_US = 86_400_000_000

Publish = Callable[[str, WebhookData, str], object]
"""``publish(kind, data, event_id)``: queue a webhook."""


def alert_kind(firing: StoredFiring, policy: Any) -> str:
    """``balance.low`` for a balance control warning before the balance is gone,
    ``invoice.overdue`` for an ``invoice_overdue`` control, else ``control.fired``."""
    if firing.kind == "invoice_overdue":
        return "invoice.overdue"
    if firing.kind == "balance_exhausted" and policy is not None and policy.remaining_at_most > 0:
        return "balance.low"
    return "control.fired"


ZERO = Decimal(0)


def true_up(billing: Billing, firing: StoredFiring, publish: Publish) -> dict[str, Any]:
    """Finalize a true-up invoice of the customer's unbilled usage; its outcome."""
    reason = f"True-up: control {firing.policy} fired ({firing.firing_id})"
    invoice = billing.true_up(firing.customer, reason, firing.firing_id)
    if invoice is None:
        return {"invoice": None}
    finalized = InvoiceFinalized(invoice.invoice_id, firing.customer, "true_up", firing.firing_id)
    publish("invoice.finalized", finalized, invoice.invoice_id)
    return {"invoice": invoice.invoice_id}


def top_up(
    billing: Billing,
    projection: LiveProjection,
    clock: Clock,
    firing: StoredFiring,
    policy: Any,
) -> dict[str, Any]:
    """Grant the top-up credit of ``policy`` (once per firing); its outcome."""
    if policy is None or policy.top_up is None:
        return {"error": "the policy has no top_up rule any more"}
    reason = f"Automatic top-up: control {firing.policy} fired ({firing.firing_id})"
    for row in billing.store.grants(firing.customer):
        if firing.firing_id in row.document.decode(errors="replace"):
            return {"grant": row.grant_id, "repeated": True}
    rule = policy.top_up
    expires = None
    if rule.expires_after_days is not None:
        expires = clock() + rule.expires_after_days * DAY_US
    balance = projection.remaining(firing.customer).get(rule.credit_type, ZERO)
    amount = rule.grant_for(balance)
    if amount <= 0:
        return {"skipped": f"the balance {balance} is at its target {rule.target_balance}"}
    kind = billing.current().configuration.credit_type(rule.credit_type)
    currency = rule.credit_type if kind is None else kind.currency
    stored, invoice = billing.grant(
        firing.customer,
        rule.credit_type,
        amount,
        reason,
        paid=rule.paid_for(amount, currency),
        expires_us=expires,
        source="control",
    )
    projection.mark_stale(firing.customer)
    return {
        "grant": stored.grant_id,
        "invoice": None if invoice is None else invoice.invoice_id,
    }

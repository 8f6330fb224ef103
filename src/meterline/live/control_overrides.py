"""Finance's manual actions on a customer's controls, before they are recorded: what an
override may ask (``check_override``) and the credit an override grants
(``grant_override``). ``live.control_engine`` records and applies them."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meterline.billing.service import Billing
from meterline.errors import MeterlineError

OVERRIDE_KINDS = ("unblock", "extend", "grant")


@dataclass(frozen=True)
class Override:
    """Finance's manual action on ``customer``, as asked: ``unblock`` (one policy's block,
    or all), ``extend`` (raise ``policy``'s limit by ``amount``) or ``grant`` (``amount``
    of ``credit_type``, invoiced when ``paid``), made by ``actor`` for ``reason``."""

    customer: str
    kind: str
    reason: str
    actor: str
    policy: str | None = None
    amount: Decimal | None = None
    credit_type: str | None = None
    paid: Decimal = Decimal(0)


class OverrideError(MeterlineError, ValueError):
    """An override names something that does not exist or is not allowed."""

    code = "invalid_override"
    http_status = 422


def check_override(request: Override, has_contract: bool, target: Any) -> None:
    """Raise ``OverrideError`` unless the override may be made: a reason, a customer with
    a contract in force (``has_contract``), an existing policy (``target`` is the control
    it names), and what its kind needs (``extend``: an amount above zero on a control
    other than an exhausted balance; ``grant``: a credit type and an amount)."""
    customer, kind, policy, amount = request.customer, request.kind, request.policy, request.amount
    reason, credit_type = request.reason, request.credit_type
    if not reason.strip():
        raise OverrideError("reason: an override needs a reason")
    if not has_contract:
        raise OverrideError(f"customer: {customer!r} has no contract in force")
    if policy is not None and target is None:
        raise OverrideError(f"policy: {customer!r} has no control {policy!r}")
    if kind == "extend":
        if policy is None or amount is None or amount <= 0:
            raise OverrideError("amount: extend needs a policy and an amount above zero")
        if target.kind == "balance_exhausted" and target.remaining_at_most <= 0:
            raise OverrideError(
                "policy: a balance cannot go below zero (usage beyond it is overage);"
                " grant credits instead of extending an exhausted-balance control"
            )
    elif kind == "grant":
        if amount is None or credit_type is None:
            raise OverrideError("amount: a grant needs a credit_type and an amount")
    elif kind not in OVERRIDE_KINDS:
        raise OverrideError(f"kind: {kind!r} is not one of unblock, extend, grant")


def grant_override(billing: Billing, request: Override) -> dict[str, Any]:
    """Grant the request's amount of its credit type (invoiced when ``paid``); the
    override's detail."""
    assert request.amount is not None and request.credit_type is not None  # checked before
    stored, invoice = billing.grant(
        request.customer,
        request.credit_type,
        request.amount,
        f"{request.reason} (override by {request.actor})",
        paid=request.paid,
    )
    return {
        "grant": stored.grant_id,
        "invoice": None if invoice is None else invoice.invoice_id,
    }

"""Billing: the shell that applies pricing and makes, explains, proves and audits invoices,
and records what is paid against them."""

from typing import TYPE_CHECKING

from meterline.lazy import lazy_exports

__all__ = [
    "Billing",
    "BillingError",
    "InvalidRequest",
    "NotFound",
    "PaymentRequest",
    "RatingFailed",
    "audit_ledger",
    "open_billing",
]

_HOMES = {
    "Billing": "meterline.billing.service",
    "BillingError": "meterline.billing.errors",
    "InvalidRequest": "meterline.billing.errors",
    "NotFound": "meterline.billing.errors",
    "PaymentRequest": "meterline.billing.payments",
    "RatingFailed": "meterline.billing.errors",
    "audit_ledger": "meterline.billing.service",
    "open_billing": "meterline.billing.service",
}
"""Where each public name lives; loaded on first use (PEP 562), so importing one light
module of this package does not load the rest."""

__getattr__ = lazy_exports("meterline.billing", _HOMES, globals())


if TYPE_CHECKING:
    from meterline.billing.errors import BillingError, InvalidRequest, NotFound, RatingFailed
    from meterline.billing.payments import PaymentRequest
    from meterline.billing.service import Billing, audit_ledger, open_billing

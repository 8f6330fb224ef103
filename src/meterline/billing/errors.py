"""Billing's errors: each carries its code and HTTP status, all derive from ``MeterlineError``.

Invariant: an error here says what cannot be met and changes nothing (a request that
raises stored nothing).
"""

from __future__ import annotations

from meterline.errors import MeterlineError


class BillingError(MeterlineError, ValueError):
    """A billing request that cannot be met (a line without events, nothing to settle...)."""

    code = "billing_conflict"
    http_status = 409


class NotFound(BillingError):
    """The customer, contract, invoice, line or event asked for does not exist."""

    code = "not_found"
    http_status = 404


class RatingFailed(BillingError):
    """One customer's usage could not be rated (an amount beyond exact arithmetic, a
    price that cannot apply): the customer and the reason. Other customers are unaffected."""

    code = "rating_failed"
    http_status = 409

    def __init__(self, customer: str, reason: str) -> None:
        super().__init__(f"customer {customer!r} cannot be rated: {reason}")
        self.customer = customer
        self.reason = reason


class InvalidRequest(BillingError):
    """A request with invalid fields (each problem names its field): nothing was done."""

    code = "invalid_input"
    http_status = 422

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors

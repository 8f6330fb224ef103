"""The exceptions meterline raises, drawn once.

    MeterlineError
    ├── InputError            bad input refused as a whole (HTTP 4xx, CLI exit 2)
    │   ├── MalformedJSON         body is not JSON; carries the byte position
    │   ├── BatchTooLarge         more events or bytes than the named limit
    │   ├── NestingTooDeep        JSON nested deeper than the named limit
    │   └── UnsupportedContentType
    ├── AuthError             missing, unknown or revoked key (HTTP 401)
    │   └── ScopeError            valid key without the needed scope (HTTP 403)
    └── StoreError            the ledger store cannot do what was asked

Per-event problems are not exceptions: they come back as data (``FieldError``) in the
batch outcome, so one bad event never costs the valid ones beside it.
"""

from __future__ import annotations


class MeterlineError(Exception):
    """Base of every error meterline raises on purpose."""


class InputError(MeterlineError):
    """Input refused as a whole; nothing of it was written."""

    code = "invalid_input"
    http_status = 400


class MalformedJSON(InputError):
    code = "malformed_json"

    def __init__(self, message: str, position: int | None) -> None:
        super().__init__(message)
        self.position = position


class BatchTooLarge(InputError):
    code = "batch_too_large"
    http_status = 413


class NestingTooDeep(InputError):
    code = "nesting_too_deep"


class UnsupportedContentType(InputError):
    code = "unsupported_content_type"
    http_status = 415


class AuthError(MeterlineError):
    code = "unauthorized"
    http_status = 401


class ScopeError(AuthError):
    code = "forbidden"
    http_status = 403


class StoreError(MeterlineError):
    """The store failed or was asked something it cannot answer."""

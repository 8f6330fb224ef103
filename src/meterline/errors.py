"""The root of every exception meterline raises on purpose, and the ones the API layer
shares.

Every public exception class in meterline derives from ``MeterlineError`` and carries a
``code`` (the ``error.code`` of an HTTP answer) and an ``http_status``; classes that were
``ValueError``/``RuntimeError``/``LookupError`` before keep that base too, so existing
``except ValueError`` still catches them (tests/unit/test_error_tree.py walks the package).

    MeterlineError            (core.errors) code "error", HTTP 500
    ├── InputError            bad input refused as a whole (HTTP 4xx, CLI exit 2)
    │   ├── MalformedJSON         body is not JSON; carries the byte position
    │   ├── BatchTooLarge         more events or bytes than the named limit
    │   ├── NestingTooDeep        JSON nested deeper than the named limit
    │   └── UnsupportedContentType
    ├── AuthError             missing, unknown or revoked key (HTTP 401)
    │   └── ScopeError            valid key without the needed scope (HTTP 403)
    ├── StoreError            the ledger store cannot do what was asked
    │   └── LeaseLost, PartitionLeased (ledger.heads)
    └── the errors of each room, beside the code that raises them: ConfigurationError
        (config.source), BillingError, NotFound, InvalidRequest, RatingFailed
        (billing.service), BillingConflict (ledger.billing_records), TermsError, RatingError,
        MoneyError, CreditError, JournalError (core), WebhookError, WebhookNotFound,
        EndpointDisabled (live.webhook_service), OverrideError (live.control_engine),
        WorkerUnavailable (live.link), StreamUnavailable, BatchDecodeError
        (stream.errors), WorkerError (stream.service), ExportError, QueryError
        (finance.export_errors), CheckpointKeyError (ledger.checkpoints), ClockSettingError
        (clock), HttpError (api), PageError (dashboard), QueueFull, WebhookSignatureError
        (sdk), CreditNoteError, AllocationError, ExchangeError (core), PaymentError
        (core.payments)

``proofs.ProofError`` alone stays a plain ``ValueError``: ``meterline.proofs`` is the
standalone verifier and imports nothing of meterline beyond two pure core modules.

Per-event problems are not exceptions: they come back as data (``FieldError``) in the
batch outcome, so one bad event never costs the valid ones beside it.
"""

from __future__ import annotations

from meterline.core.errors import MeterlineError

__all__ = [
    "AuthError",
    "BatchTooLarge",
    "InputError",
    "MalformedJSON",
    "MeterlineError",
    "NestingTooDeep",
    "ScopeError",
    "StoreError",
    "UnsupportedContentType",
]


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

    code = "store_error"
    http_status = 500

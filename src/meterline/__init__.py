"""meterline: an open-source monetization engine for AI products.

The public API is re-exported here; ``__all__`` is the contract (tested).
"""

__version__ = "0.1.0"

from meterline.core.chain import ChainReport
from meterline.core.events import FieldError, PreparedEvent, prepare_event
from meterline.core.limits import IngestLimits
from meterline.core.outcomes import BatchOutcome, EventOutcome
from meterline.errors import (
    AuthError,
    BatchTooLarge,
    InputError,
    MalformedJSON,
    MeterlineError,
    ScopeError,
    StoreError,
    UnsupportedContentType,
)
from meterline.ledger import EventPage, EventQuery, Ledger, open_ledger
from meterline.sdk import Client, QueueFull

__all__ = [
    "AuthError",
    "BatchOutcome",
    "BatchTooLarge",
    "ChainReport",
    "Client",
    "EventOutcome",
    "EventPage",
    "EventQuery",
    "FieldError",
    "IngestLimits",
    "InputError",
    "Ledger",
    "MalformedJSON",
    "MeterlineError",
    "PreparedEvent",
    "QueueFull",
    "ScopeError",
    "StoreError",
    "UnsupportedContentType",
    "__version__",
    "open_ledger",
    "prepare_event",
]

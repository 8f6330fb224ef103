"""meterline: an open-source monetization engine for AI products.

The public API is re-exported here; ``__all__`` is the contract (tested).
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from meterline.lazy import lazy_exports

_HOMES = {
    "AuthError": "meterline.errors",
    "BatchOutcome": "meterline.core.outcomes",
    "BatchTooLarge": "meterline.errors",
    "Billing": "meterline.billing",
    "Books": "meterline.finance",
    "ChainReport": "meterline.core.chain",
    "Client": "meterline.sdk",
    "CreditBook": "meterline.core.credits",
    "EventOutcome": "meterline.core.outcomes",
    "EventPage": "meterline.ledger",
    "EventQuery": "meterline.ledger",
    "FieldError": "meterline.core.events",
    "Figures": "meterline.live",
    "Gate": "meterline.sdk",
    "IngestLimits": "meterline.core.limits",
    "InputError": "meterline.errors",
    "Ledger": "meterline.ledger",
    "LiveEngine": "meterline.live",
    "MalformedJSON": "meterline.errors",
    "MeterlineError": "meterline.errors",
    "PreparedEvent": "meterline.core.events",
    "QueueFull": "meterline.sdk",
    "ScopeError": "meterline.errors",
    "StoreError": "meterline.errors",
    "UnsupportedContentType": "meterline.errors",
    "one_truth": "meterline.finance",
    "open_billing": "meterline.billing",
    "open_ledger": "meterline.ledger",
    "parse_configuration": "meterline.config",
    "prepare_event": "meterline.core.events",
    "verify_signature": "meterline.sdk",
}
"""Where each public name lives. Names are imported on first use (PEP 562), so a product
that imports only ``meterline.sdk`` never loads the ledger's stores (PostgreSQL, DuckDB)
or the server."""


__getattr__ = lazy_exports("meterline", _HOMES, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


if TYPE_CHECKING:
    from meterline.billing import Billing, open_billing
    from meterline.config import parse_configuration
    from meterline.core.chain import ChainReport
    from meterline.core.credits import CreditBook
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
    from meterline.finance import Books, one_truth
    from meterline.ledger import EventPage, EventQuery, Ledger, open_ledger
    from meterline.live import Figures, LiveEngine
    from meterline.sdk import Client, Gate, QueueFull, verify_signature

__all__ = [
    "AuthError",
    "BatchOutcome",
    "BatchTooLarge",
    "Billing",
    "Books",
    "ChainReport",
    "Client",
    "CreditBook",
    "EventOutcome",
    "EventPage",
    "EventQuery",
    "FieldError",
    "Figures",
    "Gate",
    "IngestLimits",
    "InputError",
    "Ledger",
    "LiveEngine",
    "MalformedJSON",
    "MeterlineError",
    "PreparedEvent",
    "QueueFull",
    "ScopeError",
    "StoreError",
    "UnsupportedContentType",
    "__version__",
    "one_truth",
    "open_billing",
    "open_ledger",
    "parse_configuration",
    "prepare_event",
    "verify_signature",
]

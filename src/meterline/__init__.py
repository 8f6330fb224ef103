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
    "ChainReport": "meterline.core.chain",
    "Client": "meterline.sdk",
    "EventOutcome": "meterline.core.outcomes",
    "EventPage": "meterline.ledger",
    "EventQuery": "meterline.ledger",
    "FieldError": "meterline.core.events",
    "IngestLimits": "meterline.core.limits",
    "InputError": "meterline.errors",
    "Ledger": "meterline.ledger",
    "MalformedJSON": "meterline.errors",
    "MeterlineError": "meterline.errors",
    "PreparedEvent": "meterline.core.events",
    "QueueFull": "meterline.sdk",
    "ScopeError": "meterline.errors",
    "StoreError": "meterline.errors",
    "UnsupportedContentType": "meterline.errors",
    "open_ledger": "meterline.ledger",
    "prepare_event": "meterline.core.events",
}
"""Where each public name lives. Names are imported on first use (PEP 562), so a product
that imports only ``meterline.sdk`` never loads the ledger's stores (PostgreSQL, DuckDB)
or the server."""


__getattr__ = lazy_exports("meterline", _HOMES, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


if TYPE_CHECKING:
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

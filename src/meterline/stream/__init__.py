"""Distributed ingest over NATS JetStream: API replicas publish, partition workers apply.

The API server validates a batch, publishes its events to one JetStream subject per
partition (``stream.publisher``) and answers once JetStream has stored them; workers
(``stream.worker``) pull each partition in order through a durable consumer, append to
the ledger and acknowledge only after the ledger commit. Redelivery is safe because the
ledger is idempotent on ``(customer, id)``. Access answers travel the other way through a
KV bucket mirrored by every API replica (``stream.access``).
"""

from typing import TYPE_CHECKING

from meterline.lazy import lazy_exports

__all__ = ["StreamSettings", "WorkerError", "WorkerService"]

_HOMES = {
    "StreamSettings": "meterline.stream.settings",
    "WorkerError": "meterline.stream.service",
    "WorkerService": "meterline.stream.service",
}
"""Where each public name lives; loaded on first use (PEP 562): importing the settings
does not load NATS."""

__getattr__ = lazy_exports("meterline.stream", _HOMES, globals())


if TYPE_CHECKING:
    from meterline.stream.service import WorkerError, WorkerService
    from meterline.stream.settings import StreamSettings

"""The exceptions of the JetStream transport.

``StreamUnavailable`` means JetStream did not confirm what was asked (a publish, an ack,
a connection): the API answers 503 and the client retries, which is safe because the
ledger is idempotent on ``(customer, id)``. ``BatchDecodeError`` means a message on a
meterline subject is not a batch this version of meterline can read.
``StreamLayoutError`` means the streams on NATS are not the ones this process was
configured for (another ``--streams``): retrying cannot help, the process stops.
``IngestLagging`` means the ingest lag bound refused a batch (429, nothing acknowledged).
"""

from __future__ import annotations

from meterline.errors import MeterlineError


class StreamUnavailable(MeterlineError):
    """JetStream did not confirm a publish, an ack or a connection in time."""

    code = "stream_unavailable"
    http_status = 503


class BatchDecodeError(MeterlineError):
    """A stream message is not a meterline batch this version can read."""

    code = "undecodable_batch"


class StreamLayoutError(MeterlineError):
    """The streams NATS holds for the namespace differ from the configured layout."""

    code = "stream_layout_mismatch"


class IngestLagging(MeterlineError):
    """A partition the batch touches lags past the ingest lag bound (``core.admission``):
    the batch is refused whole, nothing of it acknowledged; retry after ``retry_after_ms``."""

    code = "ingest_lagging"
    http_status = 429

    def __init__(
        self, message: str, partition: int, lag_ms: float, bound_ms: int, retry_after_ms: int
    ) -> None:
        super().__init__(message)
        self.partition = partition
        self.lag_ms = lag_ms
        self.bound_ms = bound_ms
        self.retry_after_ms = retry_after_ms

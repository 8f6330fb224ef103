"""The exceptions of the JetStream transport.

``StreamUnavailable`` means JetStream did not confirm what was asked (a publish, an ack,
a connection): the API answers 503 and the client retries, which is safe because the
ledger is idempotent on ``(customer, id)``. ``BatchDecodeError`` means a message on a
meterline subject is not a batch this version of meterline can read.
``StreamLayoutError`` means the streams on NATS are not the ones this process was
configured for (another ``--streams``): retrying cannot help, the process stops.
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

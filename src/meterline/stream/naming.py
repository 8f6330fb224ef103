"""One deployment's names on a NATS system: every process given the same namespace,
partition count and stream count agrees on the streams, subjects and buckets.

Namespace ``meterline`` (the default) gives stream ``METERLINE_EVENTS`` (with ``--streams
N`` above 1: ``METERLINE_EVENTS-0`` to ``METERLINE_EVENTS-<N-1>``, see
``stream.settings``), subjects ``meterline.events.<partition>`` and bucket
``meterline_access`` (and ``meterline_access_status``); another namespace lets several
ledgers (staging, a test, a benchmark) share one NATS system without seeing each other's
events. The partition count comes from the ledger; the stream count is checked against
the streams found on NATS (``stream.setup.check_stream_layout``).
"""

from __future__ import annotations

import re

from meterline.stream.settings import StreamSettings

DEFAULT_NAMESPACE = "meterline"
_NAMESPACE = re.compile(r"[a-z][a-z0-9_]{0,39}")


def stream_settings(
    url: str,
    partitions: int,
    namespace: str = DEFAULT_NAMESPACE,
    replicas: int = 1,
    streams: int = 1,
) -> StreamSettings:
    """The settings of ``namespace`` on the servers of ``url``; ValueError names the option."""
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            f"--namespace: {namespace!r} must be lowercase letters, digits and _ (at most 40),"
            " starting with a letter"
        )
    try:
        return StreamSettings.from_url(
            url,
            stream=f"{namespace.upper()}_EVENTS",
            subject_prefix=f"{namespace}.events",
            access_bucket=f"{namespace}_access",
            partitions=partitions,
            streams=streams,
            replicas=replicas,
        )
    except ValueError as error:
        if str(error).startswith("streams "):
            raise ValueError(f"--{error}") from None
        raise

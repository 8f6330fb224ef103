"""One deployment's names on a NATS system: every process given the same namespace and
partition count agrees on the stream, subjects and buckets.

Namespace ``meterline`` (the default) gives stream ``METERLINE_EVENTS``, subjects
``meterline.events.<partition>`` and bucket ``meterline_access`` (and
``meterline_access_status``); another namespace lets several ledgers (staging, a test, a
benchmark) share one NATS system without seeing each other's events.
"""

from __future__ import annotations

import re

from meterline.stream.settings import StreamSettings

DEFAULT_NAMESPACE = "meterline"
_NAMESPACE = re.compile(r"[a-z][a-z0-9_]{0,39}")


def stream_settings(
    url: str, partitions: int, namespace: str = DEFAULT_NAMESPACE, replicas: int = 1
) -> StreamSettings:
    """The settings of ``namespace`` on the servers of ``url``; ValueError names the option."""
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            f"--namespace: {namespace!r} must be lowercase letters, digits and _ (at most 40),"
            " starting with a letter"
        )
    return StreamSettings.from_url(
        url,
        stream=f"{namespace.upper()}_EVENTS",
        subject_prefix=f"{namespace}.events",
        access_bucket=f"{namespace}_access",
        partitions=partitions,
        replicas=replicas,
    )

"""Bulk files of events: a JSON array or newline-delimited JSON, ingested in batches.

Each batch is one atomic append; a file read again answers ``duplicate`` for every event
already in the ledger, so an interrupted load is resumed by running it again.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meterline.api.bodies import decode_json
from meterline.core.outcomes import STATUSES
from meterline.errors import MalformedJSON
from meterline.ledger.event_ledger import Ledger


@dataclass
class BulkTotals:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    problems: list[str] = field(default_factory=list)


def _documents(data: bytes) -> Iterator[Any]:
    if data.lstrip().startswith(b"["):
        yield from decode_json(data)
        return
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            try:
                yield decode_json(line)
            except MalformedJSON as error:
                raise MalformedJSON(f"line {number}: {error}", error.position) from None


def ingest_file(
    ledger: Ledger, path: Path, cloudevents: bool = False, batch_events: int = 1000
) -> BulkTotals:
    """Ingest every event in ``path`` (``-`` for stdin) in batches of ``batch_events``."""
    data = sys.stdin.buffer.read() if str(path) == "-" else Path(path).read_bytes()
    documents = list(_documents(data))
    run = ledger.ingest_cloudevents if cloudevents else ledger.ingest
    totals = BulkTotals()
    for start in range(0, len(documents), batch_events):
        outcome = run(documents[start : start + batch_events])
        for result in outcome.results:
            totals.counts[result.status] += 1
            if result.status in ("rejected", "conflict"):
                where = f"event {start + result.index}"
                reasons = "; ".join(f"{e.field}: {e.reason}" for e in result.errors or [])
                totals.problems.append(f"{where} ({result.id}): {result.status} {reasons}".strip())
    return totals

"""A writer process for the crash test: ingest numbered batches, print ACK after each.

Usage: python crash_writer.py DB FIRST_BATCH. Batch k holds events ``b{k}-{i}``; the
line ``ACK k`` is printed (and flushed) only after ``ingest`` returned, i.e. after the
batch was durably committed. It restarts one batch early, so an acknowledged batch is
always re-sent once (it must come back as duplicates).
"""

from __future__ import annotations

import sys

from meterline.ledger import open_ledger

BATCH_EVENTS = 200


def batch(number: int) -> list[dict[str, object]]:
    return [
        {
            "id": f"b{number}-{index}",
            "customer": f"customer-{index % 7}",
            "type": "llm.completion",
            "timestamp": "2026-11-01T10:00:00Z",
            "properties": {"batch": number, "input_tokens": index},
        }
        for index in range(BATCH_EVENTS)
    ]


def main(db: str, first: int) -> None:
    with open_ledger(db) as ledger:
        number = max(first - 1, 0)
        while True:
            outcome = ledger.ingest(batch(number))
            if outcome.rejected or outcome.conflict:
                print(f"BAD {number} {outcome.rejected} {outcome.conflict}", flush=True)
                return
            print(f"ACK {number} {outcome.accepted} {outcome.duplicate}", flush=True)
            number += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

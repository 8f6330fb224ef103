"""An event's standalone proof, read from the store: event -> batch root -> partition
tree -> signed checkpoint (``meterline.proofs`` verifies it with hashlib and the public
key only)."""

from __future__ import annotations

from typing import Any

from meterline.core.checkpoint_note import parse_note
from meterline.core.merkle import leaf_hash
from meterline.core.partitions import partition_of
from meterline.errors import StoreError
from meterline.proofs import EventProof, build_event_proof


def prove_event(store: Any, customer: str, event_id: str) -> EventProof:
    """The proof of event ``event_id`` of ``customer`` against the newest stored
    checkpoint that holds it; StoreError when there is no such event or no checkpoint
    holds it yet (checkpoints are made at most every second while heads move)."""
    partition = partition_of(customer, store.partitions)
    reader = store._reader()
    row = reader.execute(
        "SELECT sequence, body FROM events WHERE partition_number = ? AND customer = ?"
        " AND event_id = ?",
        (partition, customer, event_id),
    ).fetchone()
    if row is None:
        raise StoreError(f"no event {event_id!r} of customer {customer!r}")
    sequence, body = row[0], bytes(row[1])
    notes = store.checkpoint_notes()
    chosen = None
    for _, note in reversed(notes):
        checkpoint, _ = parse_note(note)
        if checkpoint.heads[partition].sequence >= sequence:
            chosen = (checkpoint, note)
            break
    if chosen is None:
        raise StoreError(
            f"no checkpoint holds event {event_id!r} yet: make one (`meterline checkpoints"
            " create`) or wait for the writer's next"
        )
    checkpoint, note = chosen
    count = checkpoint.heads[partition].batches
    batches = [batch for batch in store.batches([partition]) if batch.number <= count]
    partition_leaves = [leaf_hash(batch.leaf_bytes()) for batch in batches]
    held = next(b for b in batches if b.first_sequence <= sequence <= b.last_sequence)
    number, first, last = held.number, held.first_sequence, held.last_sequence
    leaves = [
        bytes(digest)
        for (digest,) in reader.execute(
            "SELECT hash FROM events WHERE partition_number = ? AND sequence >= ?"
            " AND sequence <= ? ORDER BY sequence",
            (partition, first, last),
        )
    ]
    return build_event_proof(
        event_body=body,
        partition=partition,
        sequence=sequence,
        batch_number=number,
        batch_first_sequence=first,
        batch_last_sequence=last,
        batch_leaf_hashes=leaves,
        partition_leaf_hashes=partition_leaves,
        checkpoint_note=note,
    )

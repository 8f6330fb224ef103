"""The demo's proof chapter: a signed checkpoint of every partition's head, and one
event's standalone proof, verified with hashlib and the public key only."""

from __future__ import annotations

import base64
from pathlib import Path

from rich.console import Console

from meterline.clock import Clock
from meterline.core.checkpoint_note import parse_note
from meterline.ledger.checkpoints import load_signer, make_checkpoint, write_key_file
from meterline.ledger.event_ledger import Ledger
from meterline.ledger.event_proofs import prove_event
from meterline.proofs import verify_event_proof


def demo_key_file(db: str | Path) -> Path:
    """The demo's checkpoint key (made once, mode 600): beside a SQLite ledger, or in the
    working directory for a PostgreSQL one. Never in the database."""
    if str(db).startswith(("postgresql://", "postgres://")):
        path = Path("meterline-demo.checkpoint-key")
    else:
        path = Path(f"{db}.checkpoint-key")
    if not path.exists():
        write_key_file(path)
    return path


def tell_proofs(ledger: Ledger, db: str | Path, console: Console, clock: Clock) -> None:
    """Sign a checkpoint now and prove the ledger's first event against it."""
    key_file = demo_key_file(db)
    signer = load_signer(key_file)
    assert signer is not None  # the file was just made or found
    make_checkpoint(ledger.store, signer, clock())
    notes = ledger.store.checkpoint_notes()
    checkpoint, _ = parse_note(notes[-1][1])
    records = ledger.store.records()
    try:
        first = next(records)
    finally:
        records.close()  # type: ignore[attr-defined]
    proof = prove_event(ledger.store, first.customer, first.id)
    verified = verify_event_proof(proof, signer.public_bytes, checkpoint.origin)
    key = base64.b64encode(signer.public_bytes).decode()
    console.print(
        f"Checkpoint {checkpoint.number} signs every partition's head ({checkpoint.events:,}"
        f" events, root {base64.b64encode(checkpoint.root).decode()[:16]}…) with Ed25519;"
        f" the key stays outside the database ({key_file}, public key {key[:12]}…)."
    )
    console.print(
        f"Event {first.id} of {first.customer} proven standalone: its leaf -> batch"
        f" {proof.batch_number}'s Merkle root -> partition {proof.partition}'s tree ->"
        f" checkpoint {verified.number}'s signature, with"
        f" {len(proof.batch_audit_path) + len(proof.partition_audit_path)} hashes. Try"
        f" [bold]meterline prove --db {db} --customer {first.customer} --id {first.id}"
        " --out proof.json[/bold] and [bold]meterline verify-proof proof.json"
        f" --public-key {key}[/bold]; keep [bold]meterline checkpoints export[/bold]'s"
        " notes elsewhere, and `verify --checkpoints` catches even the newest events"
        " removed with everything that named them."
    )

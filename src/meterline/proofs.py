"""Standalone verification of a ledger event against a signed checkpoint.

An auditor holding the ledger's Ed25519 public key and key name checks one event with
this module alone (it imports only ``meterline.core.merkle``, ``meterline.core.
checkpoint_note`` and, inside ``verify_signature``, ``cryptography``). The chain of links,
each an RFC 6962 inclusion proof (docs/proofs.md gives every byte layout):

1. the event's leaf ``leaf_hash(event bytes)`` is leaf ``sequence - first`` of its batch's
   tree (``last - first + 1`` leaves: a batch's events in a partition hold consecutive
   sequences) whose root is ``batch_root``;
2. the batch's leaf ``leaf_hash(batch_leaf_bytes(...))`` is leaf ``batch_number - 1`` of
   the partition's tree whose root and size (``batches``) the checkpoint's head names;
3. the head's leaf ``leaf_hash(head_leaf(head))`` is leaf ``partition`` of the checkpoint
   tree (one leaf per partition) whose root the note states;
4. the note's body is signed by the key.

Every size comes from signed data or from the batch leaf, never from the prover alone.
``verify_event_proof`` raises ``ProofError`` naming the first link that fails.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meterline.core.checkpoint_note import (
    Checkpoint,
    ed25519_key_hash,
    head_leaf,
    parse_note,
    signed_message,
)
from meterline.core.merkle import (
    INTEGER_MAX,
    batch_leaf_bytes,
    inclusion_proof,
    leaf_hash,
    root_of_leaves,
    verify_inclusion,
)

PROOF_FORMAT = "meterline-event-proof/1"
"""The ``format`` member of an event proof's JSON."""


class ProofError(ValueError):
    """A proof or a signed note that does not verify; the message names the failed link."""


def verify_signature(note_text: str, public_key: bytes, key_name: str) -> Checkpoint:
    """The checkpoint of ``note_text`` once a signature line of ``key_name`` (with the key
    hash of ``public_key``) verifies over the body; ProofError naming what failed."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        checkpoint, signatures = parse_note(note_text)
    except ValueError as error:
        raise ProofError(f"checkpoint note does not parse: {error}") from None
    try:
        key_hash = ed25519_key_hash(key_name, public_key)
        verifier = Ed25519PublicKey.from_public_bytes(public_key)
    except (ValueError, TypeError):
        raise ProofError("public key is not a 32-byte Ed25519 public key") from None
    candidates = [
        item for item in signatures if item.key_name == key_name and item.key_hash == key_hash
    ]
    if not candidates:
        raise ProofError(
            f"signature does not verify for key {key_name!r}: the note has no signature"
            f" line for that name with key hash {key_hash.hex()} (wrong key or key name)"
        )
    message = signed_message(checkpoint)
    for candidate in candidates:
        try:
            verifier.verify(candidate.signature, message)
        except InvalidSignature:
            continue
        return checkpoint
    raise ProofError(
        f"signature does not verify for key {key_name!r} over checkpoint {checkpoint.number}"
    )


@dataclass(frozen=True, slots=True)
class EventProof:
    """Everything needed to tie one event's bytes to a signed checkpoint."""

    event_body: bytes
    partition: int
    sequence: int
    batch_number: int
    batch_first_sequence: int
    batch_last_sequence: int
    batch_audit_path: tuple[bytes, ...]
    batch_root: bytes
    batch_leaf_index: int
    partition_audit_path: tuple[bytes, ...]
    checkpoint_audit_path: tuple[bytes, ...]
    checkpoint_note: str

    def to_json(self) -> str:
        """The proof as JSON: bytes as hex, paths as lists of hex, the note as text."""
        document = {
            "format": PROOF_FORMAT,
            "event_body": self.event_body.hex(),
            "partition": self.partition,
            "sequence": self.sequence,
            "batch_number": self.batch_number,
            "batch_first_sequence": self.batch_first_sequence,
            "batch_last_sequence": self.batch_last_sequence,
            "batch_audit_path": [item.hex() for item in self.batch_audit_path],
            "batch_root": self.batch_root.hex(),
            "batch_leaf_index": self.batch_leaf_index,
            "partition_audit_path": [item.hex() for item in self.partition_audit_path],
            "checkpoint_audit_path": [item.hex() for item in self.checkpoint_audit_path],
            "checkpoint_note": self.checkpoint_note,
        }
        return json.dumps(document, indent=2)

    @classmethod
    def from_json(cls, text: str) -> EventProof:
        """The proof ``to_json`` wrote, or ProofError naming the member that is wrong."""
        try:
            document = json.loads(text)
        except (ValueError, TypeError):
            raise ProofError("event proof is not JSON") from None
        if not isinstance(document, dict) or document.get("format") != PROOF_FORMAT:
            raise ProofError(f"event proof is not a JSON object of format {PROOF_FORMAT!r}")
        names = set(cls.__dataclass_fields__) | {"format"}
        unknown = sorted(set(document) - names)
        if unknown:
            raise ProofError(f"event proof has unknown member(s): {', '.join(unknown)}")

        def member(name: str) -> Any:
            if name not in document:
                raise ProofError(f"event proof lacks {name!r}")
            return document[name]

        def integer(name: str) -> int:
            value = member(name)
            if type(value) is not int or not 0 <= value <= INTEGER_MAX:
                raise ProofError(f"event proof member {name!r} is not an integer 0 to 2^63-1")
            return value

        def hex_bytes(name: str, value: object) -> bytes:
            try:
                if type(value) is not str:
                    raise ValueError
                return bytes.fromhex(value)
            except ValueError:
                raise ProofError(f"event proof member {name!r} is not hex") from None

        def path(name: str) -> tuple[bytes, ...]:
            value = member(name)
            if not isinstance(value, list):
                raise ProofError(f"event proof member {name!r} is not a list of hex hashes")
            return tuple(hex_bytes(name, item) for item in value)

        note = member("checkpoint_note")
        if type(note) is not str:
            raise ProofError("event proof member 'checkpoint_note' is not text")
        return cls(
            event_body=hex_bytes("event_body", member("event_body")),
            partition=integer("partition"),
            sequence=integer("sequence"),
            batch_number=integer("batch_number"),
            batch_first_sequence=integer("batch_first_sequence"),
            batch_last_sequence=integer("batch_last_sequence"),
            batch_audit_path=path("batch_audit_path"),
            batch_root=hex_bytes("batch_root", member("batch_root")),
            batch_leaf_index=integer("batch_leaf_index"),
            partition_audit_path=path("partition_audit_path"),
            checkpoint_audit_path=path("checkpoint_audit_path"),
            checkpoint_note=note,
        )


def verify_event_proof(proof: EventProof, public_key: bytes, key_name: str) -> Checkpoint:
    """The signed checkpoint ``proof`` ties its event to, once every link holds; else
    ProofError naming the first link (event to batch, batch to partition, partition to
    checkpoint, signature) that fails."""
    try:
        checkpoint, _ = parse_note(proof.checkpoint_note)
    except ValueError as error:
        raise ProofError(f"checkpoint note does not parse: {error}") from None
    number, partition, batch = checkpoint.number, proof.partition, proof.batch_number
    first, last = proof.batch_first_sequence, proof.batch_last_sequence
    if type(partition) is not int or not 0 <= partition < len(checkpoint.heads):
        raise ProofError(f"checkpoint {number} has no partition {partition!r}")
    in_batch = (
        type(proof.sequence) is int
        and type(first) is int
        and type(last) is int
        and 1 <= first <= proof.sequence <= last <= INTEGER_MAX
    )
    event_leaf = leaf_hash(proof.event_body) if type(proof.event_body) is bytes else b""
    if not in_batch or not verify_inclusion(
        event_leaf,
        proof.sequence - first if in_batch else -1,
        last - first + 1 if in_batch else 0,
        proof.batch_audit_path,
        proof.batch_root,
    ):
        raise ProofError(
            f"event (sequence {proof.sequence}) not in batch {batch} of partition {partition}"
        )
    head = checkpoint.heads[partition]
    batch_link = f"batch {batch} not in partition {partition}'s tree at checkpoint {number}"
    try:
        batch_leaf = leaf_hash(batch_leaf_bytes(partition, batch, first, last, proof.batch_root))
    except ValueError as error:
        raise ProofError(f"{batch_link}: {error}") from None
    if proof.batch_leaf_index != batch - 1:
        raise ProofError(f"{batch_link}: batch leaf index is not the batch number - 1")
    if not verify_inclusion(
        batch_leaf, batch - 1, head.batches, proof.partition_audit_path, head.tree_root
    ):
        raise ProofError(batch_link)
    if not verify_inclusion(
        leaf_hash(head_leaf(head)),
        partition,
        len(checkpoint.heads),
        proof.checkpoint_audit_path,
        checkpoint.root,
    ):
        raise ProofError(f"partition {partition}'s head not in checkpoint {number}'s root")
    return verify_signature(proof.checkpoint_note, public_key, key_name)


def build_event_proof(
    *,
    event_body: bytes,
    partition: int,
    sequence: int,
    batch_number: int,
    batch_first_sequence: int,
    batch_last_sequence: int,
    batch_leaf_hashes: Sequence[bytes],
    partition_leaf_hashes: Sequence[bytes],
    checkpoint_note: str,
) -> EventProof:
    """The proof for one event from what the ledger read (pure): the event's bytes, its
    batch's event leaf hashes (in sequence order), the partition's batch leaf hashes up to
    the checkpoint's batch count, and the signed note. ValueError names a piece that does
    not fit the others (so no proof is built that cannot verify)."""
    checkpoint, _ = parse_note(checkpoint_note)
    if not 0 <= partition < len(checkpoint.heads):
        raise ValueError(f"checkpoint {checkpoint.number} has no partition {partition}")
    head = checkpoint.heads[partition]
    if not batch_first_sequence <= sequence <= batch_last_sequence:
        raise ValueError(
            f"sequence {sequence} is outside batch {batch_number}"
            f" ({batch_first_sequence} to {batch_last_sequence})"
        )
    if len(batch_leaf_hashes) != batch_last_sequence - batch_first_sequence + 1:
        raise ValueError(
            f"batch {batch_number} has {len(batch_leaf_hashes)} leaf hashes for sequences"
            f" {batch_first_sequence} to {batch_last_sequence} (one per sequence expected)"
        )
    index = sequence - batch_first_sequence
    if batch_leaf_hashes[index] != leaf_hash(event_body):
        raise ValueError(f"batch {batch_number}'s leaf {index} is not the event's leaf hash")
    batch_root = root_of_leaves(batch_leaf_hashes)
    if len(partition_leaf_hashes) != head.batches:
        raise ValueError(
            f"partition {partition} has {head.batches} batches at checkpoint"
            f" {checkpoint.number}, given {len(partition_leaf_hashes)} batch leaf hashes"
        )
    if not 1 <= batch_number <= head.batches:
        raise ValueError(
            f"batch {batch_number} is not among partition {partition}'s {head.batches}"
            f" batches at checkpoint {checkpoint.number}"
        )
    batch_leaf = leaf_hash(
        batch_leaf_bytes(
            partition, batch_number, batch_first_sequence, batch_last_sequence, batch_root
        )
    )
    if partition_leaf_hashes[batch_number - 1] != batch_leaf:
        raise ValueError(f"partition {partition}'s batch leaf {batch_number} is not this batch's")
    if root_of_leaves(partition_leaf_hashes) != head.tree_root:
        raise ValueError(
            f"partition {partition}'s batch leaves do not give the tree root of checkpoint"
            f" {checkpoint.number}"
        )
    head_leaves = [leaf_hash(head_leaf(item)) for item in checkpoint.heads]
    return EventProof(
        event_body=event_body,
        partition=partition,
        sequence=sequence,
        batch_number=batch_number,
        batch_first_sequence=batch_first_sequence,
        batch_last_sequence=batch_last_sequence,
        batch_audit_path=tuple(inclusion_proof(batch_leaf_hashes, index)),
        batch_root=batch_root,
        batch_leaf_index=batch_number - 1,
        partition_audit_path=tuple(inclusion_proof(partition_leaf_hashes, batch_number - 1)),
        checkpoint_audit_path=tuple(inclusion_proof(head_leaves, partition)),
        checkpoint_note=checkpoint_note,
    )

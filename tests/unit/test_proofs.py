"""Event proofs over a synthetic partitioned ledger, signed with Ed25519."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from meterline.core.chain import GENESIS_HASH, chain_hash
from meterline.core.checkpoint_note import (
    Checkpoint,
    NoteSignature,
    PartitionHead,
    checkpoint_hash,
    ed25519_key_hash,
    format_note,
    note_body,
    signed_message,
)
from meterline.core.merkle import (
    EMPTY_ROOT,
    batch_leaf_bytes,
    consistency_proof,
    leaf_hash,
    root_of_leaves,
    verify_consistency,
)
from meterline.proofs import (
    EventProof,
    ProofError,
    build_event_proof,
    verify_event_proof,
    verify_signature,
)

KEY_NAME = "meterline.test/ledger-1"
PARTITIONS = 3
DOCS = Path(__file__).parents[2] / "docs" / "proofs.md"


@dataclass
class Batch:
    partition: int
    number: int
    first: int
    bodies: list[bytes]

    @property
    def last(self) -> int:
        return self.first + len(self.bodies) - 1

    @property
    def leaf_hashes(self) -> list[bytes]:
        return [leaf_hash(body) for body in self.bodies]

    @property
    def leaf(self) -> bytes:
        root = root_of_leaves(self.leaf_hashes)
        return leaf_hash(batch_leaf_bytes(self.partition, self.number, self.first, self.last, root))


@dataclass
class Ledger:
    """Batches appended one partition at a time; each partition numbers its own events."""

    batches: list[Batch] = field(default_factory=list)
    appended: int = 0

    def append(self, partition: int, count: int) -> Batch:
        mine = self.of(partition)
        number = 1 + len(mine)
        first = mine[-1].last + 1 if mine else 1
        bodies = [
            json.dumps({"sequence": first + offset, "customer": f"c{partition}"}).encode()
            for offset in range(count)
        ]
        batch = Batch(partition, number, first, bodies)
        self.batches.append(batch)
        self.appended += count
        return batch

    def of(self, partition: int) -> list[Batch]:
        return [batch for batch in self.batches if batch.partition == partition]

    def head(self, partition: int) -> PartitionHead:
        batches = self.of(partition)
        if not batches:
            return PartitionHead(partition, 0, 0, GENESIS_HASH, EMPTY_ROOT)
        digest = GENESIS_HASH
        for batch in batches:
            digest = chain_hash(
                digest,
                batch_leaf_bytes(
                    batch.partition,
                    batch.number,
                    batch.first,
                    batch.last,
                    root_of_leaves(batch.leaf_hashes),
                ),
            )
        tree_root = root_of_leaves([batch.leaf for batch in batches])
        return PartitionHead(partition, batches[-1].last, len(batches), digest, tree_root)

    def checkpoint(self, number: int, previous: bytes) -> Checkpoint:
        heads = tuple(self.head(partition) for partition in range(PARTITIONS))
        return Checkpoint("meterline/ledger-1", number, 1_700_000_000_000_000, previous, heads)


def sign(checkpoint: Checkpoint, key: Ed25519PrivateKey, name: str = KEY_NAME) -> str:
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = NoteSignature(
        name, ed25519_key_hash(name, public), key.sign(signed_message(checkpoint))
    )
    return format_note(note_body(checkpoint), [signature])


@pytest.fixture(scope="module")
def world() -> dict[str, Any]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ledger = Ledger()
    for partition, count in [(0, 3), (1, 1), (0, 5), (2, 2), (1, 4), (0, 1), (2, 7)]:
        ledger.append(partition, count)
    first = ledger.checkpoint(1, bytes(32))
    first_batches = {partition: len(ledger.of(partition)) for partition in range(PARTITIONS)}
    for partition, count in [(1, 2), (2, 1), (0, 6)]:
        ledger.append(partition, count)
    second = ledger.checkpoint(2, checkpoint_hash(first))
    return {
        "key": key,
        "public": public,
        "ledger": ledger,
        "first": first,
        "first_batches": first_batches,
        "second": second,
        "note": sign(second, key),
    }


def proof_of(world: dict[str, Any], batch: Batch, offset: int) -> EventProof:
    ledger: Ledger = world["ledger"]
    return build_event_proof(
        event_body=batch.bodies[offset],
        partition=batch.partition,
        sequence=batch.first + offset,
        batch_number=batch.number,
        batch_first_sequence=batch.first,
        batch_last_sequence=batch.last,
        batch_leaf_hashes=batch.leaf_hashes,
        partition_leaf_hashes=[item.leaf for item in ledger.of(batch.partition)],
        checkpoint_note=world["note"],
    )


def sample_proof(world: dict[str, Any]) -> EventProof:
    batch = world["ledger"].of(2)[1]  # partition 2, batch 2: 7 events
    return proof_of(world, batch, 4)


def test_every_event_proof_verifies(world: dict[str, Any]) -> None:
    """A proof for every event of every batch verifies and returns the signed checkpoint."""
    ledger: Ledger = world["ledger"]
    for batch in ledger.batches:
        for offset in range(len(batch.bodies)):
            proof = proof_of(world, batch, offset)
            checkpoint = verify_event_proof(proof, world["public"], KEY_NAME)
            assert checkpoint == world["second"]
    assert ledger.appended == world["second"].events == 32


def test_json_round_trip(world: dict[str, Any]) -> None:
    """to_json/from_json keep every member; the JSON holds hex and the note text."""
    proof = sample_proof(world)
    text = proof.to_json()
    assert EventProof.from_json(text) == proof
    document = json.loads(text)
    assert document["event_body"] == proof.event_body.hex()
    assert document["checkpoint_note"] == world["note"]


def test_from_json_names_the_bad_member(world: dict[str, Any]) -> None:
    """Malformed JSON proofs are refused naming what is wrong."""
    document = json.loads(sample_proof(world).to_json())
    for change, message in [
        ({"batch_root": "zz"}, "'batch_root' is not hex"),
        ({"sequence": -1}, "'sequence' is not an integer"),
        ({"sequence": True}, "'sequence' is not an integer"),
        ({"batch_audit_path": "ab"}, "'batch_audit_path' is not a list"),
        ({"extra": 1}, "unknown member"),
        ({"format": "other"}, "format"),
        ({"checkpoint_note": 5}, "'checkpoint_note' is not text"),
    ]:
        with pytest.raises(ProofError, match=message):
            EventProof.from_json(json.dumps({**document, **change}))
    del document["partition"]
    with pytest.raises(ProofError, match="lacks 'partition'"):
        EventProof.from_json(json.dumps(document))
    with pytest.raises(ProofError, match="not JSON"):
        EventProof.from_json("{")


def flip(data: bytes, position: int = 0) -> bytes:
    altered = bytearray(data)
    altered[position] ^= 1
    return bytes(altered)


def tamper_note_line(note: str, number: int, change: Any) -> str:
    lines = note.split("\n")
    lines[number - 1] = change(lines[number - 1])
    return "\n".join(lines)


def test_each_tamper_names_its_link(world: dict[str, Any]) -> None:
    """Each altered piece fails at the first link it breaks, named in the error."""
    proof = sample_proof(world)
    public, replace = world["public"], dataclasses.replace
    event_link = r"event \(sequence 7\) not in batch 2 of partition 2"
    batch_link = "batch 2 not in partition 2's tree at checkpoint 2"
    head_link = "partition 2's head not in checkpoint 2's root"
    path = list(proof.batch_audit_path)
    path[1] = flip(path[1])
    partition_path = list(proof.partition_audit_path)
    partition_path[0] = flip(partition_path[0])
    checkpoint_path = list(proof.checkpoint_audit_path)
    checkpoint_path[0] = flip(checkpoint_path[0])
    cases: list[tuple[EventProof, str]] = [
        (replace(proof, event_body=proof.event_body + b" "), event_link),
        (replace(proof, batch_audit_path=tuple(path)), event_link),
        (replace(proof, batch_root=flip(proof.batch_root)), event_link),
        (replace(proof, sequence=proof.sequence + 1), r"event \(sequence 8\) not in batch 2"),
        # a batch size of the same path shape passes the event link; the batch leaf binds it
        (replace(proof, batch_last_sequence=proof.batch_last_sequence + 1), batch_link),
        (replace(proof, batch_last_sequence=proof.batch_last_sequence + 9), event_link),
        (replace(proof, partition_audit_path=tuple(partition_path)), batch_link),
        (replace(proof, batch_number=1, batch_leaf_index=0), "batch 1 not in partition 2's"),
        (replace(proof, batch_leaf_index=0), f"{batch_link}: batch leaf index"),
        (replace(proof, checkpoint_audit_path=tuple(checkpoint_path)), head_link),
        (replace(proof, partition=7), "checkpoint 2 has no partition 7"),
    ]
    for tampered, message in cases:
        with pytest.raises(ProofError, match=message):
            verify_event_proof(tampered, public, KEY_NAME)


def test_note_tampers_name_the_note_or_the_signature(world: dict[str, Any]) -> None:
    """A changed head or root fails parsing (the root line is checked against the heads);
    a consistent forgery fails the batch link or the signature; a wrong key or a changed
    signature fails the signature."""
    proof, note, public = sample_proof(world), world["note"], world["public"]
    replace = dataclasses.replace

    def other_sequence(line: str) -> str:
        fields = line.split(" ")
        fields[3] = str(int(fields[3]) + 1)  # the batch count: the events line still adds up
        return " ".join(fields)

    changed_head = tamper_note_line(note, 9, other_sequence)
    with pytest.raises(ProofError, match="checkpoint note does not parse: line 3: root hash"):
        verify_event_proof(replace(proof, checkpoint_note=changed_head), public, KEY_NAME)
    changed_root = tamper_note_line(note, 3, lambda line: "A" + line[1:])
    with pytest.raises(ProofError, match="does not parse: line 3: root hash does not equal"):
        verify_event_proof(replace(proof, checkpoint_note=changed_root), public, KEY_NAME)

    # a forger recomputes the root over altered heads: the signature no longer verifies
    second: Checkpoint = world["second"]
    heads = list(second.heads)
    heads[0] = replace(heads[0], sequence=heads[0].sequence + 1)
    forged = replace(second, heads=tuple(heads))
    forged_note = note_body(forged) + note[note.index("\n\n") + 1 :]
    forged_proof = proof_of({**world, "note": forged_note}, world["ledger"].of(2)[1], 4)
    with pytest.raises(ProofError, match=f"signature does not verify for key '{KEY_NAME}'"):
        verify_event_proof(forged_proof, public, KEY_NAME)

    # a forged tree root for the event's own partition breaks the batch link first
    heads = list(second.heads)
    heads[2] = replace(heads[2], tree_root=flip(heads[2].tree_root))
    forged_tree = note_body(replace(second, heads=tuple(heads))) + note[note.index("\n\n") + 1 :]
    with pytest.raises(ProofError, match="batch 2 not in partition 2's tree at checkpoint 2"):
        verify_event_proof(replace(proof, checkpoint_note=forged_tree), public, KEY_NAME)

    signature_line = note.split("\n")[-2]
    encoded = signature_line.split(" ")[-1]
    altered = encoded[:20] + ("B" if encoded[20] != "B" else "C") + encoded[21:]
    bad_signature = note.replace(encoded, altered)
    with pytest.raises(ProofError, match="signature does not verify for key"):
        verify_event_proof(replace(proof, checkpoint_note=bad_signature), public, KEY_NAME)

    other_key = (
        Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    with pytest.raises(ProofError, match="no signature line for that name with key hash"):
        verify_event_proof(proof, other_key, KEY_NAME)
    with pytest.raises(ProofError, match="no signature line for that name"):
        verify_event_proof(proof, public, "another-name")
    with pytest.raises(ProofError, match="not a 32-byte Ed25519 public key"):
        verify_event_proof(proof, public[:31], KEY_NAME)


def test_signature_by_another_key_under_the_same_name_fails(world: dict[str, Any]) -> None:
    """A note signed by an impostor key with the right name and the real key's hash fails."""
    impostor = Ed25519PrivateKey.generate()
    second = world["second"]
    signature = NoteSignature(
        KEY_NAME,
        ed25519_key_hash(KEY_NAME, world["public"]),
        impostor.sign(signed_message(second)),
    )
    note = format_note(note_body(second), [signature])
    with pytest.raises(ProofError, match=r"signature does not verify for key .* over checkpoint 2"):
        verify_signature(note, world["public"], KEY_NAME)


def test_verify_signature_picks_the_named_key_among_several(world: dict[str, Any]) -> None:
    """A note co-signed by another key verifies for each key under its own name."""
    witness = Ed25519PrivateKey.generate()
    witness_public = witness.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    second = world["second"]
    witness_signature = NoteSignature(
        "witness", ed25519_key_hash("witness", witness_public), witness.sign(signed_message(second))
    )
    note = world["note"] + format_note(note_body(second), [witness_signature]).split("\n\n")[1]
    assert verify_signature(note, world["public"], KEY_NAME) == second
    assert verify_signature(note, witness_public, "witness") == second


def test_checkpoint_trees_extend_the_previous_checkpoints(world: dict[str, Any]) -> None:
    """Each partition's tree at checkpoint 2 is consistent with its tree at checkpoint 1,
    and checkpoint 2 names checkpoint 1's hash."""
    first, second, ledger = world["first"], world["second"], world["ledger"]
    assert second.previous_hash == checkpoint_hash(first)
    for partition in range(PARTITIONS):
        leaves = [batch.leaf for batch in ledger.of(partition)]
        old = world["first_batches"][partition]
        proof = consistency_proof(leaves, old)
        old_head, new_head = first.heads[partition], second.heads[partition]
        assert verify_consistency(
            old_head.batches, new_head.batches, old_head.tree_root, new_head.tree_root, proof
        )


def test_build_refuses_pieces_that_do_not_fit(world: dict[str, Any]) -> None:
    """The builder names the piece that disagrees instead of building a bad proof."""
    ledger: Ledger = world["ledger"]
    batch = ledger.of(2)[1]
    base: dict[str, Any] = {
        "event_body": batch.bodies[0],
        "partition": 2,
        "sequence": batch.first,
        "batch_number": batch.number,
        "batch_first_sequence": batch.first,
        "batch_last_sequence": batch.last,
        "batch_leaf_hashes": batch.leaf_hashes,
        "partition_leaf_hashes": [item.leaf for item in ledger.of(2)],
        "checkpoint_note": world["note"],
    }
    for change, message in [
        ({"event_body": b"other"}, "leaf 0 is not the event's leaf hash"),
        ({"batch_leaf_hashes": batch.leaf_hashes[:-1]}, "one per sequence expected"),
        ({"partition_leaf_hashes": [item.leaf for item in ledger.of(2)][:-1]}, "has 3 batches"),
        ({"batch_number": 1}, "batch leaf 1 is not this batch's"),
        ({"partition": 5}, "has no partition 5"),
        ({"sequence": batch.last + 1}, "outside batch 2"),
        ({"checkpoint_note": "x\n"}, "missing the blank line"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_event_proof(**{**base, **change})


def test_docs_snippet_verifies_a_proof(world: dict[str, Any]) -> None:
    """The copyable verifier in docs/proofs.md accepts a good proof and refuses a bad one."""
    source = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)[0]
    namespace: dict[str, Any] = {}
    exec(compile(source, str(DOCS), "exec"), namespace)
    proof = sample_proof(world)
    document = json.loads(proof.to_json())
    namespace["verify_proof"](document, world["public"], KEY_NAME)
    document["event_body"] = (proof.event_body + b" ").hex()
    with pytest.raises(ValueError, match="event not in batch"):
        namespace["verify_proof"](document, world["public"], KEY_NAME)
    good = json.loads(proof.to_json())
    with pytest.raises(ValueError):
        namespace["verify_proof"](
            good,
            Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            KEY_NAME,
        )


def test_proofs_module_imports_only_the_two_core_modules() -> None:
    """The auditor's module imports nothing else from meterline."""
    source = (Path(__file__).parents[2] / "src" / "meterline" / "proofs.py").read_text()
    imported = set(re.findall(r"^from (meterline[.\w]*) import", source, re.MULTILINE))
    assert imported == {"meterline.core.merkle", "meterline.core.checkpoint_note"}
    assert hashlib  # the verifier needs hashlib and cryptography only

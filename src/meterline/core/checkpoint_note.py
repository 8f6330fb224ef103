"""A ledger checkpoint's plain-text form: a signed note in the C2SP tlog-checkpoint shape (pure).

A checkpoint records every partition's head, an RFC 6962 root over the heads' leaves and
the previous checkpoint's hash. Its note body is, one line each, ending in ``\\n``::

    <origin>                      printable ASCII, no spaces, not empty
    <events>                      total events: the sum of the head sequences (decimal)
    <base64 root>                 root over leaf_hash(head_leaf(head)) for every head
    checkpoint <number>           1, 2, ...
    time <created_at_us>          UTC microseconds
    previous <base64 hash>        checkpoint_hash of checkpoint number - 1 (zeros for 1)
    partition <n> <sequence> <batches> <base64 chain hash> <base64 tree root>   per head

then a blank line and one or more signature lines ``— <key name> <base64(4-byte key hash
|| 64-byte signature)>`` (C2SP signed-note; the signature is over the body bytes; for
Ed25519 the key hash is the first 4 bytes of SHA-256(key name || "\\n" || 0x01 || public
key)). Signing happens outside the core.

Invariants: ``parse_note(format_note(note_body(c), signatures))`` gives back ``c`` and
the signatures; parsing is strict (decimal without leading zeros, canonical padded
base64, partitions 0..P-1 in order, the events and root lines equal to what the heads
give), so one checkpoint has exactly one body text and ``checkpoint_hash`` is well
defined. Each partition numbers its events 1, 2, ... without gaps, so the ledger's event
count is the sum of the partitions' last sequences.

The head leaf (a partition head's entry in the checkpoint tree) is fixed binary, 88 bytes:
partition, sequence, batches (8-byte big-endian each), then the chain hash and the tree
root (32 bytes each).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from meterline.core.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    INTEGER_BYTES,
    INTEGER_MAX,
    leaf_hash,
    root_of_leaves,
)

PARTITIONS_MAX = 1024
"""The most partition heads in a checkpoint (``core.partitions.PARTITIONS_MAX``)."""

NOTE_CHARACTERS_MAX = 1_000_000
"""The longest note text parsed (1024 partition lines fit in a fifth of it)."""

SIGNATURES_MAX = 100
"""The most signature lines a note may carry."""

KEY_HASH_SIZE = 4
"""Bytes of a signed-note key hash."""

SIGNATURE_SIZE = 64
"""Bytes of an Ed25519 signature."""

ED25519_ALGORITHM = b"\x01"
"""The signed-note signature type byte of Ed25519."""

SIGNATURE_PREFIX = "\u2014 "
"""What starts a signature line: an em dash and a space."""

HEAD_LEAF_SIZE = 3 * INTEGER_BYTES + 2 * HASH_SIZE
"""Bytes of a head leaf."""

EMPTY_CHAIN_HASH = bytes(HASH_SIZE)
"""The chain hash of a partition with no event (and the previous hash of checkpoint 1)."""

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_NAME = re.compile(r"[!-~]+")
_KEY_NAME = re.compile(r"[!-*,-~]+")


def _check_integer(name: str, value: object, lowest: int = 0) -> None:
    if type(value) is not int or not lowest <= value <= INTEGER_MAX:
        raise ValueError(f"{name} must be an integer from {lowest} to {INTEGER_MAX}, got {value!r}")


def _check_hash(name: str, value: object) -> None:
    if type(value) is not bytes or len(value) != HASH_SIZE:
        raise ValueError(f"{name} must be {HASH_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class PartitionHead:
    """One partition's state at a checkpoint."""

    partition: int
    sequence: int
    """The partition's last ledger sequence (0 when it holds no event)."""
    batches: int
    """Committed batches of the partition (the size of its batch tree)."""
    chain_hash: bytes
    """The partition's chain head (``EMPTY_CHAIN_HASH`` when empty)."""
    tree_root: bytes
    """RFC 6962 root over the partition's batch leaves (``EMPTY_ROOT`` when empty)."""

    def __post_init__(self) -> None:
        _check_integer("partition", self.partition)
        _check_integer("head sequence", self.sequence)
        _check_integer("head batches", self.batches)
        _check_hash("head chain hash", self.chain_hash)
        _check_hash("head tree root", self.tree_root)
        if (self.sequence == 0) != (self.batches == 0):
            raise ValueError(
                f"partition {self.partition}: a head has a sequence exactly when it has"
                f" batches (sequence {self.sequence}, batches {self.batches})"
            )
        if self.batches == 0 and (
            self.chain_hash != EMPTY_CHAIN_HASH or self.tree_root != EMPTY_ROOT
        ):
            raise ValueError(
                f"partition {self.partition}: an empty head has the zero chain hash and"
                " the empty tree root"
            )


def head_leaf(head: PartitionHead) -> bytes:
    """The head's leaf bytes (88): partition, sequence, batches as 8-byte big-endian
    integers, then the chain hash and the tree root."""
    integers = (head.partition, head.sequence, head.batches)
    fixed = b"".join(value.to_bytes(INTEGER_BYTES, "big") for value in integers)
    return fixed + head.chain_hash + head.tree_root


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Every partition's head of a ledger at one moment, chained to the checkpoint before."""

    origin: str
    number: int
    created_at_us: int
    previous_hash: bytes
    heads: tuple[PartitionHead, ...]

    def __post_init__(self) -> None:
        if type(self.origin) is not str or not _NAME.fullmatch(self.origin):
            raise ValueError(
                f"origin must be printable ASCII without spaces, not empty: {self.origin!r}"
            )
        _check_integer("checkpoint number", self.number, 1)
        _check_integer("checkpoint time", self.created_at_us)
        _check_hash("previous checkpoint hash", self.previous_hash)
        if self.number == 1 and self.previous_hash != EMPTY_CHAIN_HASH:
            raise ValueError("checkpoint 1 has no previous checkpoint: its hash must be zeros")
        if type(self.heads) is not tuple or not 1 <= len(self.heads) <= PARTITIONS_MAX:
            raise ValueError(f"a checkpoint holds a tuple of 1 to {PARTITIONS_MAX} heads")
        for position, head in enumerate(self.heads):
            if type(head) is not PartitionHead or head.partition != position:
                raise ValueError(f"head {position} must be partition {position}'s")

    @property
    def events(self) -> int:
        """Events in the ledger: the sum of the partitions' last sequences (each partition
        numbers its events 1, 2, ... without gaps)."""
        return sum(head.sequence for head in self.heads)

    @property
    def root(self) -> bytes:
        """RFC 6962 root over ``leaf_hash(head_leaf(head))`` of every head, in order."""
        return root_of_leaves([leaf_hash(head_leaf(head)) for head in self.heads])


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: the key's name, its 4-byte key hash and the 64-byte signature."""

    key_name: str
    key_hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if type(self.key_name) is not str or not _KEY_NAME.fullmatch(self.key_name):
            raise ValueError(
                f"key name must be printable ASCII without spaces or '+': {self.key_name!r}"
            )
        if type(self.key_hash) is not bytes or len(self.key_hash) != KEY_HASH_SIZE:
            raise ValueError(f"key hash must be {KEY_HASH_SIZE} bytes")
        if type(self.signature) is not bytes or len(self.signature) != SIGNATURE_SIZE:
            raise ValueError(f"signature must be {SIGNATURE_SIZE} bytes")


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def note_body(checkpoint: Checkpoint) -> str:
    """The note text before the signatures (what is signed), every line ending in ``\\n``."""
    lines = [
        checkpoint.origin,
        str(checkpoint.events),
        _base64(checkpoint.root),
        f"checkpoint {checkpoint.number}",
        f"time {checkpoint.created_at_us}",
        f"previous {_base64(checkpoint.previous_hash)}",
    ]
    lines += [
        f"partition {head.partition} {head.sequence} {head.batches}"
        f" {_base64(head.chain_hash)} {_base64(head.tree_root)}"
        for head in checkpoint.heads
    ]
    return "".join(line + "\n" for line in lines)


def signed_message(checkpoint: Checkpoint) -> bytes:
    """The bytes a signer signs: the note body (signed-note signs the body text)."""
    return note_body(checkpoint).encode("ascii")


def checkpoint_hash(checkpoint: Checkpoint) -> bytes:
    """SHA-256 of the note body: what the next checkpoint's ``previous`` line names."""
    return hashlib.sha256(signed_message(checkpoint)).digest()


def ed25519_key_hash(key_name: str, public_key_bytes: bytes) -> bytes:
    """The signed-note key hash of an Ed25519 key: the first 4 bytes of
    SHA-256(key name || "\\n" || 0x01 || 32-byte public key)."""
    if type(public_key_bytes) is not bytes or len(public_key_bytes) != HASH_SIZE:
        raise ValueError("an Ed25519 public key is 32 bytes")
    material = key_name.encode() + b"\n" + ED25519_ALGORITHM + public_key_bytes
    return hashlib.sha256(material).digest()[:KEY_HASH_SIZE]


def format_note(body: str, signatures: Sequence[NoteSignature]) -> str:
    """The signed note: ``body``, a blank line, then one line per signature."""
    if not body.endswith("\n") or "\n\n" in body:
        raise ValueError("a note body ends in one newline and holds no blank line")
    if not 1 <= len(signatures) <= SIGNATURES_MAX:
        raise ValueError(f"a note carries 1 to {SIGNATURES_MAX} signatures")
    lines = [
        f"{SIGNATURE_PREFIX}{item.key_name} {_base64(item.key_hash + item.signature)}\n"
        for item in signatures
    ]
    return body + "\n" + "".join(lines)


class _Lines:
    """The body's lines with their 1-based numbers, for errors that name them."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def fail(self, number: int, problem: str) -> ValueError:
        return ValueError(f"line {number}: {problem}")

    def integer(
        self, number: int, text: str, what: str, lowest: int = 0, highest: int = INTEGER_MAX
    ) -> int:
        if not _DECIMAL.fullmatch(text) or len(text) > 30:
            raise self.fail(number, f"{what} {text!r} is not a decimal without leading zeros")
        value = int(text)
        if not lowest <= value <= highest:
            raise self.fail(number, f"{what} {value} is outside {lowest} to {highest}")
        return value

    def hash(self, number: int, text: str, what: str) -> bytes:
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise self.fail(number, f"{what} is not base64") from None
        if len(value) != HASH_SIZE or _base64(value) != text:
            raise self.fail(number, f"{what} is not the padded base64 of {HASH_SIZE} bytes")
        return value

    def keyword(self, number: int, keyword: str, fields: int) -> list[str]:
        """The line's fields after ``keyword`` (exactly ``fields`` of them)."""
        if number > len(self.lines):
            raise self.fail(number, f"missing the {keyword!r} line")
        parts = self.lines[number - 1].split(" ")
        if parts[0] != keyword or len(parts) != fields + 1:
            raise self.fail(
                number, f"expected {keyword!r} and {fields} field(s), found {parts[0]!r}"
            )
        return parts[1:]


def _parse_signature(number: int, line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise ValueError(f"line {number}: a signature line starts with an em dash and a space")
    parts = line[len(SIGNATURE_PREFIX) :].split(" ")
    if len(parts) != 2 or not _KEY_NAME.fullmatch(parts[0]):
        raise ValueError(f"line {number}: expected '— <key name> <base64 signature>'")
    try:
        data = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"line {number}: signature is not base64") from None
    if len(data) != KEY_HASH_SIZE + SIGNATURE_SIZE or _base64(data) != parts[1]:
        raise ValueError(
            f"line {number}: signature is not the padded base64 of a"
            f" {KEY_HASH_SIZE}-byte key hash and a {SIGNATURE_SIZE}-byte signature"
        )
    return NoteSignature(parts[0], data[:KEY_HASH_SIZE], data[KEY_HASH_SIZE:])


def _parse_body(lines: list[str]) -> Checkpoint:
    body = _Lines(lines)
    if len(lines) < 7:
        raise ValueError(
            f"line {len(lines) + 1}: a checkpoint body has at least 7 lines (origin, events,"
            " root, checkpoint, time, previous, a partition), found"
            f" {len(lines)}"
        )
    origin = lines[0]
    if not _NAME.fullmatch(origin):
        raise body.fail(1, "origin must be printable ASCII without spaces, not empty")
    events = body.integer(2, lines[1], "events", highest=INTEGER_MAX * PARTITIONS_MAX)
    root = body.hash(3, lines[2], "root hash")
    number = body.integer(4, body.keyword(4, "checkpoint", 1)[0], "checkpoint number", 1)
    created_at_us = body.integer(5, body.keyword(5, "time", 1)[0], "time")
    previous_hash = body.hash(6, body.keyword(6, "previous", 1)[0], "previous hash")
    if number == 1 and previous_hash != EMPTY_CHAIN_HASH:
        raise body.fail(6, "checkpoint 1 has no previous checkpoint: its hash must be zeros")
    if len(lines) - 6 > PARTITIONS_MAX:
        raise body.fail(7 + PARTITIONS_MAX, f"more than {PARTITIONS_MAX} partition lines")
    heads: list[PartitionHead] = []
    for number_of_line in range(7, len(lines) + 1):
        fields = body.keyword(number_of_line, "partition", 5)
        partition = body.integer(number_of_line, fields[0], "partition")
        if partition != len(heads):
            raise body.fail(
                number_of_line, f"expected partition {len(heads)}, found partition {partition}"
            )
        try:
            head = PartitionHead(
                partition,
                body.integer(number_of_line, fields[1], "sequence"),
                body.integer(number_of_line, fields[2], "batches"),
                body.hash(number_of_line, fields[3], "chain hash"),
                body.hash(number_of_line, fields[4], "tree root"),
            )
        except ValueError as error:
            if str(error).startswith("line "):
                raise
            raise body.fail(number_of_line, str(error)) from None
        heads.append(head)
    checkpoint = Checkpoint(origin, number, created_at_us, previous_hash, tuple(heads))
    if checkpoint.events != events:
        raise body.fail(
            2,
            f"events {events} is not the sum of the partitions' last sequences {checkpoint.events}",
        )
    if checkpoint.root != root:
        raise body.fail(3, "root hash does not equal the root over the partition lines")
    return checkpoint


def parse_note(text: str) -> tuple[Checkpoint, list[NoteSignature]]:
    """The checkpoint and signatures of a note, or ValueError naming the line and what is
    wrong (signatures are parsed, not verified: that needs the keys)."""
    if type(text) is not str:
        raise ValueError("a note is text")
    if len(text) > NOTE_CHARACTERS_MAX:
        raise ValueError(f"a note holds at most {NOTE_CHARACTERS_MAX} characters")
    if not text.endswith("\n"):
        raise ValueError("a note ends with a newline")
    lines = text[:-1].split("\n")
    for number, line in enumerate(lines, start=1):
        if line.startswith(SIGNATURE_PREFIX):
            line = line[len(SIGNATURE_PREFIX) :]
        if any(not " " <= character <= "~" for character in line):
            raise ValueError(f"line {number}: holds a character other than printable ASCII")
    if "" not in lines:
        raise ValueError(
            f"line {len(lines) + 1}: missing the blank line between the body and the signatures"
        )
    blank = lines.index("")
    if blank == 0:
        raise ValueError("line 1: origin is empty (a note opens with its origin line)")
    signature_lines = lines[blank + 1 :]
    if not signature_lines:
        raise ValueError(f"line {blank + 2}: a note carries at least one signature line")
    if len(signature_lines) > SIGNATURES_MAX:
        raise ValueError(f"line {blank + 2}: a note carries at most {SIGNATURES_MAX} signatures")
    checkpoint = _parse_body(lines[:blank])
    signatures = [
        _parse_signature(number, line)
        for number, line in enumerate(signature_lines, start=blank + 2)
    ]
    return checkpoint, signatures

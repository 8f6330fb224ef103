"""Signed checkpoints of the ledger: made, stored, exported and checked.

A checkpoint (``core.checkpoint_note``) records every partition's head, the Merkle root
over them and the previous checkpoint's hash, signed with Ed25519. The signing key never
enters the database: it comes from ``METERLINE_CHECKPOINT_KEY`` (the base64 of a 32-byte
Ed25519 seed) or the file ``METERLINE_CHECKPOINT_KEY_FILE`` names (the same base64, or a
PEM private key). Writers make one at most every ``CHECKPOINT_INTERVAL_S`` when a head
moved (``Checkpointer``); ``meterline checkpoints export`` writes them as signed notes,
one after another, to anchor outside the database. ``verify`` checks the ledger against
every stored checkpoint and any exported file: deleting the newest events together with
their batch records and head goes unnoticed by the chain alone, but not by a checkpoint
that recorded them.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meterline.core.chain import GENESIS_HASH
from meterline.core.checkpoint_note import (
    Checkpoint,
    NoteSignature,
    PartitionHead,
    checkpoint_hash,
    ed25519_key_hash,
    format_note,
    note_body,
    parse_note,
)
from meterline.core.findings import Finding
from meterline.errors import MeterlineError

KEY_ENVIRONMENT = "METERLINE_CHECKPOINT_KEY"
KEY_FILE_ENVIRONMENT = "METERLINE_CHECKPOINT_KEY_FILE"
PUBLIC_KEY_ENVIRONMENT = "METERLINE_CHECKPOINT_PUBLIC_KEY"
CHECKPOINT_INTERVAL_S = 1.0
"""The most often a writer makes a checkpoint (only when a partition head moved)."""
SEED_BYTES = 32

_log = logging.getLogger("meterline.checkpoints")


class CheckpointKeyError(MeterlineError, ValueError):
    """The checkpoint key cannot be read."""

    code = "invalid_checkpoint_key"
    http_status = 500


def _decode_seed(text: str, where: str) -> bytes:
    try:
        seed = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointKeyError(f"{where}: not base64 (expected a 32-byte Ed25519 seed)") from None
    if len(seed) != SEED_BYTES:
        raise CheckpointKeyError(f"{where}: {len(seed)} bytes, expected a 32-byte Ed25519 seed")
    return seed


@dataclass(frozen=True)
class Signer:
    """An Ed25519 key signing checkpoints."""

    private_key: Any

    @property
    def public_bytes(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return bytes(self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, message: bytes) -> bytes:
        return bytes(self.private_key.sign(message))


def signer_from_seed(seed: bytes) -> Signer:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Signer(Ed25519PrivateKey.from_private_bytes(seed))


def load_signer(
    key_file: str | Path | None = None, environment: Mapping[str, str] | None = None
) -> Signer | None:
    """The checkpoint key from ``key_file``, else the environment (None when none is
    configured); CheckpointKeyError names what is wrong with a configured one."""
    env = os.environ if environment is None else environment
    if key_file is None and env.get(KEY_ENVIRONMENT):
        return signer_from_seed(_decode_seed(env[KEY_ENVIRONMENT], KEY_ENVIRONMENT))
    path = key_file or env.get(KEY_FILE_ENVIRONMENT)
    if not path:
        return None
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise CheckpointKeyError(f"{path}: cannot read the checkpoint key ({error})") from None
    if "PRIVATE KEY" in text:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise CheckpointKeyError(f"{path}: not an Ed25519 private key")
        return Signer(key)
    return signer_from_seed(_decode_seed(text, str(path)))


def write_key_file(path: str | Path) -> bytes:
    """Create a new checkpoint key at ``path`` (readable by its owner only; refuses to
    overwrite) and return its public key."""
    seed = secrets.token_bytes(SEED_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(base64.b64encode(seed).decode() + "\n")
    return signer_from_seed(seed).public_bytes


def load_public_key(
    value: str | None = None, environment: Mapping[str, str] | None = None
) -> bytes | None:
    """The public key to check signatures with: ``value`` (base64, or a file holding it),
    else ``METERLINE_CHECKPOINT_PUBLIC_KEY``, else the configured private key's."""
    env = os.environ if environment is None else environment
    text = value or env.get(PUBLIC_KEY_ENVIRONMENT)
    if text:
        if Path(text).is_file():
            text = Path(text).read_text()
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise CheckpointKeyError("public key: not base64") from None
        if len(key) != SEED_BYTES:
            raise CheckpointKeyError(f"public key: {len(key)} bytes, expected 32")
        return key
    signer = load_signer(environment=env)
    return None if signer is None else signer.public_bytes


def origin_of(store: Any) -> str:
    """The ledger's name in its checkpoints: ``meterline/<ledger id>`` (the id is made
    once, when the first checkpoint is)."""
    connection = store._connection
    with store._write_lock:
        connection.execute(
            "INSERT OR IGNORE INTO meta VALUES ('ledger_id', ?)", (secrets.token_hex(8),)
        )
        row = connection.execute("SELECT value FROM meta WHERE name = 'ledger_id'").fetchone()
    return f"meterline/{row[0]}"


def current_heads(store: Any) -> tuple[PartitionHead, ...]:
    heads = store.partition_heads()
    from meterline.core.chain import HeadState

    return tuple(
        heads.get(partition, HeadState()).partition_head(partition)
        for partition in range(store.partitions)
    )


def make_checkpoint(store: Any, signer: Signer, now_us: int) -> Checkpoint | None:
    """Record a signed checkpoint of the store's heads now; None when no head moved since
    the last one (or another process stored the same number first)."""
    origin = origin_of(store)
    heads = current_heads(store)
    last_number = _last_number(store)
    stored = store.checkpoint_notes(last_number - 1) if last_number else []
    number, previous_hash = 1, GENESIS_HASH
    if stored:
        last, _ = parse_note(stored[-1][1])
        if last.heads == heads:
            return None
        number, previous_hash = last.number + 1, checkpoint_hash(last)
    checkpoint = Checkpoint(origin, number, now_us, previous_hash, heads)
    body = note_body(checkpoint)
    signature = NoteSignature(
        origin, ed25519_key_hash(origin, signer.public_bytes), signer.sign(body.encode())
    )
    note = format_note(body, [signature])
    if not store.add_checkpoint(number, now_us, note, checkpoint_hash(checkpoint)):
        return None
    return checkpoint


def _last_number(store: Any) -> int:
    row = store._reader().execute("SELECT max(checkpoint_number) FROM checkpoints").fetchone()
    return int(row[0] or 0)


def export_notes(store: Any, after_number: int = 0) -> str:
    """Every stored checkpoint past ``after_number`` as signed notes, each followed by an
    empty line (``split_notes`` reads them back)."""
    return "".join(note + "\n" for _, note in store.checkpoint_notes(after_number))


def split_notes(text: str) -> list[str]:
    """The signed notes of an export (each: body, empty line, signature lines)."""
    notes: list[str] = []
    lines: list[str] = []
    signing = False
    for line in text.splitlines(keepends=True):
        if signing and line.strip() == "":
            notes.append("".join(lines))
            lines, signing = [], False
            continue
        if not lines and line.strip() == "":
            continue
        if not signing and line == "\n":
            signing = True
        lines.append(line)
    if lines:
        notes.append("".join(lines))
    return notes


def check_notes(
    notes: Iterable[tuple[str, str]], public_key: bytes | None, origin: str | None
) -> tuple[list[tuple[str, tuple[PartitionHead, ...]]], list[Finding]]:
    """Each note (label, text) parsed: the heads to verify the ledger against, and a
    finding per note that does not parse, names another ledger, is not signed by
    ``public_key`` (when given) or does not chain from the checkpoint before it."""
    from meterline.proofs import ProofError, verify_signature

    heads: list[tuple[str, tuple[PartitionHead, ...]]] = []
    findings: list[Finding] = []
    previous: Checkpoint | None = None
    for label, text in notes:
        try:
            checkpoint, _ = parse_note(text)
            if public_key is not None:
                verify_signature(text, public_key, checkpoint.origin)
        except (ValueError, ProofError) as error:
            findings.append(Finding("checkpoint", f"{label}: {error}"))
            continue
        name = f"{label} (checkpoint {checkpoint.number})"
        if origin is not None and checkpoint.origin != origin:
            findings.append(
                Finding("checkpoint", f"{name} is of ledger {checkpoint.origin}, not {origin}")
            )
            continue
        if (
            previous is not None
            and checkpoint.number == previous.number + 1
            and checkpoint.previous_hash != checkpoint_hash(previous)
        ):
            findings.append(
                Finding("checkpoint", f"{name} does not chain from checkpoint {previous.number}")
            )
        previous = checkpoint
        heads.append((name, checkpoint.heads))
    return heads, findings


class Checkpointer(threading.Thread):
    """Makes a checkpoint at most every ``interval_s`` while the heads move."""

    def __init__(
        self,
        store: Any,
        signer: Signer,
        clock: Callable[[], int],
        interval_s: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        super().__init__(name="meterline-checkpoints", daemon=True)
        self._store = store
        self._signer = signer
        self._clock = clock
        self._interval_s = interval_s
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            try:
                make_checkpoint(self._store, self._signer, self._clock())
            except Exception:  # a failed checkpoint is retried next interval
                _log.exception("checkpoint failed")

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)


def start_checkpointer(store: Any, clock: Callable[[], int]) -> Checkpointer | None:
    """A running Checkpointer over ``store`` when a checkpoint key is configured (None,
    and a log line saying so, when none is)."""
    signer = load_signer()
    if signer is None:
        _log.info(
            "no checkpoint key (%s or %s): no checkpoints", KEY_ENVIRONMENT, KEY_FILE_ENVIRONMENT
        )
        return None
    checkpointer = Checkpointer(store, signer, clock)
    checkpointer.start()
    return checkpointer

"""The checkpoint note: format, strict parsing, hashes and key hashes (pure core)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core import checkpoint_note, partitions
from meterline.core.checkpoint_note import (
    Checkpoint,
    NoteSignature,
    PartitionHead,
    checkpoint_hash,
    ed25519_key_hash,
    format_note,
    head_leaf,
    note_body,
    parse_note,
    signed_message,
)
from meterline.core.merkle import EMPTY_ROOT, leaf_hash, root_of_leaves

EMPTY = PartitionHead(0, 0, 0, bytes(32), EMPTY_ROOT)
SIGNATURE = NoteSignature("meterline-test", b"\x01\x02\x03\x04", bytes(range(64)))


def head(partition: int, sequence: int = 0, batches: int = 0) -> PartitionHead:
    if sequence == 0:
        return PartitionHead(partition, 0, 0, bytes(32), EMPTY_ROOT)
    chain = hashlib.sha256(f"chain {partition}".encode()).digest()
    tree = hashlib.sha256(f"tree {partition}".encode()).digest()
    return PartitionHead(partition, sequence, batches, chain, tree)


def sample(number: int = 2) -> Checkpoint:
    previous = bytes(32) if number == 1 else hashlib.sha256(b"checkpoint 1").digest()
    heads = (head(0, 9, 3), head(1), head(2, 11, 4))
    return Checkpoint("meterline/ledger-7", number, 1_700_000_000_000_000, previous, heads)


def note_text(checkpoint: Checkpoint | None = None) -> str:
    return format_note(note_body(checkpoint or sample()), [SIGNATURE])


def replace_line(text: str, number: int, line: str) -> str:
    lines = text.split("\n")
    lines[number - 1] = line
    return "\n".join(lines)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_body_layout() -> None:
    """The body is origin, events, root, then the extension lines, each ending in \\n."""
    checkpoint = sample()
    body = note_body(checkpoint)
    lines = body.split("\n")
    assert lines[:6] == [
        "meterline/ledger-7",
        "20",
        b64(checkpoint.root),
        "checkpoint 2",
        "time 1700000000000000",
        f"previous {b64(checkpoint.previous_hash)}",
    ]
    assert lines[7] == f"partition 1 0 0 {b64(bytes(32))} {b64(EMPTY_ROOT)}"
    assert len(lines) == 10 and lines[-1] == "" and body.endswith("\n")
    assert signed_message(checkpoint) == body.encode()
    assert checkpoint_hash(checkpoint) == hashlib.sha256(body.encode()).digest()


def test_events_are_the_sum_of_head_sequences_and_root_is_over_head_leaves() -> None:
    """Sequences are dense across partitions, so events is the largest head sequence; the
    root is RFC 6962 over the heads' leaves."""
    checkpoint = sample()
    assert checkpoint.events == 9 + 11
    assert checkpoint.root == root_of_leaves([leaf_hash(head_leaf(h)) for h in checkpoint.heads])


def test_head_leaf_layout() -> None:
    """A head leaf is partition, sequence, batches (8-byte big-endian) then both hashes."""
    value = head(2, 11, 4)
    expected = b"".join(n.to_bytes(8, "big") for n in (2, 11, 4))
    assert head_leaf(value) == expected + value.chain_hash + value.tree_root
    assert len(head_leaf(value)) == 88


def test_round_trip() -> None:
    """format_note then parse_note gives back the checkpoint and its signatures."""
    text = note_text()
    assert text.endswith(f"\n\n— meterline-test {b64(SIGNATURE.key_hash + SIGNATURE.signature)}\n")
    checkpoint, signatures = parse_note(text)
    assert checkpoint == sample() and signatures == [SIGNATURE]
    first, _ = parse_note(note_text(sample(1)))
    assert first == sample(1)


def test_ed25519_key_hash_follows_signed_note() -> None:
    """The key hash is SHA-256(name || \\n || 0x01 || key)[:4]."""
    key = bytes(range(32))
    expected = hashlib.sha256(b"name\n\x01" + key).digest()[:4]
    assert ed25519_key_hash("name", key) == expected
    with pytest.raises(ValueError, match="32 bytes"):
        ed25519_key_hash("name", key[:31])


def test_constants_agree_with_the_partitions_module() -> None:
    """The note's partition limit is the ledger's (kept here so the module stands alone)."""
    assert checkpoint_note.PARTITIONS_MAX == partitions.PARTITIONS_MAX


BAD_LINES = [
    (1, "", "line 1: origin"),
    (1, "meterline ledger", "line 1: origin"),
    (2, "011", "line 2: events '011' is not a decimal"),
    (2, "+11", "line 2: events"),
    (2, "12", "line 2: events 12 is not the sum of the partitions' last sequences 20"),
    (3, "not base64!", "line 3: root hash is not base64"),
    (3, b64(bytes(31)), "line 3: root hash is not the padded base64 of 32 bytes"),
    (3, b64(bytes(32)).rstrip("="), "line 3: root hash"),
    (3, b64(bytes(32)), "line 3: root hash does not equal the root over the partition lines"),
    (4, "checkpoint", "line 4: expected 'checkpoint' and 1 field"),
    (4, "checkpoint 0", "line 4: checkpoint number 0 is outside 1"),
    (4, "checkpoint  2", "line 4: expected 'checkpoint'"),
    (4, "time 2", "line 4: expected 'checkpoint'"),
    (5, "time -1", "line 5: time '-1' is not a decimal"),
    (5, f"time {2**63}", "line 5: time 9223372036854775808 is outside"),
    (6, "previous xyz", "line 6: previous hash"),
    (7, "partition 1 9 3 x y", "line 7: expected partition 0, found partition 1"),
    (7, "partition 0 9 3", "line 7: expected 'partition' and 5 field"),
    (8, f"partition 1 0 1 {b64(bytes(32))} {b64(EMPTY_ROOT)}", "line 8: partition 1: a head"),
    (8, f"partition 1 0 0 {b64(bytes(32))} {b64(bytes(32))}", "line 8: partition 1: an empty"),
    (9, "partition 2 11 4 AAAA AAAA", "line 9: chain hash is not the padded base64"),
    (9, "checkpoint 3", "line 9: expected 'partition'"),
    (9, "partitión 2", "line 9: holds a character other than printable ASCII"),
    (9, "partition\t2", "line 9: holds a character"),
]


@pytest.mark.parametrize(("number", "line", "message"), BAD_LINES)
def test_every_bad_body_line_is_named(number: int, line: str, message: str) -> None:
    """Each malformed body line is refused with its line number and the problem."""
    with pytest.raises(ValueError, match=f"^{message}"):
        parse_note(replace_line(note_text(), number, line))


def test_partition_lines_in_order_and_complete() -> None:
    """Partitions must run 0..P-1: a repeated or skipped one names its line."""
    text = note_text()
    lines = text.split("\n")
    with pytest.raises(ValueError, match=r"^line 9: expected partition 2, found partition 1"):
        parse_note("\n".join([*lines[:8], lines[7], *lines[9:]]))
    with pytest.raises(ValueError, match=r"^line 7: a checkpoint body has at least 7 lines"):
        parse_note("\n".join([*lines[:6], *lines[9:]]))


def test_first_checkpoint_previous_is_zeros() -> None:
    """Checkpoint 1 names no previous checkpoint."""
    text = replace_line(note_text(), 4, "checkpoint 1")
    with pytest.raises(ValueError, match=r"^line 6: checkpoint 1 has no previous checkpoint"):
        parse_note(text)


def test_signature_section_rejections_are_named() -> None:
    """Missing blank line, no signature, bad signature lines: each named by line."""
    body = note_body(sample())
    good = note_text()
    signature_line = good.split("\n")[-2]
    with pytest.raises(ValueError, match=r"^line 10: missing the blank line"):
        parse_note(body)
    with pytest.raises(ValueError, match=r"^line 11: a note carries at least one signature"):
        parse_note(body + "\n")
    with pytest.raises(ValueError, match=r"^a note ends with a newline"):
        parse_note(good[:-1])
    with pytest.raises(ValueError, match=r"^line 11: a signature line starts with an em dash"):
        parse_note(body + "\n- meterline-test AAAA\n")
    with pytest.raises(ValueError, match=r"^line 12: a signature line starts"):
        parse_note(good + "\n")
    with pytest.raises(ValueError, match=r"^line 11: expected '— <key name> <base64 signature>'"):
        parse_note(body + "\n— meterline-test\n")
    with pytest.raises(ValueError, match=r"^line 11: expected '— <key name>"):
        parse_note(body + "\n— meter+line AAAA\n")
    with pytest.raises(ValueError, match=r"^line 11: signature is not base64"):
        parse_note(body + "\n— meterline-test ***\n")
    with pytest.raises(
        ValueError, match=r"^line 11: signature is not the padded base64 of a 4-byte"
    ):
        parse_note(body + "\n— meterline-test " + b64(bytes(67)) + "\n")
    with pytest.raises(ValueError, match=r"^line 11: holds a character"):
        parse_note(body + "\n— key\u00a0name AAAA\n")
    assert parse_note(good + signature_line + "\n")[1] == [SIGNATURE, SIGNATURE]
    with pytest.raises(ValueError, match=r"^line 11: a note carries at most 100 signatures"):
        parse_note(good + (signature_line + "\n") * 100)
    with pytest.raises(ValueError, match=r"^a note holds at most"):
        parse_note("x" * 1_000_001)


def test_format_note_refuses_bad_input() -> None:
    """A body without its newline, or no signatures, is not formatted."""
    with pytest.raises(ValueError, match="ends in one newline"):
        format_note("origin", [SIGNATURE])
    with pytest.raises(ValueError, match="1 to 100 signatures"):
        format_note(note_body(sample()), [])


def test_dataclasses_refuse_bad_values() -> None:
    """Bad heads and checkpoints raise ValueError naming the field."""
    with pytest.raises(ValueError, match="head chain hash must be 32 bytes"):
        PartitionHead(0, 1, 1, b"short", EMPTY_ROOT)
    with pytest.raises(ValueError, match="partition must be an integer"):
        PartitionHead(-1, 0, 0, bytes(32), EMPTY_ROOT)
    with pytest.raises(ValueError, match="origin must be printable ASCII"):
        Checkpoint("has space", 1, 0, bytes(32), (EMPTY,))
    with pytest.raises(ValueError, match="checkpoint number must be an integer from 1"):
        Checkpoint("o", 0, 0, bytes(32), (EMPTY,))
    with pytest.raises(ValueError, match="head 1 must be partition 1's"):
        Checkpoint("o", 1, 0, bytes(32), (EMPTY, EMPTY))
    with pytest.raises(ValueError, match="1 to 1024 heads"):
        Checkpoint("o", 1, 0, bytes(32), ())
    with pytest.raises(ValueError, match="checkpoint 1 has no previous checkpoint"):
        Checkpoint("o", 1, 0, b"\x01" * 32, (EMPTY,))
    with pytest.raises(ValueError, match="key hash must be 4 bytes"):
        NoteSignature("k", b"123", bytes(64))
    with pytest.raises(ValueError, match="signature must be 64 bytes"):
        NoteSignature("k", b"1234", bytes(63))


hash_values = st.binary(min_size=32, max_size=32)


@st.composite
def checkpoints(draw: st.DrawFn) -> Checkpoint:
    count = draw(st.integers(1, 12))
    heads = []
    for partition in range(count):
        sequence = draw(st.integers(0, 2**63 - 1))
        if sequence == 0:
            heads.append(PartitionHead(partition, 0, 0, bytes(32), EMPTY_ROOT))
        else:
            batches = draw(st.integers(1, 2**63 - 1))
            heads.append(
                PartitionHead(partition, sequence, batches, draw(hash_values), draw(hash_values))
            )
    number = draw(st.integers(1, 2**63 - 1))
    previous = bytes(32) if number == 1 else draw(hash_values)
    origin = draw(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1))
    return Checkpoint(origin, number, draw(st.integers(0, 2**63 - 1)), previous, tuple(heads))


signatures = st.builds(
    NoteSignature,
    st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-./"), min_size=1),
    st.binary(min_size=4, max_size=4),
    st.binary(min_size=64, max_size=64),
)


@settings(max_examples=120, deadline=None)
@given(checkpoints(), st.lists(signatures, min_size=1, max_size=4))
def test_round_trip_over_random_checkpoints(
    checkpoint: Checkpoint, signature_list: list[NoteSignature]
) -> None:
    """Any valid checkpoint and signatures survive format then parse; the parsed
    checkpoint's body is byte-for-byte the signed one."""
    text = format_note(note_body(checkpoint), signature_list)
    parsed, parsed_signatures = parse_note(text)
    assert parsed == checkpoint and parsed_signatures == signature_list
    assert note_body(parsed) == text.split("\n\n")[0] + "\n"

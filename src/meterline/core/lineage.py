"""Merkle lineage for invoice lines, and the standalone proof verifier (pure).

This module owns the Merkle tree that ties each invoice usage line to the ledger events
that contributed to it. A line's lineage root is the RFC 6962 / RFC 9162 Merkle tree
hash (MTH) over the events' 32-byte ledger chain hashes, in ascending ledger sequence
order:

* leaf hash  = SHA-256(0x00 || event hash)
* node hash  = SHA-256(0x01 || left || right)
* MTH of an empty list is SHA-256(b""); MTH of one leaf is its leaf hash; MTH of n > 1
  leaves is node_hash(MTH(first k), MTH(rest)) with k the largest power of two below n.

Being the standard construction, any RFC 9162 implementation can check a root or an
inclusion (audit) path independently. ``MerkleBuilder`` computes the root streaming, in
O(log n) memory, on the invoice-close hot path; ``inclusion_path`` and
``verify_inclusion`` follow RFC 9162 sections 2.1.3.1 and 2.1.3.2.

``verify_proof`` checks a whole proof document (what the HTTP endpoint returns) from an
event's bytes up to the invoice's hash. It and its helpers use only the standard library
(``hashlib``, ``json``) and ``core.merkle`` (standard library only too), so an auditor can
copy the two modules out of the project.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from meterline.core import merkle

HASH_SIZE = 32
HEX_DIGITS = frozenset("0123456789abcdef")
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
FIRST_LINE_NUMBER = 1

_sha256 = hashlib.sha256


def leaf_hash(event_hash: bytes) -> bytes:
    """The RFC 6962 leaf hash of one event's ledger hash: SHA-256(0x00 || event hash)."""
    return _sha256(LEAF_PREFIX + event_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


class MerkleBuilder:
    """A streaming RFC 6962 Merkle tree hash: leaves added in order, O(log n) memory.

    The stack holds the roots of the complete subtrees built so far, largest first. Their
    sizes are the set bits of ``count`` (largest first), so they are not stored: adding a
    leaf merges it with one stacked subtree per trailing one bit of the old count, which
    is exactly merging equal-sized subtrees. ``root`` folds the stack right to left,
    which equals the MTH because RFC 6962 splits at the largest power of two.

    ``add`` does not check its argument's length; callers pass 32-byte ledger hashes.
    """

    __slots__ = ("_stack", "count")

    def __init__(self) -> None:
        self.count = 0
        self._stack: list[bytes] = []

    def add(
        self,
        event_hash: bytes,
        _sha256: Any = _sha256,
        _leaf_prefix: bytes = LEAF_PREFIX,
        _node_prefix: bytes = NODE_PREFIX,
    ) -> None:
        """Append the next leaf (the event's ledger hash, in ascending sequence order)."""
        # Hot path (millions of calls per invoice close): hashlib and the prefixes are
        # bound as defaults so each call does local lookups only.
        digest = _sha256(_leaf_prefix + event_hash).digest()
        stack = self._stack
        count = self.count
        self.count = count + 1
        while count & 1:
            digest = _sha256(_node_prefix + stack.pop() + digest).digest()
            count >>= 1
        stack.append(digest)

    def root(self) -> bytes:
        """The Merkle tree hash of the leaves so far; leaves may still be added after."""
        stack = self._stack
        if not stack:
            return EMPTY_ROOT
        result = stack[-1]
        for index in range(len(stack) - 2, -1, -1):
            result = node_hash(stack[index], result)
        return result


def merkle_root(event_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash over ``event_hashes`` (same value as ``MerkleBuilder``)."""
    builder = MerkleBuilder()
    add = builder.add
    for event_hash in event_hashes:
        add(event_hash)
    return builder.root()


def _split(size: int) -> int:
    """The largest power of two strictly below ``size`` (for ``size`` > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def inclusion_path(event_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The RFC 9162 (2.1.3.1) inclusion path of leaf ``index``, ordered leaf to root."""
    size = len(event_hashes)
    if not 0 <= index < size:
        raise IndexError(f"leaf index {index} is outside a tree of {size} leaves")
    siblings: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        split = start + _split(end - start)
        if index < split:
            siblings.append(merkle_root(event_hashes[split:end]))
            end = split
        else:
            siblings.append(merkle_root(event_hashes[start:split]))
            start = split
    siblings.reverse()
    return siblings


def verify_inclusion(
    event_hash: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``path`` proves ``event_hash`` is leaf ``index`` of a ``size``-leaf tree
    with Merkle tree hash ``root`` (the RFC 9162 section 2.1.3.2 algorithm, which
    ``core.merkle.verify_inclusion`` runs over the event's leaf hash)."""
    return merkle.verify_inclusion(leaf_hash(event_hash), index, size, tuple(path), root)


# -- the proof document verifier ------------------------------------------------------
# Each reader takes a container, a key and the key's dotted prefix in the document; it
# returns the parsed value, or None after appending a message naming the field. So a
# check is only ever skipped when a message already explains why: an empty result means
# every check ran and passed.


_MISSING = object()


def _value(container: Mapping[str, Any], key: str, prefix: str, problems: list[str]) -> Any:
    """``container[key]``, or ``_MISSING`` after a message when the key is absent."""
    if key not in container:
        problems.append(f"{prefix}{key}: missing")
        return _MISSING
    return container[key]


def _typed(
    container: Mapping[str, Any],
    key: str,
    prefix: str,
    problems: list[str],
    kind: type,
    what: str,
) -> Any:
    """``container[key]`` when it is a ``kind``, else None after a message (it must be
    ``what``, or it is missing)."""
    value = _value(container, key, prefix, problems)
    if value is _MISSING:
        return None
    if not isinstance(value, kind):
        problems.append(f"{prefix}{key}: must be {what}")
        return None
    return value


def _object(
    container: Mapping[str, Any], key: str, prefix: str, problems: list[str]
) -> Mapping[str, Any] | None:
    value = _typed(container, key, prefix, problems, Mapping, "an object")
    return cast("Mapping[str, Any] | None", value)


def _integer(
    container: Mapping[str, Any], key: str, prefix: str, problems: list[str], minimum: int = 0
) -> int | None:
    value = _value(container, key, prefix, problems)
    if value is _MISSING:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{prefix}{key}: must be an integer")
        return None
    if value < minimum:
        problems.append(f"{prefix}{key}: must be at least {minimum}, got {value}")
        return None
    return value


def _text(container: Mapping[str, Any], key: str, prefix: str, problems: list[str]) -> str | None:
    return cast("str | None", _typed(container, key, prefix, problems, str, "a string"))


def _parse_hash(value: Any, name: str, problems: list[str]) -> bytes | None:
    """A 32-byte hash from exactly 64 lowercase hex digits, or None with a message."""
    if (
        not isinstance(value, str)
        or len(value) != 2 * HASH_SIZE
        or not HEX_DIGITS.issuperset(value)
    ):
        problems.append(f"{name}: must be {2 * HASH_SIZE} lowercase hex digits")
        return None
    return bytes.fromhex(value)


def _hash(container: Mapping[str, Any], key: str, prefix: str, problems: list[str]) -> bytes | None:
    value = _value(container, key, prefix, problems)
    return None if value is _MISSING else _parse_hash(value, f"{prefix}{key}", problems)


def _hashes(
    container: Mapping[str, Any], key: str, prefix: str, problems: list[str]
) -> list[bytes] | None:
    value = _typed(container, key, prefix, problems, list, "a list of hashes")
    if value is None:
        return None
    result = []
    for position, item in enumerate(value):
        parsed = _parse_hash(item, f"{prefix}{key}[{position}]", problems)
        if parsed is None:
            return None
        result.append(parsed)
    return result


def _check_event(proof: Mapping[str, Any], problems: list[str]) -> tuple[int | None, bytes | None]:
    """Check the event's hash (its RFC 6962 leaf hash); return its sequence and hash (None
    where unusable)."""
    event = _object(proof, "event", "", problems)
    if event is None:
        return None, None
    sequence = _integer(event, "sequence", "event.", problems)
    body = _text(event, "body", "event.", problems)
    event_hash = _hash(event, "hash", "event.", problems)
    if (
        body is not None
        and event_hash is not None
        and _sha256(b"\x00" + body.encode("utf-8")).digest() != event_hash
    ):
        problems.append(
            "event.hash: does not equal SHA-256(0x00 || event.body); the event's body was altered"
        )
    return sequence, event_hash


def _check_inclusion(
    proof: Mapping[str, Any], event_hash: bytes | None, problems: list[str]
) -> tuple[int | None, bytes | None]:
    """Check the audit path up to ``line_root``; return the tree size and root."""
    leaf_index = _integer(proof, "leaf_index", "", problems)
    tree_size = _integer(proof, "tree_size", "", problems, minimum=1)
    path = _hashes(proof, "path", "", problems)
    line_root = _hash(proof, "line_root", "", problems)
    if leaf_index is not None and tree_size is not None and leaf_index >= tree_size:
        problems.append(f"leaf_index: {leaf_index} is not below tree_size {tree_size}")
    elif (
        event_hash is not None
        and leaf_index is not None
        and tree_size is not None
        and path is not None
        and line_root is not None
        and not verify_inclusion(event_hash, leaf_index, tree_size, path, line_root)
    ):
        problems.append(
            f"path: does not prove event.hash is leaf {leaf_index} of a {tree_size}-leaf tree "
            "with root line_root"
        )
    return tree_size, line_root


def _check_invoice(proof: Mapping[str, Any], problems: list[str]) -> Any:
    """Check the invoice hash; return the parsed document (``_MISSING`` if unusable)."""
    invoice = _object(proof, "invoice", "", problems)
    if invoice is None:
        return _MISSING
    _text(invoice, "id", "invoice.", problems)
    invoice_hash = _hash(invoice, "hash", "invoice.", problems)
    text = _text(invoice, "document", "invoice.", problems)
    if text is None:
        return _MISSING
    if invoice_hash is not None and _sha256(text.encode("utf-8")).digest() != invoice_hash:
        problems.append("invoice.hash: does not equal SHA-256(invoice.document)")
    try:
        return json.loads(text)
    except ValueError as error:
        problems.append(f"invoice.document: not valid JSON ({error})")
        return _MISSING


def _check_line(
    proof: Mapping[str, Any],
    document: Any,
    sequence: int | None,
    tree_size: int | None,
    line_root: bytes | None,
    problems: list[str],
) -> None:
    """Check that the invoice line's lineage records this root, size and event range."""
    line_number = _integer(proof, "line_number", "", problems, minimum=FIRST_LINE_NUMBER)
    if document is _MISSING or line_number is None:
        return
    lines = document.get("lines") if isinstance(document, Mapping) else None
    if not isinstance(lines, list):
        problems.append("invoice.document: has no list of lines")
        return
    if line_number > len(lines):
        problems.append(
            f"line_number: invoice.document has no line {line_number} (it has {len(lines)})"
        )
        return
    line = lines[line_number - FIRST_LINE_NUMBER]
    lineage = line.get("lineage") if isinstance(line, Mapping) else None
    if not isinstance(lineage, Mapping):
        problems.append(f"line_number: line {line_number} of invoice.document has no lineage")
        return
    where = f"line {line_number} of invoice.document"
    recorded_root = _parse_hash(
        lineage.get("merkle_root"), f"invoice.document: lineage.merkle_root of {where}", problems
    )
    if line_root is not None and recorded_root is not None and recorded_root != line_root:
        problems.append(
            f"line_root: differs from the lineage.merkle_root of {where} "
            "(line_root or line_number is wrong)"
        )
    events = lineage.get("events")
    if tree_size is not None and (isinstance(events, bool) or events != tree_size):
        problems.append(
            f"tree_size: {tree_size} differs from lineage.events {events!r} of {where} "
            "(tree_size or line_number is wrong)"
        )
    first_sequence, last_sequence = lineage.get("first_sequence"), lineage.get("last_sequence")
    if (
        sequence is not None
        and isinstance(first_sequence, int)
        and isinstance(last_sequence, int)
        and not first_sequence <= sequence <= last_sequence
    ):
        problems.append(
            f"event.sequence: {sequence} is outside the lineage range "
            f"{first_sequence}..{last_sequence} of {where}"
        )


def verify_proof(proof: Mapping[str, Any]) -> list[str]:
    """Check a lineage proof document; an empty list means valid, else one reason per
    failure, each naming the field at fault.

    The chain is: the event's bytes hash to ``event.hash`` (``SHA-256(0x00 || bytes)``);
    ``event.hash`` is leaf ``leaf_index`` of a ``tree_size``-leaf Merkle tree whose root is
    ``line_root`` (by ``path``); the invoice document hashes to ``invoice.hash``; and its
    line ``line_number`` (counted from 1) records ``line_root`` and ``tree_size`` in its
    lineage (and, when it records them, a sequence range holding ``event.sequence``).
    Malformed or missing fields are reported, never raised.
    """
    if not isinstance(proof, Mapping):
        return ["proof: must be an object"]
    problems: list[str] = []
    sequence, event_hash = _check_event(proof, problems)
    tree_size, line_root = _check_inclusion(proof, event_hash, problems)
    document = _check_invoice(proof, problems)
    _check_line(proof, document, sequence, tree_size, line_root, problems)
    return problems

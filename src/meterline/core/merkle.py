"""RFC 6962 Merkle trees: roots, inclusion and consistency proofs, compact ranges (pure).

Hashes follow RFC 6962 section 2.1 (and RFC 9162 section 2.1): a leaf's hash is
``SHA-256(0x00 || data)``, an interior node's ``SHA-256(0x01 || left || right)``, the
empty tree's root ``SHA-256(b"")``, and a tree of ``n > 1`` leaves splits at the largest
power of two smaller than ``n``. Functions that build take leaf *hashes* (32 bytes each),
so a caller hashes each leaf once and may keep the hashes.

Invariants:

* ``root_of_leaves`` equals the recursive definition for every size; it hashes about one
  node per leaf, level by level (an odd last node is carried up unchanged).
* A proof built here verifies against the root it was built from; the ``verify_*``
  functions never raise: malformed input (wrong types, sizes, lengths) is ``False``.
* A frontier (compact range from leaf 0) holds one subtree root per set bit of its size,
  largest (leftmost) first; its root equals ``root_of_leaves`` of every leaf appended.
* Every integer written as 8 bytes is from 0 to ``INTEGER_MAX`` (a signed 64-bit value, as
  the stores keep them).

The batch leaf (a committed batch's entry in its partition's tree) is fixed binary, 64
bytes: partition, batch number, first sequence, last sequence (8-byte big-endian each),
then the batch's 32-byte root over its events' leaf hashes (``batch_leaf_bytes``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
"""Bytes in a SHA-256 hash: every leaf hash, node hash and root."""

INTEGER_MAX = 2**63 - 1
"""The largest size, sequence, partition or number written as 8 bytes (signed 64-bit)."""

INTEGER_BYTES = 8
"""Bytes of each integer in a binary layout (big-endian)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""The root of the tree with no leaves."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256

Frontier = tuple[int, tuple[bytes, ...]]
"""A compact range from leaf 0: (size, subtree roots, largest first, one per set bit)."""

EMPTY_FRONTIER: Frontier = (0, ())
"""The frontier of the tree with no leaves."""


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf holding ``data``: SHA-256(0x00 || data)."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def _check_leaf_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for index, digest in enumerate(leaf_hashes):
        if type(digest) is not bytes or len(digest) != HASH_SIZE:
            raise ValueError(f"leaf hash {index} is not {HASH_SIZE} bytes")


def _next_level(level: list[bytes]) -> list[bytes]:
    """The level above ``level``: adjacent pairs hashed (one SHA-256 call each, no call
    per node), an odd last node carried up."""
    sha256 = _sha256
    prefix = _NODE_PREFIX
    above = [
        sha256(prefix + left + right).digest()
        for left, right in zip(level[0::2], level[1::2], strict=False)  # odd: carried
    ]
    if len(level) % 2:
        above.append(level[-1])
    return above


def root_of_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """The RFC 6962 root (MTH) of a tree whose leaves hash to ``leaf_hashes``."""
    _check_leaf_hashes(leaf_hashes)
    return root_of_hashes(leaf_hashes)


def root_of_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """``root_of_leaves`` without checking the hashes' shape: for hashes this process
    just computed (a batch being sealed), on the append path. About one SHA-256 call per
    leaf, level by level, an odd last node carried up."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` (RFC 6962 section 2.1.1), leaf to root."""
    _check_leaf_hashes(leaf_hashes)
    if type(index) is not int or not 0 <= index < len(leaf_hashes):
        raise ValueError(f"leaf index {index!r} is outside a tree of {len(leaf_hashes)} leaves")
    path: list[bytes] = []
    level = list(leaf_hashes)
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        level = _next_level(level)
        index //= 2
    return path


def _is_hash(value: object) -> bool:
    return type(value) is bytes and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return type(value) is int and 0 <= value <= INTEGER_MAX


def _is_path(proof: object) -> bool:
    return isinstance(proof, list | tuple) and all(_is_hash(item) for item in proof)


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows leaf ``index`` hashing to ``leaf_hash`` in the tree of
    ``tree_size`` leaves whose root is ``root`` (RFC 9162 section 2.1.3.2)."""
    if not (_is_hash(leaf_hash) and _is_hash(root) and _is_path(proof)):
        return False
    if not (_is_size(index) and _is_size(tree_size)) or index >= tree_size:
        return False
    position, last = index, tree_size - 1
    computed = leaf_hash
    for sibling in proof:
        if last == 0:
            return False
        if position % 2 == 1 or position == last:
            computed = node_hash(sibling, computed)
            while position % 2 == 0 and position != 0:
                position >>= 1
                last >>= 1
        else:
            computed = node_hash(computed, sibling)
        position >>= 1
        last >>= 1
    return last == 0 and computed == root


def _largest_power_of_two_below(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def _subproof(leaf_hashes: Sequence[bytes], old_size: int, complete: bool) -> list[bytes]:
    """SUBPROOF(old_size, leaves, complete) of RFC 6962 section 2.1.2."""
    size = len(leaf_hashes)
    if old_size == size:
        return [] if complete else [root_of_leaves(leaf_hashes)]
    split = _largest_power_of_two_below(size)
    if old_size <= split:
        return [
            *_subproof(leaf_hashes[:split], old_size, complete),
            root_of_leaves(leaf_hashes[split:]),
        ]
    return [
        *_subproof(leaf_hashes[split:], old_size - split, False),
        root_of_leaves(leaf_hashes[:split]),
    ]


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """The proof that the tree of the first ``old_size`` leaves is a prefix of the tree of
    all ``leaf_hashes`` (RFC 6962 section 2.1.2). Empty when ``old_size`` is 0 (every tree
    extends the empty one) or the whole tree."""
    _check_leaf_hashes(leaf_hashes)
    if type(old_size) is not int or not 0 <= old_size <= len(leaf_hashes):
        raise ValueError(
            f"old size {old_size!r} is outside 0 to the tree's {len(leaf_hashes)} leaves"
        )
    if old_size == 0:
        return []
    return _subproof(leaf_hashes, old_size, True)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree of ``old_size`` leaves with root ``old_root`` is a
    prefix of the tree of ``new_size`` leaves with root ``new_root`` (RFC 9162 section
    2.1.4.2; equal sizes need equal roots and an empty proof, old size 0 the empty root
    and an empty proof)."""
    if not (_is_hash(old_root) and _is_hash(new_root) and _is_path(proof)):
        return False
    if not (_is_size(old_size) and _is_size(new_size)) or old_size > new_size:
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    position, last = old_size - 1, new_size - 1
    while position % 2 == 1:
        position >>= 1
        last >>= 1
    old_computed = new_computed = path[0]
    for sibling in path[1:]:
        if last == 0:
            return False
        if position % 2 == 1 or position == last:
            old_computed = node_hash(sibling, old_computed)
            new_computed = node_hash(sibling, new_computed)
            while position % 2 == 0 and position != 0:
                position >>= 1
                last >>= 1
        else:
            new_computed = node_hash(new_computed, sibling)
        position >>= 1
        last >>= 1
    return last == 0 and old_computed == old_root and new_computed == new_root


def _check_frontier(frontier: Frontier) -> None:
    size, roots = frontier
    if not _is_size(size):
        raise ValueError(f"frontier size {size!r} is not an integer from 0 to {INTEGER_MAX}")
    if len(roots) != size.bit_count():
        raise ValueError(
            f"frontier of size {size} needs {size.bit_count()} subtree roots, has {len(roots)}"
        )
    if not all(_is_hash(root) for root in roots):
        raise ValueError(f"frontier subtree roots must be {HASH_SIZE} bytes each")


def frontier_append(frontier: Frontier, leaf_hash: bytes) -> Frontier:
    """The frontier after appending one leaf whose hash is ``leaf_hash``."""
    _check_frontier(frontier)
    if not _is_hash(leaf_hash):
        raise ValueError(f"leaf hash is not {HASH_SIZE} bytes")
    size, roots = frontier
    if size == INTEGER_MAX:
        raise ValueError(f"frontier is full ({INTEGER_MAX} leaves)")
    kept = list(roots)
    node, carry = leaf_hash, size
    while carry % 2 == 1:
        node = node_hash(kept.pop(), node)
        carry >>= 1
    kept.append(node)
    return size + 1, tuple(kept)


def frontier_root(frontier: Frontier) -> bytes:
    """The root of the tree whose compact range is ``frontier``."""
    _check_frontier(frontier)
    _, roots = frontier
    if not roots:
        return EMPTY_ROOT
    root = roots[-1]
    for left in reversed(roots[:-1]):
        root = node_hash(left, root)
    return root


def frontier_to_bytes(frontier: Frontier) -> bytes:
    """The frontier's size (8-byte big-endian), then its subtree roots (32 bytes each)."""
    _check_frontier(frontier)
    size, roots = frontier
    return size.to_bytes(INTEGER_BYTES, "big") + b"".join(roots)


def frontier_from_bytes(data: bytes) -> Frontier:
    """The frontier ``frontier_to_bytes`` wrote, or ValueError naming what is wrong."""
    if type(data) is not bytes:
        raise ValueError("frontier bytes must be bytes")
    if len(data) < INTEGER_BYTES:
        raise ValueError(f"frontier bytes hold {len(data)} bytes, fewer than the 8-byte size")
    size = int.from_bytes(data[:INTEGER_BYTES], "big")
    if size > INTEGER_MAX:
        raise ValueError(f"frontier size {size} exceeds {INTEGER_MAX}")
    hashes = data[INTEGER_BYTES:]
    if len(hashes) != HASH_SIZE * size.bit_count():
        raise ValueError(
            f"frontier of size {size} needs {size.bit_count()} subtree roots"
            f" ({HASH_SIZE * size.bit_count()} bytes after the size), found {len(hashes)} bytes"
        )
    roots = tuple(hashes[start : start + HASH_SIZE] for start in range(0, len(hashes), HASH_SIZE))
    return size, roots


BATCH_LEAF_SIZE = 4 * INTEGER_BYTES + HASH_SIZE
"""Bytes of a batch leaf: four 8-byte integers and the batch root."""


def batch_leaf_bytes(
    partition: int, batch_number: int, first_sequence: int, last_sequence: int, root: bytes
) -> bytes:
    """A committed batch's leaf in its partition's tree (64 bytes): partition, batch number
    (from 1), first and last sequence (8-byte big-endian each), then the batch's root over
    its events' leaf hashes (``leaf_hash(event bytes)``, in sequence order)."""
    for name, value, lowest in (
        ("partition", partition, 0),
        ("batch number", batch_number, 1),
        ("first sequence", first_sequence, 1),
        ("last sequence", last_sequence, 1),
    ):
        if type(value) is not int or not lowest <= value <= INTEGER_MAX:
            raise ValueError(f"{name} must be an integer from {lowest} to {INTEGER_MAX}")
    if last_sequence < first_sequence:
        raise ValueError(
            f"batch last sequence {last_sequence} is before its first {first_sequence}"
        )
    if not _is_hash(root):
        raise ValueError(f"batch root is not {HASH_SIZE} bytes")
    integers = (partition, batch_number, first_sequence, last_sequence)
    return b"".join(value.to_bytes(INTEGER_BYTES, "big") for value in integers) + root

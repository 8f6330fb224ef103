"""RFC 6962 Merkle trees: reference vectors, proofs and frontiers (pure core)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core.merkle import (
    EMPTY_FRONTIER,
    EMPTY_ROOT,
    INTEGER_MAX,
    Frontier,
    batch_leaf_bytes,
    consistency_proof,
    frontier_append,
    frontier_from_bytes,
    frontier_root,
    frontier_to_bytes,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of_leaves,
    verify_consistency,
    verify_inclusion,
)

# The certificate-transparency reference implementation's eight test leaves and the roots
# of their first 1..8 (published in its merkle tree tests).
REFERENCE_LEAVES = [
    bytes.fromhex(text)
    for text in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
REFERENCE_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


# An independent, straightforward transcription of RFC 6962 section 2.1.
def split_point(size: int) -> int:
    point = 1
    while point * 2 < size:
        point *= 2
    return point


def reference_root(leaves: list[bytes]) -> bytes:
    """MTH over raw leaf data, recursively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    split = split_point(len(leaves))
    left, right = reference_root(leaves[:split]), reference_root(leaves[split:])
    return hashlib.sha256(b"\x01" + left + right).digest()


def reference_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]), recursively."""
    if len(leaves) <= 1:
        return []
    split = split_point(len(leaves))
    if index < split:
        return [*reference_path(index, leaves[:split]), reference_root(leaves[split:])]
    return [*reference_path(index - split, leaves[split:]), reference_root(leaves[:split])]


def reference_subproof(old: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b), recursively."""
    if old == len(leaves):
        return [] if complete else [reference_root(leaves)]
    split = split_point(len(leaves))
    if old <= split:
        return [*reference_subproof(old, leaves[:split], complete), reference_root(leaves[split:])]
    return [
        *reference_subproof(old - split, leaves[split:], False),
        reference_root(leaves[:split]),
    ]


def hashes(leaves: list[bytes]) -> list[bytes]:
    return [leaf_hash(leaf) for leaf in leaves]


def flipped(digest: bytes) -> bytes:
    return bytes([digest[0] ^ 1]) + digest[1:]


leaf_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=40)


def test_leaf_and_node_hashes_use_the_rfc_prefixes() -> None:
    """A leaf is SHA-256(0x00 || data), a node SHA-256(0x01 || left || right)."""
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


def test_reference_vectors() -> None:
    """The CT reference roots for sizes 1..8, from both implementations; empty is SHA-256('')."""
    for size in range(1, 9):
        expected = bytes.fromhex(REFERENCE_ROOTS[size - 1])
        assert root_of_leaves(hashes(REFERENCE_LEAVES[:size])) == expected, size
        assert reference_root(REFERENCE_LEAVES[:size]) == expected, size
    assert root_of_leaves([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_reference_vectors_prove_every_leaf_and_every_prefix() -> None:
    """Over the reference leaves every inclusion and consistency proof verifies."""
    for size in range(1, 9):
        leaves = hashes(REFERENCE_LEAVES[:size])
        root = bytes.fromhex(REFERENCE_ROOTS[size - 1])
        for index in range(size):
            path = inclusion_proof(leaves, index)
            assert path == reference_path(index, REFERENCE_LEAVES[:size])
            assert verify_inclusion(leaves[index], index, size, path, root)
        for old in range(1, size + 1):
            old_root = bytes.fromhex(REFERENCE_ROOTS[old - 1])
            proof = consistency_proof(leaves, old)
            assert verify_consistency(old, size, old_root, root, proof), (old, size)


@settings(max_examples=150, deadline=None)
@given(leaf_lists)
def test_iterative_root_equals_recursive_root(leaves: list[bytes]) -> None:
    """The level-by-level root equals RFC 6962's recursive definition."""
    assert root_of_leaves(hashes(leaves)) == reference_root(leaves)


@settings(max_examples=100, deadline=None)
@given(leaf_lists, st.data())
def test_inclusion_proofs_verify_and_alterations_fail(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """Each audit path is RFC 6962's and verifies; a changed leaf, index, size, path
    element, root or a dropped/added element does not."""
    leaf_hashes = hashes(leaves)
    root = root_of_leaves(leaf_hashes)
    size = len(leaves)
    index = data.draw(st.integers(0, size - 1))
    path = inclusion_proof(leaf_hashes, index)
    assert path == reference_path(index, leaves)
    leaf = leaf_hashes[index]
    assert verify_inclusion(leaf, index, size, path, root)
    assert not verify_inclusion(leaf_hash(leaves[index] + b"!"), index, size, path, root)
    assert not verify_inclusion(leaf, index, size, path, flipped(root))
    for other in {index - 1, index + 1, size, -1}:
        if other != index and (not 0 <= other < size or leaf_hashes[other] != leaf):
            assert not verify_inclusion(leaf, other, size, path, root)
    for other_size in {size - 1, size + 1, size * 2}:
        shape = (
            len(inclusion_proof(leaf_hashes[:1] * other_size, index)) if index < other_size else -1
        )
        if other_size > 0 and shape != len(path):
            assert not verify_inclusion(leaf, index, other_size, path, root)
    for position in range(len(path)):
        altered = list(path)
        altered[position] = flipped(altered[position])
        assert not verify_inclusion(leaf, index, size, altered, root)
    if path:
        assert not verify_inclusion(leaf, index, size, path[:-1], root)
    assert not verify_inclusion(leaf, index, size, [*path, root], root)


def test_a_proof_verifies_for_no_size_of_another_path_shape() -> None:
    """A path binds the tree size only as far as the path's shape: a proof verifies for
    another size only when that size's path for the index has the same length (so a
    verifier takes the size from signed data, never from the prover)."""
    leaves = hashes([bytes([number]) for number in range(20)])
    for size in range(1, 21):
        root = root_of_leaves(leaves[:size])
        for index in range(size):
            path = inclusion_proof(leaves[:size], index)
            for other in range(1, 25):
                if other == size:
                    continue
                shape = len(inclusion_proof((leaves * 2)[:other], index)) if index < other else -1
                if shape != len(path):
                    assert not verify_inclusion(leaves[index], index, other, path, root)


def test_verify_inclusion_never_raises() -> None:
    """Malformed input is False, never an exception."""
    leaves = hashes([b"a", b"b", b"c"])
    root = root_of_leaves(leaves)
    path = inclusion_proof(leaves, 1)
    assert verify_inclusion(leaves[1], 1, 3, path, root)
    bad_inputs: list[tuple[object, object, object, object, object]] = [
        (b"short", 1, 3, path, root),
        (leaves[1], 1, 3, path, b"short"),
        (leaves[1], "1", 3, path, root),
        (leaves[1], 1, 3.0, path, root),
        (leaves[1], True, 3, path, root),
        (leaves[1], 1, 3, [b"short"], root),
        (leaves[1], 1, 3, None, root),
        (leaves[1], 1, 3, "not a path", root),
        (leaves[1], 3, 3, path, root),
        (leaves[1], 1, 0, path, root),
        (leaves[1], 1, 2**64, path, root),
        (None, 1, 3, path, root),
    ]
    for arguments in bad_inputs:
        assert verify_inclusion(*arguments) is False  # type: ignore[arg-type]


def test_consistency_for_every_pair_of_sizes_up_to_20() -> None:
    """For every 1 <= old <= new <= 20 the proof is RFC 6962's, verifies, and fails when
    a proof element, either root, either size is altered, or an element is dropped."""
    leaves = [f"leaf {number}".encode() for number in range(20)]
    leaf_hashes = hashes(leaves)
    roots = [root_of_leaves(leaf_hashes[:size]) for size in range(21)]
    for new in range(1, 21):
        for old in range(0, new + 1):
            proof = consistency_proof(leaf_hashes[:new], old)
            if old > 0:
                assert proof == reference_subproof(old, leaves[:new], True)
            assert verify_consistency(old, new, roots[old], roots[new], proof), (old, new)
            assert not verify_consistency(old, new, flipped(roots[old]), roots[new], proof)
            if old > 0:  # every tree extends the empty one
                assert not verify_consistency(old, new, roots[old], flipped(roots[new]), proof)
            for position in range(len(proof)):
                altered = list(proof)
                altered[position] = flipped(altered[position])
                assert not verify_consistency(old, new, roots[old], roots[new], altered)
            if proof:
                assert not verify_consistency(old, new, roots[old], roots[new], proof[:-1])
            assert not verify_consistency(old, new, roots[old], roots[new], [*proof, roots[0]])
            # sizes are bound only as far as the proof's shape (a verifier takes both
            # sizes from signed data): another pair of sizes with another shape fails
            for other_old, other_new in (
                (old - 1, new),
                (old + 1, new),
                (old, new - 1),
                (old, new + 1),
            ):
                if not 0 < other_old <= other_new or (other_old, other_new) == (old, new):
                    continue
                shape = len(consistency_proof(leaf_hashes[:1] * other_new, other_old))
                if shape != len(proof):
                    assert not verify_consistency(
                        other_old, other_new, roots[old], roots[new], proof
                    )


def test_consistency_refuses_a_tree_that_rewrote_history() -> None:
    """A new tree whose first leaves differ is not consistent with the old root."""
    leaves = hashes([bytes([number]) for number in range(10)])
    rewritten = [leaf_hash(b"forged"), *leaves[1:]]
    old_root = root_of_leaves(leaves[:4])
    proof = consistency_proof(rewritten, 4)
    assert not verify_consistency(4, 10, old_root, root_of_leaves(rewritten), proof)


def test_verify_consistency_never_raises() -> None:
    """Malformed input is False, never an exception; old > new is False."""
    root = root_of_leaves(hashes([b"a"]))
    for arguments in [
        (2, 1, root, root, []),
        (-1, 1, root, root, []),
        (1, 2, root, b"short", [root]),
        (1, 2, root, root, [b"short"]),
        (1, 2, root, root, None),
        ("1", 2, root, root, [root]),
        (1, 2, root, root, []),
        (0, 3, root, root, []),
    ]:
        assert verify_consistency(*arguments) is False  # type: ignore[arg-type]


def test_bad_arguments_to_builders_name_the_problem() -> None:
    """Builders raise ValueError naming the bad index, size or leaf hash."""
    leaves = hashes([b"a", b"b"])
    with pytest.raises(ValueError, match="leaf index 2 is outside a tree of 2 leaves"):
        inclusion_proof(leaves, 2)
    with pytest.raises(ValueError, match="old size 3 is outside"):
        consistency_proof(leaves, 3)
    with pytest.raises(ValueError, match="leaf hash 1 is not 32 bytes"):
        root_of_leaves([leaves[0], b"short"])


def test_large_batch_root_is_fast_and_right() -> None:
    """10,000 leaves: the root equals the frontier's and the recursive one's."""
    leaves = [number.to_bytes(4, "big") for number in range(10_000)]
    leaf_hashes = hashes(leaves)
    frontier = EMPTY_FRONTIER
    for digest in leaf_hashes:
        frontier = frontier_append(frontier, digest)
    assert root_of_leaves(leaf_hashes) == frontier_root(frontier) == reference_root(leaves)
    path = inclusion_proof(leaf_hashes, 7_777)
    assert verify_inclusion(leaf_hashes[7_777], 7_777, 10_000, path, root_of_leaves(leaf_hashes))


@settings(max_examples=60, deadline=None)
@given(leaf_lists)
def test_frontier_root_tracks_every_append(leaves: list[bytes]) -> None:
    """After each append the frontier's root is the root of every leaf so far, and its
    bytes round-trip."""
    frontier: Frontier = EMPTY_FRONTIER
    assert frontier_root(frontier) == EMPTY_ROOT
    leaf_hashes = hashes(leaves)
    for count, digest in enumerate(leaf_hashes, start=1):
        frontier = frontier_append(frontier, digest)
        assert frontier[0] == count and len(frontier[1]) == count.bit_count()
        assert frontier_root(frontier) == root_of_leaves(leaf_hashes[:count])
        encoded = frontier_to_bytes(frontier)
        assert len(encoded) == 8 + 32 * count.bit_count()
        assert frontier_from_bytes(encoded) == frontier


def test_frontier_bytes_refuse_bad_input() -> None:
    """Bad frontier bytes raise ValueError naming the problem."""
    frontier = EMPTY_FRONTIER
    for digest in hashes([b"a", b"b", b"c"]):
        frontier = frontier_append(frontier, digest)
    encoded = frontier_to_bytes(frontier)
    assert frontier_from_bytes((0).to_bytes(8, "big")) == EMPTY_FRONTIER
    with pytest.raises(ValueError, match="fewer than the 8-byte size"):
        frontier_from_bytes(encoded[:5])
    with pytest.raises(ValueError, match="needs 2 subtree roots"):
        frontier_from_bytes(encoded[:-1])
    with pytest.raises(ValueError, match="needs 2 subtree roots"):
        frontier_from_bytes(encoded + bytes(32))
    with pytest.raises(ValueError, match="needs 3 subtree roots"):
        frontier_from_bytes((7).to_bytes(8, "big") + encoded[8:])
    with pytest.raises(ValueError, match="exceeds"):
        frontier_from_bytes(b"\xff" * 8)
    with pytest.raises(ValueError, match="must be bytes"):
        frontier_from_bytes("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs 2 subtree roots, has 1"):
        frontier_root((3, frontier[1][:1]))
    with pytest.raises(ValueError, match="leaf hash is not 32 bytes"):
        frontier_append(frontier, b"short")


def test_batch_leaf_layout() -> None:
    """A batch leaf is four 8-byte big-endian integers then the 32-byte root."""
    root = root_of_leaves(hashes([b"e1", b"e2"]))
    data = batch_leaf_bytes(2, 7, 101, 102, root)
    assert data == b"".join(n.to_bytes(8, "big") for n in (2, 7, 101, 102)) + root
    assert len(data) == 64
    with pytest.raises(ValueError, match="batch number must be an integer from 1"):
        batch_leaf_bytes(2, 0, 101, 102, root)
    with pytest.raises(ValueError, match="last sequence 100 is before its first 101"):
        batch_leaf_bytes(2, 1, 101, 100, root)
    with pytest.raises(ValueError, match="batch root is not 32 bytes"):
        batch_leaf_bytes(2, 1, 101, 102, b"short")
    with pytest.raises(ValueError, match="partition must be an integer"):
        batch_leaf_bytes(INTEGER_MAX + 1, 1, 1, 1, root)

"""Merkle lineage of invoice lines: RFC 6962 roots, audit paths and the proof verifier."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.core.chain import event_hash
from meterline.core.lineage import (
    EMPTY_ROOT,
    MerkleBuilder,
    inclusion_path,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_inclusion,
    verify_proof,
)

# The Certificate Transparency reference leaves and roots (RFC 6962 test vectors): the
# root of the first n leaves is ROOTS[n], so the construction is the standard one.
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
    bytes.fromhex(text)
    for text in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
REFERENCE_PATHS = {
    0: [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    5: [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def event_hashes(count: int) -> list[bytes]:
    """Distinct 32-byte stand-ins for ledger hashes."""
    return [sha256(b"event %d" % number) for number in range(count)]


def split_point(size: int) -> int:
    """The largest power of two strictly below ``size``, found by counting up."""
    power = 1
    while power * 2 < size:
        power *= 2
    return power


def reference_root(leaves: Sequence[bytes]) -> bytes:
    """MTH straight from the RFC 6962 definition, recursively."""
    if not leaves:
        return sha256(b"")
    if len(leaves) == 1:
        return sha256(b"\x00" + leaves[0])
    split = split_point(len(leaves))
    return sha256(b"\x01" + reference_root(leaves[:split]) + reference_root(leaves[split:]))


def reference_path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) straight from the RFC 9162 section 2.1.3.1 definition."""
    if len(leaves) == 1:
        return []
    split = split_point(len(leaves))
    if index < split:
        return [*reference_path(index, leaves[:split]), reference_root(leaves[split:])]
    return [*reference_path(index - split, leaves[split:]), reference_root(leaves[:split])]


def built_root(leaves: Sequence[bytes]) -> bytes:
    builder = MerkleBuilder()
    for leaf in leaves:
        builder.add(leaf)
    assert builder.count == len(leaves)
    return builder.root()


# -- known answers -----------------------------------------------------------------------


def test_empty_root_is_sha256_of_nothing() -> None:
    """The empty tree's hash is SHA-256 of the empty string, from both constructions."""
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256(b"") == EMPTY_ROOT
    assert merkle_root([]) == EMPTY_ROOT
    assert MerkleBuilder().root() == EMPTY_ROOT
    assert MerkleBuilder().count == 0


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    """Leaves hash under a 0x00 prefix, interior nodes under 0x01."""
    left, right = sha256(b"left"), sha256(b"right")
    assert leaf_hash(left) == sha256(b"\x00" + left)
    assert node_hash(left, right) == sha256(b"\x01" + left + right)
    assert node_hash(left, right) != node_hash(right, left)


def test_one_leaf_root_is_its_leaf_hash() -> None:
    (only,) = event_hashes(1)
    assert merkle_root([only]) == leaf_hash(only)
    assert built_root([only]) == leaf_hash(only)


def test_three_leaf_root_by_hand() -> None:
    """Three leaves split at two: node(node(leaf 0, leaf 1), leaf 2)."""
    first, second, third = event_hashes(3)
    expected = sha256(
        b"\x01"
        + sha256(b"\x01" + sha256(b"\x00" + first) + sha256(b"\x00" + second))
        + sha256(b"\x00" + third)
    )
    assert merkle_root([first, second, third]) == expected
    assert built_root([first, second, third]) == expected


def test_roots_match_the_rfc_6962_reference_vectors() -> None:
    """Every prefix of the Certificate Transparency test data gives its published root."""
    for size, expected in enumerate(REFERENCE_ROOTS):
        assert merkle_root(REFERENCE_LEAVES[:size]) == expected, size
        assert built_root(REFERENCE_LEAVES[:size]) == expected, size


@pytest.mark.parametrize("index", sorted(REFERENCE_PATHS))
def test_inclusion_paths_match_the_rfc_6962_reference_vectors(index: int) -> None:
    expected = [bytes.fromhex(text) for text in REFERENCE_PATHS[index]]
    assert inclusion_path(REFERENCE_LEAVES, index) == expected
    root = REFERENCE_ROOTS[len(REFERENCE_LEAVES)]
    assert verify_inclusion(REFERENCE_LEAVES[index], index, len(REFERENCE_LEAVES), expected, root)


# -- the streaming builder against the definition ---------------------------------------


@pytest.mark.parametrize("size", range(71))
def test_builder_and_merkle_root_equal_the_definition(size: int) -> None:
    leaves = event_hashes(size)
    expected = reference_root(leaves)
    assert merkle_root(leaves) == expected
    assert built_root(leaves) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=150))
def test_builder_equals_definition_for_any_leaves(leaves: list[bytes]) -> None:
    expected = reference_root(leaves)
    assert built_root(leaves) == expected
    assert merkle_root(leaves) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=80), st.data())
def test_root_mid_stream_does_not_disturb_the_builder(
    leaves: list[bytes], data: st.DataObject
) -> None:
    """Asking for the root at any points leaves the builder able to carry on."""
    stops = set(data.draw(st.lists(st.integers(0, len(leaves)), max_size=10)))
    builder = MerkleBuilder()
    for count, leaf in enumerate(leaves):
        if count in stops:
            assert builder.root() == reference_root(leaves[:count])
            assert builder.root() == reference_root(leaves[:count])
        builder.add(leaf)
    assert builder.count == len(leaves)
    assert builder.root() == reference_root(leaves)


def test_root_after_every_leaf_then_continue() -> None:
    leaves = event_hashes(70)
    builder = MerkleBuilder()
    for count, leaf in enumerate(leaves, start=1):
        builder.add(leaf)
        assert builder.count == count
        assert builder.root() == reference_root(leaves[:count])


# -- inclusion paths ----------------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, 41))
def test_every_inclusion_path_verifies(size: int) -> None:
    leaves = event_hashes(size)
    root = merkle_root(leaves)
    for index in range(size):
        path = inclusion_path(leaves, index)
        assert path == reference_path(index, leaves)
        assert verify_inclusion(leaves[index], index, size, path, root)


def test_inclusion_path_rejects_an_index_outside_the_tree() -> None:
    leaves = event_hashes(3)
    for index in (-1, 3):
        with pytest.raises(IndexError):
            inclusion_path(leaves, index)
    with pytest.raises(IndexError):
        inclusion_path([], 0)


def flipped(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


@pytest.mark.parametrize("size", range(1, 21))
def test_forged_inclusion_proofs_fail(size: int) -> None:
    leaves = event_hashes(size)
    root = merkle_root(leaves)
    outsider = sha256(b"not in the tree")
    for index in range(size):
        path = inclusion_path(leaves, index)
        leaf = leaves[index]
        assert verify_inclusion(leaf, index, size, path, root)
        # A flipped byte anywhere in the path.
        for level, sibling in enumerate(path):
            for position in (0, 31):
                forged = [*path[:level], flipped(sibling, position), *path[level + 1 :]]
                assert not verify_inclusion(leaf, index, size, forged, root)
        # Any other index in the same tree.
        for other in range(-1, size + 1):
            if other != index:
                assert not verify_inclusion(leaf, other, size, path, root)
        # A different event, or the same event under a wrong root.
        assert not verify_inclusion(outsider, index, size, path, root)
        assert not verify_inclusion(flipped(leaf, 0), index, size, path, root)
        assert not verify_inclusion(leaf, index, size, path, flipped(root, 31))
        assert not verify_inclusion(leaf, index, size, path, merkle_root(leaves[:-1]))
        # A wrong size whose audit path has another length (a size with the same path
        # shape is bound by the invoice's lineage event count, checked by verify_proof).
        for other_size in range(1, 2 * size + 2):
            if other_size == size:
                continue
            if index >= other_size or len(reference_path(index, event_hashes(other_size))) != len(
                path
            ):
                assert not verify_inclusion(leaf, index, other_size, path, root)
        # Siblings swapped, reversed, dropped or one too many.
        for level in range(len(path) - 1):
            swapped = list(path)
            swapped[level], swapped[level + 1] = swapped[level + 1], swapped[level]
            assert not verify_inclusion(leaf, index, size, swapped, root)
        if len(path) > 1:
            assert not verify_inclusion(leaf, index, size, path[::-1], root)
        if path:
            assert not verify_inclusion(leaf, index, size, path[:-1], root)
        assert not verify_inclusion(leaf, index, size, [*path, root], root)


def test_verify_inclusion_rejects_malformed_siblings_and_sizes() -> None:
    leaves = event_hashes(4)
    root = merkle_root(leaves)
    path = inclusion_path(leaves, 1)
    assert not verify_inclusion(leaves[1], 1, 4, [path[0][:31], path[1]], root)
    assert not verify_inclusion(leaves[1], 1, 0, path, root)
    assert not verify_inclusion(leaves[0], 0, 0, [], EMPTY_ROOT)


def test_a_sibling_swapped_into_the_wrong_side_fails() -> None:
    """The root recomputed with left and right exchanged at one node does not verify."""
    first, second = event_hashes(2)
    swapped_root = node_hash(leaf_hash(second), leaf_hash(first))
    assert not verify_inclusion(first, 0, 2, [leaf_hash(second)], swapped_root)
    assert verify_inclusion(first, 0, 2, [leaf_hash(second)], merkle_root([first, second]))


# -- the proof document verifier --------------------------------------------------------


def canonical(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


FIRST_SEQUENCE = 101
EVENT_COUNT = 7
PROVED_LEAF = 4
USAGE_LINE = 2


def build_proof(leaf: int = PROVED_LEAF) -> dict[str, Any]:
    """A ledger chain, an invoice whose usage lines carry lineage, and one event's proof.

    Line 2 covers the odd-numbered sequences from 101, line 3 the even ones; the proof is
    for event ``leaf`` (from 0) of line 2.
    """
    bodies, hashes = [], []
    for offset in range(2 * EVENT_COUNT):
        body = canonical({"id": f"evt-{offset}", "type": "tokens", "data": {"n": offset}})
        bodies.append(body)
        hashes.append(event_hash(body.encode("utf-8")))
    odd, even = hashes[0::2], hashes[1::2]

    def lineage(leaves: list[bytes], first: int) -> dict[str, Any]:
        return {
            "events": len(leaves),
            "first_sequence": first,
            "last_sequence": first + 2 * (len(leaves) - 1),
            "merkle_root": merkle_root(leaves).hex(),
        }

    document = {
        "schema": "test",
        "lines": [
            {"number": 1, "kind": "fee", "amount": "10.00"},
            {"number": 2, "kind": "usage", "lineage": lineage(odd, FIRST_SEQUENCE)},
            {"number": 3, "kind": "usage", "lineage": lineage(even[:-1], FIRST_SEQUENCE + 1)},
        ],
        "total": "12.34",
    }
    text = canonical(document)
    position = 2 * leaf
    return {
        "event": {
            "sequence": FIRST_SEQUENCE + position,
            "body": bodies[position],
            "hash": hashes[position].hex(),
        },
        "leaf_index": leaf,
        "tree_size": len(odd),
        "path": [sibling.hex() for sibling in inclusion_path(odd, leaf)],
        "line_root": merkle_root(odd).hex(),
        "line_number": USAGE_LINE,
        "invoice": {
            "id": "inv-1",
            "hash": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "document": text,
        },
    }


def reissued(proof: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """The proof with a different invoice document, correctly hashed."""
    text = canonical(document)
    proof["invoice"]["document"] = text
    proof["invoice"]["hash"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return proof


def test_a_genuine_proof_verifies() -> None:
    proof = build_proof()
    assert verify_proof(proof) == []
    # It survives a JSON round trip, as it would over HTTP.
    assert verify_proof(json.loads(json.dumps(proof))) == []


def test_every_event_of_the_line_has_a_valid_proof() -> None:
    for leaf in range(EVENT_COUNT):
        assert verify_proof(build_proof(leaf)) == [], leaf


def only_problem(proof: dict[str, Any]) -> str:
    problems = verify_proof(proof)
    assert len(problems) == 1, problems
    return problems[0]


def test_an_edited_event_body_is_named() -> None:
    proof = build_proof()
    proof["event"]["body"] = proof["event"]["body"].replace('"n":8', '"n":9')
    problem = only_problem(proof)
    assert problem.startswith("event.hash:")
    assert "event.body" in problem


def test_an_event_hash_that_is_not_the_leaf_is_named() -> None:
    """Re-hashing an edited body consistently still fails: the leaf is not in the tree."""
    proof = build_proof()
    body = proof["event"]["body"].replace('"n":8', '"n":9')
    proof["event"]["body"] = body
    proof["event"]["hash"] = event_hash(body.encode("utf-8")).hex()
    assert only_problem(proof).startswith("path:")


@pytest.mark.parametrize("level", range(3))
def test_an_edited_path_is_named(level: int) -> None:
    proof = build_proof()
    proof["path"][level] = flipped(bytes.fromhex(proof["path"][level]), 5).hex()
    assert only_problem(proof).startswith("path:")


def test_a_wrong_leaf_index_is_named() -> None:
    proof = build_proof()
    proof["leaf_index"] = PROVED_LEAF + 1
    assert only_problem(proof).startswith("path:")
    proof["leaf_index"] = EVENT_COUNT
    assert only_problem(proof).startswith("leaf_index:")


def test_a_wrong_tree_size_is_named() -> None:
    proof = build_proof()
    proof["tree_size"] = EVENT_COUNT + 1  # Same path shape: only the invoice catches it.
    assert only_problem(proof).startswith("tree_size:")
    proof["tree_size"] = EVENT_COUNT + 2
    problems = verify_proof(proof)
    assert [problem.split(":")[0] for problem in problems] == ["path", "tree_size"]


def test_an_edited_invoice_document_is_named() -> None:
    proof = build_proof()
    proof["invoice"]["document"] = proof["invoice"]["document"].replace("12.34", "1.23")
    assert only_problem(proof).startswith("invoice.hash:")


def test_an_edited_invoice_hash_is_named() -> None:
    proof = build_proof()
    proof["invoice"]["hash"] = sha256(b"other").hex()
    assert only_problem(proof).startswith("invoice.hash:")


def test_a_line_root_not_in_the_invoice_is_named() -> None:
    """A line whose recorded root differs (the invoice correctly hashed) is caught."""
    proof = build_proof()
    document = json.loads(proof["invoice"]["document"])
    document["lines"][USAGE_LINE - 1]["lineage"]["merkle_root"] = sha256(b"other").hex()
    problem = only_problem(reissued(proof, document))
    assert problem.startswith("line_root:")
    assert "line_number" in problem


def test_a_line_root_the_path_does_not_reach_is_named() -> None:
    proof = build_proof()
    proof["line_root"] = sha256(b"other").hex()
    problems = verify_proof(proof)
    assert [problem.split(":")[0] for problem in problems] == ["path", "line_root"]


def test_a_wrong_line_number_is_named() -> None:
    proof = build_proof()
    proof["line_number"] = USAGE_LINE + 1  # Another usage line: its root and count differ.
    problems = verify_proof(proof)
    assert [problem.split(":")[0] for problem in problems] == ["line_root", "tree_size"]
    assert all("line_number" in problem for problem in problems)
    proof["line_number"] = 1  # The fee line carries no lineage.
    assert only_problem(proof).startswith("line_number:")
    proof["line_number"] = 4  # No such line.
    assert only_problem(proof).startswith("line_number:")
    proof["line_number"] = 0  # Lines are numbered from 1.
    assert only_problem(proof).startswith("line_number:")


def test_an_event_outside_the_line_range_is_named() -> None:
    proof = build_proof()
    document = json.loads(proof["invoice"]["document"])
    document["lines"][USAGE_LINE - 1]["lineage"]["last_sequence"] = FIRST_SEQUENCE + 1
    assert only_problem(reissued(proof, document)).startswith("event.sequence:")


FIELDS = [
    ("event",),
    ("event", "sequence"),
    ("event", "body"),
    ("event", "hash"),
    ("leaf_index",),
    ("tree_size",),
    ("path",),
    ("line_root",),
    ("line_number",),
    ("invoice",),
    ("invoice", "id"),
    ("invoice", "hash"),
    ("invoice", "document"),
]


@pytest.mark.parametrize("field", FIELDS, ids=".".join)
def test_a_missing_field_is_named(field: tuple[str, ...]) -> None:
    proof = build_proof()
    container = proof
    for key in field[:-1]:
        container = container[key]
    del container[field[-1]]
    problems = verify_proof(proof)
    assert f"{'.'.join(field)}: missing" in problems


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (("event", "hash"), "zz" * 32),
        (("event", "hash"), "AB" * 32),
        (("event", "body"), 17),
        (("event", "sequence"), "101"),
        (("leaf_index",), True),
        (("leaf_index",), -1),
        (("tree_size",), 0),
        (("path",), "00" * 32),
        (("path",), ["00" * 32, 5]),
        (("line_root",), None),
        (("line_number",), 2.0),
        (("invoice",), []),
        (("invoice", "hash"), "0x" + "00" * 31),
        (("invoice", "document"), "{not json"),
    ],
)
def test_a_malformed_field_is_named(field: tuple[str, ...], value: Any) -> None:
    proof = build_proof()
    container = proof
    for key in field[:-1]:
        container = container[key]
    container[field[-1]] = value
    problems = verify_proof(proof)
    assert problems
    assert any(problem.startswith(".".join(field)) for problem in problems), problems


def test_a_document_that_is_not_an_object_is_reported() -> None:
    not_an_object: Any = []
    assert verify_proof(not_an_object) == ["proof: must be an object"]
    assert verify_proof({})[0] == "event: missing"


PROOF = build_proof()
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([*FIELDS, ("invoice", "document", "lines")]), JSON_VALUES)
def test_any_value_in_any_field_gives_messages_not_exceptions(
    field: tuple[str, ...], value: Any
) -> None:
    proof = copy.deepcopy(PROOF)
    if field[-1] == "lines":
        document = json.loads(proof["invoice"]["document"])
        document["lines"] = value
        proof = reissued(proof, document)
    else:
        container = proof
        for key in field[:-1]:
            container = container[key]
        container[field[-1]] = value
    problems = verify_proof(proof)
    assert isinstance(problems, list)
    assert all(isinstance(problem, str) for problem in problems)


# Every field is bound by some check except these two, which only label the proof.
UNBOUND_FIELDS = {("event", "sequence"), ("invoice", "id")}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([field for field in FIELDS if field not in UNBOUND_FIELDS]), JSON_VALUES)
def test_any_changed_field_fails_verification(field: tuple[str, ...], value: Any) -> None:
    """No replacement value, null and odd types included, leaves a proof valid."""
    proof = copy.deepcopy(PROOF)
    container = proof
    for key in field[:-1]:
        container = container[key]
    original = container[field[-1]]
    container[field[-1]] = value
    if type(value) is type(original) and value == original:
        return
    assert verify_proof(proof), (field, value)


@pytest.mark.parametrize("text", ["null", "[]", "3", '{"lines": null}', '{"lines": [null]}'])
def test_an_invoice_document_without_lines_is_named(text: str) -> None:
    proof = build_proof()
    proof["invoice"]["document"] = text
    proof["invoice"]["hash"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert only_problem(proof).startswith(("invoice.document:", "line_number:"))

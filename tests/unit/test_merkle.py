"""Properties of ``envelope.merkle``: generation agrees with the RFC 6962 definitions, verification accepts
exactly what generation makes, and the tile builder's nodes are the tree's nodes."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envelope.errors import InvalidProof
from envelope.merkle import (
    EMPTY_ROOT,
    TILE_WIDTH,
    StoredTile,
    TileBuilder,
    consistency_proof,
    decode_tile,
    inclusion_proof,
    is_valid_subtree,
    leaf_hash,
    node_hash,
    parse_tile_path,
    partial_tiles,
    range_hash,
    root_from_consistency,
    root_of,
    stored_tile_size,
    subtree_consistency_proof,
    subtree_inclusion_proof,
    tile_of,
    tile_path,
    tile_width,
    tree_root,
    verify_consistency,
    verify_inclusion,
    verify_subtree_consistency,
    verify_subtree_inclusion,
)

# ---- the RFC 6962 §2.1 definitions, written as recursively as the RFC -------------------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node_hash(mth(d[:k]), mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def reader(d: list[bytes]):
    def node(level: int, index: int) -> bytes:
        lo, hi = index << level, (index + 1) << level
        assert hi <= len(d), (level, index, len(d))  # only perfect nodes are ever asked for
        return mth(d[lo:hi])
    return node


sizes = st.integers(min_value=1, max_value=300)


@given(sizes, st.data())
def test_inclusion_matches_rfc_and_verifies(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    m = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(m, n, reader(d))
    assert proof == path(m, d)
    verify_inclusion(m, n, d[m], proof, mth(d))
    assert tree_root(n, reader(d)) == mth(d) == root_of(d)


@given(sizes, st.data())
def test_consistency_matches_rfc_and_verifies(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    m = data.draw(st.integers(1, n))
    proof = consistency_proof(m, n, reader(d))
    assert proof == (subproof(m, d, True) if m < n else [])
    verify_consistency(m, n, proof, mth(d[:m]), mth(d))
    assert root_from_consistency(m, n, proof, mth(d[:m])) == mth(d)


@st.composite
def subtrees(draw: st.DrawFn) -> tuple[int, int, int]:
    size = draw(st.integers(1, 300))
    height = draw(st.integers(0, size.bit_length()))
    width = 1 << height
    start = draw(st.integers(0, (size - 1) // width)) * width
    end = draw(st.integers(start + 1, min(size, start + width)))
    return start, end, size


@given(subtrees(), st.data())
def test_subtree_proofs_verify(case: tuple[int, int, int], data: st.DataObject) -> None:
    start, end, size = case
    assert is_valid_subtree(start, end)
    d = leaves(size)
    node = reader(d)
    sub_root = range_hash(start, end, node)
    assert sub_root == mth(d[start:end])
    verify_subtree_consistency(start, end, size, subtree_consistency_proof(start, end, size, node), sub_root,
                               mth(d))
    i = data.draw(st.integers(start, end - 1))
    verify_subtree_inclusion(i, start, end, d[i], subtree_inclusion_proof(i, start, end, node), sub_root)


@given(sizes, st.data())
def test_any_changed_bit_or_length_is_refused(n: int, data: st.DataObject) -> None:
    d = leaves(n)
    root = mth(d)
    m = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(m, n, reader(d))
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = list(proof)
        bad[j] = (int.from_bytes(bad[j], "big") ^ (1 << bit)).to_bytes(32, "big")
        with pytest.raises(InvalidProof):
            verify_inclusion(m, n, d[m], bad, root)
        with pytest.raises(InvalidProof):
            verify_inclusion(m, n, d[m], proof[:-1], root)
    with pytest.raises(InvalidProof):
        verify_inclusion(m, n, d[m], [*proof, d[0]], root)
    with pytest.raises(InvalidProof):
        verify_inclusion(m, n, leaf_hash(b"other"), proof, root)
    other = data.draw(st.integers(0, n - 1))
    if other != m and path(other, d) != proof:
        with pytest.raises(InvalidProof):
            verify_inclusion(other, n, d[m], proof, root)
    if n > 1:
        k = data.draw(st.integers(1, n - 1))
        cproof = consistency_proof(k, n, reader(d))
        with pytest.raises(InvalidProof):
            verify_consistency(k, n, cproof, mth(d[: k - 1]) if k > 1 else leaf_hash(b"x"), root)
        with pytest.raises(InvalidProof):  # a rewritten entry below size k: the new tree is not an extension
            forged = [*d[: k - 1], leaf_hash(b"rewritten"), *d[k:]]
            verify_consistency(k, n, consistency_proof(k, n, reader(forged)), mth(d[:k]), mth(forged))


@settings(max_examples=30)
@given(st.lists(st.integers(1, 600), min_size=1, max_size=5))
def test_tile_builder_nodes_are_tree_nodes(batches: list[int]) -> None:
    """Tiles written batch by batch (with a resume in between) hold exactly the tree's perfect nodes."""
    store: dict[tuple[int, int], StoredTile] = {}
    b = TileBuilder()
    total = 0
    for i, count in enumerate(batches):
        b.extend(leaf_hash(j.to_bytes(4, "big")) for j in range(total, total + count))
        total += count
        for t in b.take_dirty():
            assert len(t.data) == stored_tile_size(t.width)
            assert t.width == tile_width(t.level, t.index, total) or t.width == TILE_WIDTH
            store[(t.level, t.index)] = t
        if i % 2:
            b = TileBuilder.resume(total, [store[(lv, ix)] for lv, ix, _ in partial_tiles(total)])
    d = leaves(total)
    assert b.root() == mth(d)

    def node(level: int, index: int) -> bytes:
        t, ti, row, off = tile_of(level, index)
        return store[(t, ti)].node(row, off)

    row = d
    for level in range(total.bit_length()):
        assert [node(level, index) for index in range(len(row))] == row
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
    for lv, ix, w in partial_tiles(total):
        assert store[(lv, ix)].width == w


def test_tile_counts_of_the_spec_example() -> None:
    """C2SP tlog-tiles: a tree of 70,000 has 273 full level-0 tiles, partial widths 112, 17, 1."""
    assert partial_tiles(70_000) == [(0, 273, 112), (1, 1, 17), (2, 0, 1)]
    assert tile_width(0, 272, 70_000) == 256 and tile_width(1, 0, 70_000) == 256
    assert partial_tiles(256) == [(1, 0, 1)]
    assert partial_tiles(0) == []


@pytest.mark.parametrize(("level", "index", "width", "text"), [
    (0, 1234067, 256, "tile/0/x001/x234/067"),
    (1, 0, 17, "tile/1/000.p/17"),
    ("entries", 999, 256, "tile/entries/999"),
    ("entries", 1000, 1, "tile/entries/x001/000.p/1"),
])
def test_tile_paths(level: int | str, index: int, width: int, text: str) -> None:
    assert tile_path(level, index, width) == text
    ref = parse_tile_path(text)
    assert (ref.level, ref.index, ref.width) == (level, index, width)


@pytest.mark.parametrize("text", ["tile/0/1", "tile/00/001", "tile/0/x000/001", "tile/0/001.p/256", "tile/0/001.p/0",
                                  "tile/64/000", "tile/0/001.p/017", "tile/0/001/", "tile/x/001", "tile/0/x1/001"])
def test_bad_tile_paths(text: str) -> None:
    with pytest.raises(ValueError):
        parse_tile_path(text)


@given(st.integers(0, 2**63 - 1), st.integers(1, 256), st.sampled_from([0, 5, 63, "entries"]))
def test_tile_path_round_trip(index: int, width: int, level: int | str) -> None:
    ref = parse_tile_path(tile_path(level, index, width))
    assert (ref.level, ref.index, ref.width) == (level, index, width)


def test_small_edges() -> None:
    assert root_of([]) == EMPTY_ROOT == range_hash(0, 0, reader([]))
    with pytest.raises(InvalidProof):
        verify_inclusion(0, 0, EMPTY_ROOT, [], EMPTY_ROOT)
    with pytest.raises(InvalidProof):
        verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    with pytest.raises(ValueError):
        inclusion_proof(3, 3, reader(leaves(3)))
    with pytest.raises(ValueError):
        decode_tile(0, 0, 2, b"x" * 10)
    assert not is_valid_subtree(2, 5) and is_valid_subtree(4, 7) and is_valid_subtree(0, 7)

"""RFC 6962 / RFC 9162 Merkle trees: hashing, tree heads, proofs, and the C2SP tlog-tiles layout (DESIGN §9).

Pure: no I/O. The log's store keeps the *perfect* nodes of the tree (a node ``(level, index)`` hashes the
leaves ``[index * 2**level, (index + 1) * 2**level)``); every hash a proof needs is either such a node or the
hash of a right-border range made of a few of them. So proof generation takes a ``node(level, index)``
callable and asks it for O(log n) nodes; ``TileBuilder`` produces those nodes as leaves are appended, grouped
in C2SP tiles (256 hashes at one level, plus the 7 levels inside the tile so that a proof never re-hashes).

Verification raises ``InvalidProof`` and never returns a bool. Besides RFC 9162's inclusion and consistency
proofs it verifies *subtree* proofs (draft-ietf-plants-merkle-tree-certs): a subtree ``[start, end)`` is
valid when ``start`` is a multiple of the smallest power of two >= ``end - start``; a consistency proof of
the prefix ``[0, m)`` is the special case ``start = 0``. One loop serves both (``_root_from_subtree``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from hashlib import sha256

from envelope.errors import InvalidProof

HASH_SIZE = 32
TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256 hashes: 8,192 bytes per full tile row
EMPTY_ROOT = sha256(b"").digest()
MAX_SIZE = 1 << 63  # tree sizes and indices live in signed 64-bit columns

NodeReader = Callable[[int, int], bytes]
"""``node(level, index)``: the hash of the perfect node covering ``[index << level, (index + 1) << level)``."""


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || entry), over the exact entry bytes."""
    return sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return sha256(b"\x01" + left + right).digest()


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes, O(n): the reference the tests and a full re-computation use."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])  # the left-balanced tree promotes the odd node on the right border
        level = nxt
    return level[0]


# ---- subtrees and ranges --------------------------------------------------------------------------------


def is_valid_subtree(start: int, end: int) -> bool:
    """``[start, end)`` is a subtree: ``start`` is a multiple of bit_ceil(end - start) (or the range is empty)."""
    if not 0 <= start <= end < MAX_SIZE + 1:
        return False
    if start in (end, 0):
        return True
    return start % (1 << (end - start - 1).bit_length()) == 0


def perfect_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect nodes, left to right, whose concatenation is the subtree ``[start, end)``.

    Their hashes folded from the right (``range_hash``) give MTH(D[start:end]).
    """
    if not is_valid_subtree(start, end):
        raise ValueError(f"[{start}, {end}) is not a subtree")
    return _perfect_nodes(start, end)


def _perfect_nodes(start: int, end: int) -> list[tuple[int, int]]:
    out = []
    pos, width = start, end - start
    while width:
        level = width.bit_length() - 1
        out.append((level, pos >> level))
        pos += 1 << level
        width -= 1 << level
    return out


def range_hash(start: int, end: int, node: NodeReader) -> bytes:
    """MTH(D[start:end]) of a subtree from the perfect nodes that make it up."""
    nodes = perfect_nodes(start, end)
    return _fold(nodes, node)


def _fold(nodes: list[tuple[int, int]], node: NodeReader) -> bytes:
    if not nodes:
        return EMPTY_ROOT
    h = node(*nodes[-1])
    for level, index in reversed(nodes[:-1]):
        h = node_hash(node(level, index), h)
    return h


def tree_root(size: int, node: NodeReader) -> bytes:
    """The root hash of the tree of ``size`` leaves."""
    return range_hash(0, size, node)


# ---- proof generation -----------------------------------------------------------------------------------


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose hashes form the inclusion proof of leaf ``index`` in ``size`` (leaf's sibling first)."""
    if not 0 <= index < size <= MAX_SIZE:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    return _path_ranges(index, 0, size)


def _path_ranges(pos: int, level: int, size: int) -> list[tuple[int, int]]:
    """Siblings of the path from node ``(level, pos)`` up to the root of the tree of ``size``."""
    out = []
    while (size - 1) >> level:  # until the node is the root
        sibling = pos ^ 1
        lo = sibling << level
        if lo < size:
            out.append((lo, min(lo + (1 << level), size)))
        pos >>= 1
        level += 1
    return out


def subtree_consistency_ranges(start: int, end: int, size: int) -> list[tuple[int, int]]:
    """Ranges of the proof that subtree ``[start, end)`` is part of the tree of ``size`` (RFC 9162 if start=0).

    Empty when the subtree is the tree itself. When the subtree is a node of the tree (perfect, or ending at
    ``size``), the verifier knows its hash and the proof is that node's path; otherwise it starts with the
    subtree's rightmost perfect node and continues with that node's path.
    """
    if not is_valid_subtree(start, end) or end > size or start == end or size > MAX_SIZE:
        raise ValueError(f"[{start}, {end}) is not a non-empty subtree of a tree of size {size}")
    h = (end - 1 - start).bit_length()
    if end - start == 1 << h or end == size:
        return _path_ranges(start >> h, h, size)
    shift = ((end - start) & -(end - start)).bit_length() - 1
    first = (end - (1 << shift), end)
    return [first, *_path_ranges((end - 1) >> shift, shift, size)]


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Ranges of the RFC 9162 consistency proof from ``size1`` to ``size2`` (0 < size1 <= size2)."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to {size2}")
    return subtree_consistency_ranges(0, size1, size2)


def hashes_for(ranges: Iterable[tuple[int, int]], node: NodeReader) -> list[bytes]:
    """The proof: the hash of each range, from the perfect nodes ``node`` returns (ranges from the functions
    above, which are subtrees by construction)."""
    return [node((hi - lo).bit_length() - 1, lo >> ((hi - lo).bit_length() - 1)) if (hi - lo) & (hi - lo - 1) == 0
            else _fold(_perfect_nodes(lo, hi), node) for lo, hi in ranges]


def _path_hashes(pos: int, level: int, size: int, node: NodeReader, out: list[bytes]) -> list[bytes]:
    """``hashes_for(_path_ranges(...))`` without the intermediate list: the hot loop of every receipt."""
    while (size - 1) >> level:
        lo = (pos ^ 1) << level
        if lo < size:
            hi = lo + (1 << level)
            out.append(node(level, pos ^ 1) if hi <= size else _fold(_perfect_nodes(lo, size), node))
        pos >>= 1
        level += 1
    return out


def inclusion_proof(index: int, size: int, node: NodeReader) -> list[bytes]:
    """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size``; O(log n) calls to ``node``."""
    if not 0 <= index < size <= MAX_SIZE:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    return _path_hashes(index, 0, size, node, [])


def consistency_proof(size1: int, size2: int, node: NodeReader) -> list[bytes]:
    """RFC 9162 consistency proof from ``size1`` to ``size2``; O(log n) calls to ``node``."""
    if not 0 < size1 <= size2 <= MAX_SIZE:
        raise ValueError(f"no consistency proof from size {size1} to {size2}")
    if size1 == size2:
        return []
    h = (size1 - 1).bit_length()
    if size1 == 1 << h:
        return _path_hashes(0, h, size2, node, [])
    shift = (size1 & -size1).bit_length() - 1
    first = node(shift, (size1 >> shift) - 1)  # the rightmost perfect node of [0, size1)
    return _path_hashes((size1 - 1) >> shift, shift, size2, node, [first])


def subtree_inclusion_proof(index: int, start: int, end: int, node: NodeReader) -> list[bytes]:
    """Inclusion proof of leaf ``index`` in the subtree ``[start, end)`` (its root is MTH(D[start:end]))."""
    if not is_valid_subtree(start, end) or not start <= index < end:
        raise ValueError(f"leaf {index} is not in a subtree [{start}, {end})")
    return hashes_for(((lo + start, hi + start) for lo, hi in inclusion_ranges(index - start, end - start)), node)


def subtree_consistency_proof(start: int, end: int, size: int, node: NodeReader) -> list[bytes]:
    """Proof that the subtree ``[start, end)`` is contained in the tree of ``size``."""
    return hashes_for(subtree_consistency_ranges(start, end, size), node)


# ---- verification ---------------------------------------------------------------------------------------


def _hash_arg(value: object, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        raise InvalidProof(f"{what} must be a {HASH_SIZE}-byte hash")
    return bytes(value)


def _root_arg(value: object, what: str) -> bytes:
    """Roots are compared as given (a root of the wrong length simply never matches a computed one)."""
    if not isinstance(value, (bytes, bytearray)):
        raise InvalidProof(f"{what} must be bytes")
    return bytes(value)


def _proof_arg(proof: Sequence[bytes] | None) -> list[bytes]:
    return [_hash_arg(p, "every proof element") for p in (proof or ())]


def _int_arg(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SIZE:
        raise InvalidProof(f"{what} must be an integer in 0..2**63, got {value!r:.40}")
    return value


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes] | None) -> bytes:
    """The root that ``proof`` implies for leaf hash ``leaf`` at ``index`` in a tree of ``size`` (RFC 9162 §2.1.3.2)."""
    index, size = _int_arg(index, "index"), _int_arg(size, "tree size")
    if index >= size:
        raise InvalidProof(f"index {index} is not below the tree size {size}")
    r = _hash_arg(leaf, "the leaf hash")
    fn, sn = index, size - 1
    for p in _proof_arg(proof):
        if sn == 0:
            raise InvalidProof("the proof is longer than the path to the root")
        if fn == sn:  # on the right border: climb the levels where the node has no sibling
            while not fn & 1:
                fn >>= 1
                sn >>= 1
        r = node_hash(p, r) if fn & 1 else node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("the proof is shorter than the path to the root")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes] | None, root: bytes) -> None:
    """Raise ``InvalidProof`` unless ``proof`` puts leaf hash ``leaf`` at ``index`` of the tree ``root`` of ``size``."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise InvalidProof(f"the inclusion proof of leaf {index} does not lead to the root of size {size}")


def verify_subtree_inclusion(index: int, start: int, end: int, leaf: bytes, proof: Sequence[bytes] | None,
                             root: bytes) -> None:
    """Raise ``InvalidProof`` unless ``proof`` puts ``leaf`` at ``index`` of subtree ``[start, end)`` with ``root``."""
    index, start, end = _int_arg(index, "index"), _int_arg(start, "start"), _int_arg(end, "end")
    if start >= end or not is_valid_subtree(start, end):
        raise InvalidProof(f"[{start}, {end}) is not a non-empty subtree")
    if not start <= index < end:
        raise InvalidProof(f"index {index} is outside the subtree [{start}, {end})")
    if root_from_inclusion(index - start, end - start, leaf, proof) != root:
        raise InvalidProof(f"the inclusion proof of leaf {index} does not lead to the subtree root")


def _root_from_subtree(start: int, end: int, size: int, proof: list[bytes], sub_root: bytes) -> bytes:
    """The tree root implied by a proof that ``[start, end)`` with ``sub_root`` is part of the tree of ``size``.

    RFC 9162 §2.1.4.2 generalised: ``fn``/``sn`` walk the paths of leaves ``end - 1`` and ``size - 1`` from the
    proof's first level; ``sr`` rebuilds the tree root from every element, ``fr`` rebuilds the subtree root
    from the left siblings below the subtree's own height ``h`` (above it they are outside the subtree).
    """
    h = (end - 1 - start).bit_length()
    known = end - start == 1 << h or end == size  # the subtree is a node of the tree: its hash seeds the walk
    if known:
        level, seed, rest = h, sub_root, proof
    else:
        if not proof:
            raise InvalidProof("the proof is empty")
        level = ((end - start) & -(end - start)).bit_length() - 1
        seed, rest = proof[0], proof[1:]
    fn, sn = (end - 1) >> level, (size - 1) >> level
    fr = sr = seed
    for c in rest:
        if sn == 0:
            raise InvalidProof("the proof is longer than the path to the root")
        if fn == sn:
            while not fn & 1:
                fn >>= 1
                sn >>= 1
                level += 1
        if fn & 1:
            sr = node_hash(c, sr)
            if level < h:
                fr = node_hash(c, fr)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
        level += 1
    if sn != 0:
        raise InvalidProof("the proof is shorter than the path to the root")
    if not known and fr != sub_root:
        raise InvalidProof(f"the proof does not rebuild the root of [{start}, {end})")
    return sr


def root_from_consistency(size1: int, size2: int, proof: Sequence[bytes] | None, root1: bytes) -> bytes:
    """The root of size ``size2`` that ``proof`` implies from the tree ``root1`` of ``size1``; checks ``root1``."""
    size1, size2 = _int_arg(size1, "size1"), _int_arg(size2, "size2")
    if size2 < size1:
        raise InvalidProof(f"size2 {size2} is below size1 {size1}")
    if size1 == 0:
        raise InvalidProof("a consistency proof from the empty tree proves nothing")
    hashes = _proof_arg(proof)
    r1 = _root_arg(root1, "root1")
    if size1 == size2:
        if hashes:
            raise InvalidProof("equal sizes need an empty proof")
        return r1
    return _root_from_subtree(0, size1, size2, hashes, r1)


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes] | None, root1: bytes, root2: bytes) -> None:
    """Raise ``InvalidProof`` unless the tree ``root2`` of ``size2`` extends the tree ``root1`` of ``size1``."""
    if root_from_consistency(size1, size2, proof, root1) != root2:
        raise InvalidProof(f"the consistency proof from size {size1} does not lead to the root of size {size2}")


def verify_subtree_consistency(start: int, end: int, size: int, proof: Sequence[bytes] | None, sub_root: bytes,
                               root: bytes) -> None:
    """Raise ``InvalidProof`` unless subtree ``[start, end)`` with ``sub_root`` is part of the tree ``root``."""
    start, end, size = _int_arg(start, "start"), _int_arg(end, "end"), _int_arg(size, "size")
    if not is_valid_subtree(start, end):
        raise InvalidProof(f"[{start}, {end}) is not a subtree")
    if end > size:
        raise InvalidProof(f"the subtree end {end} is beyond the tree size {size}")
    hashes = _proof_arg(proof)
    if start == end:  # the empty subtree is part of every tree; nothing binds the tree root
        if hashes:
            raise InvalidProof("an empty subtree needs an empty proof")
        if sub_root != EMPTY_ROOT:
            raise InvalidProof("the root of an empty subtree is the hash of the empty string")
        return
    if _root_from_subtree(start, end, size, hashes, _root_arg(sub_root, "the subtree root")) != root:
        raise InvalidProof(f"the proof of [{start}, {end}) does not lead to the root of size {size}")


# ---- C2SP tlog-tiles ------------------------------------------------------------------------------------


def tile_of(level: int, index: int) -> tuple[int, int, int, int]:
    """Where node ``(level, index)`` lives: (tile level, tile index, row inside the tile, offset in the row)."""
    t, row = divmod(level, TILE_HEIGHT)
    span = TILE_HEIGHT - row  # a tile holds 256 >> row nodes of its row
    return t, index >> span, row, index & ((1 << span) - 1)


def tile_width(tile_level: int, tile_index: int, size: int) -> int:
    """Width (hashes in row 0) of tile ``(tile_level, tile_index)`` in the tree of ``size``; 0 if absent."""
    base = size >> (TILE_HEIGHT * tile_level)  # nodes at the tile's row-0 level
    return max(0, min(TILE_WIDTH, base - tile_index * TILE_WIDTH))


def partial_tiles(size: int) -> list[tuple[int, int, int]]:
    """The partial tiles ``(level, index, width)`` a tree of ``size`` has (C2SP: one per level at most)."""
    out = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        base = size >> (TILE_HEIGHT * level)
        if base % TILE_WIDTH:
            out.append((level, base // TILE_WIDTH, base % TILE_WIDTH))
        level += 1
    return out


def _index_path(n: int) -> str:
    parts = []
    while True:
        n, rem = divmod(n, 1000)
        parts.append(f"{rem:03d}")
        if n == 0:
            break
    return "/".join(f"x{p}" for p in reversed(parts[1:])) + ("/" if len(parts) > 1 else "") + parts[0]


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]`` (or ``tile/entries/...`` with ``level="entries"``), relative to the log prefix."""
    if not 0 <= index < MAX_SIZE or not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"no tile {index} of width {width}")
    if level != "entries" and not (isinstance(level, int) and 0 <= level <= 63):
        raise ValueError(f"tile level must be 0..63 or 'entries', got {level!r}")
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{_index_path(index)}{suffix}"


_TILE_RE = re.compile(r"^tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?$")


@dataclass(frozen=True)
class TileRef:
    """A parsed tile path: ``level`` is an int or ``"entries"``; ``width`` 256 for a full tile."""

    level: int | str
    index: int
    width: int = TILE_WIDTH


def parse_tile_path(path: str) -> TileRef:
    """Parse ``tile/...`` strictly (no leading zeros, 3-digit groups, width 1..255); raises ``ValueError``."""
    m = _TILE_RE.match(path)
    if m is None:
        raise ValueError(f"not a tile path: {path[:120]!r}")
    level_s, index_s, width_s = m.groups()
    level: int | str = level_s if level_s == "entries" else int(level_s)
    if isinstance(level, int) and level > 63:
        raise ValueError(f"tile level must be 0..63, got {level}")
    index = int(index_s.replace("x", "").replace("/", ""))
    width = TILE_WIDTH if width_s is None else int(width_s)
    if width_s is not None and width >= TILE_WIDTH:
        raise ValueError(f"a partial tile is 1..255 wide, got {width}")
    if tile_path(level, index, width) != path:  # e.g. a leading x000 group
        raise ValueError(f"non-canonical tile path: {path[:120]!r}")
    return TileRef(level, index, width)


def row_offsets(width: int) -> list[int]:
    """Byte offset of each row (0..8) inside a stored tile of ``width``: row r holds ``width >> r`` hashes."""
    out, pos = [], 0
    for row in range(TILE_HEIGHT + 1):
        out.append(pos)
        pos += (width >> row) * HASH_SIZE
    return out


def stored_tile_size(width: int) -> int:
    """Bytes of a stored tile of ``width``: rows 0..7 (row 8 is row 0 of the tile above)."""
    return row_offsets(width)[TILE_HEIGHT]


@dataclass
class _Tile:
    index: int
    rows: list[list[bytes]] = field(default_factory=lambda: [[] for _ in range(TILE_HEIGHT)])


@dataclass(frozen=True)
class StoredTile:
    """One tile as the store keeps it: ``data`` = rows 0..7 concatenated (``row_offsets``)."""

    level: int
    index: int
    width: int
    data: bytes
    offsets: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "offsets", tuple(row_offsets(self.width)))

    def row0(self, width: int | None = None) -> bytes:
        """The served tile: the first ``width`` hashes of row 0 (a prefix is the tile at an earlier size)."""
        w = self.width if width is None else width
        if not 1 <= w <= self.width:
            raise ValueError(f"tile {self.level}/{self.index} has width {self.width}, asked for {w}")
        return self.data[: w * HASH_SIZE]

    def node(self, row: int, offset: int) -> bytes:
        """The hash at ``offset`` of ``row``; ``IndexError`` when the tile does not hold it (yet)."""
        if not 0 <= offset < self.width >> row:
            raise IndexError(f"tile {self.level}/{self.index} (width {self.width}) has no node {row}/{offset}")
        pos = self.offsets[row] + offset * HASH_SIZE
        return self.data[pos: pos + HASH_SIZE]


def decode_tile(level: int, index: int, width: int, data: bytes) -> StoredTile:
    """A ``StoredTile`` from stored bytes, with its length checked."""
    if not 1 <= width <= TILE_WIDTH or len(data) != stored_tile_size(width):
        raise ValueError(f"tile {level}/{index}: {len(data)} bytes do not fit width {width}")
    return StoredTile(level, index, width, bytes(data))


class TileBuilder:
    """Appends leaf hashes and keeps the rightmost (partial) tile of every level in memory.

    ``append`` returns nothing; ``take_dirty`` hands back every tile completed or changed since the last
    call (full tiles once, the partial ones in their latest state), so the store writes O(1) tiles per
    level per batch. ``root()`` is the tree head; ``node`` reads any perfect node still in memory.
    Resume after a restart with ``TileBuilder.resume(size, partial)`` from the stored partial tiles.
    """

    def __init__(self) -> None:
        self.size = 0
        self._open: list[_Tile] = []  # per level, the rightmost tile
        self._dirty: dict[tuple[int, int], _Tile] = {}
        self._full: list[StoredTile] = []

    @classmethod
    def resume(cls, size: int, partial: Iterable[StoredTile]) -> TileBuilder:
        """Rebuild the in-memory state of a tree of ``size`` from its stored partial tiles."""
        b = cls()
        b.size = size
        by_level = {t.level: t for t in partial}
        level = 0
        while size >> (TILE_HEIGHT * level):
            base = size >> (TILE_HEIGHT * level)
            index, width = divmod(base, TILE_WIDTH)
            tile = _Tile(index)
            if width:
                stored = by_level.get(level)
                if stored is None or stored.index != index or stored.width < width:
                    raise ValueError(f"missing partial tile {level}/{index} of width {width} for size {size}")
                for row in range(TILE_HEIGHT):
                    tile.rows[row] = [stored.node(row, i) for i in range(width >> row)]
            b._open.append(tile)
            level += 1
        return b

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash at index ``size``."""
        self._push(0, leaf)
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def _push(self, level: int, h: bytes) -> None:
        while True:
            if level == len(self._open):
                self._open.append(_Tile(0))
            tile = self._open[level]
            rows = tile.rows
            rows[0].append(h)
            row = 0
            while len(rows[row]) % 2 == 0 and row + 1 < TILE_HEIGHT:
                rows[row + 1].append(node_hash(rows[row][-2], rows[row][-1]))
                row += 1
            if len(rows[0]) < TILE_WIDTH:
                self._dirty[(level, tile.index)] = tile
                return
            top = rows[TILE_HEIGHT - 1]
            self._full.append(self._freeze(level, tile))
            self._dirty.pop((level, tile.index), None)
            self._open[level] = _Tile(tile.index + 1)
            h = node_hash(top[0], top[1])
            level += 1

    @staticmethod
    def _freeze(level: int, tile: _Tile) -> StoredTile:
        return StoredTile(level, tile.index, len(tile.rows[0]), b"".join(b"".join(r) for r in tile.rows))

    def take_dirty(self) -> list[StoredTile]:
        """Tiles to write since the last call: the completed full ones, then the changed partial ones."""
        out = self._full
        out.extend(self._freeze(level, t) for (level, _), t in sorted(self._dirty.items()) if t.rows[0])
        self._full, self._dirty = [], {}
        return out

    def node(self, level: int, index: int) -> bytes:
        """A perfect node held in the open tiles (the right border); ``KeyError`` otherwise."""
        t, tile_index, row, offset = tile_of(level, index)
        if t < len(self._open) and self._open[t].index == tile_index and offset < len(self._open[t].rows[row]):
            return self._open[t].rows[row][offset]
        raise KeyError((level, index))

    def root(self) -> bytes:
        """The tree head of the current size (only open-tile nodes are needed)."""
        return tree_root(self.size, self.node)

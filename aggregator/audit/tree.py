"""RFC 6962 tree recomputed from the entries, one leaf at a time, as an auditor needs it.

Why streaming: an audit of 10^6 entries must not hold the tree. A compact range (the stack of perfect
subtrees covering the leaves so far, at most 64 hashes) gives the root at the current size at any moment,
so the roots at every size a checkpoint or a ledger named (``snapshots``) come out in the same pass. Every
completed perfect subtree of height ``8 * l`` is the hash a level-``l`` tile holds at that position, so the
served tiles are checked against the recomputation as the pass goes (``tile_hashes``). Pure.

Hashing is the project's (``envelope.merkle``, RFC 6962 §2.1): leaf = SHA-256(0x00 || entry), node =
SHA-256(0x01 || left || right), the empty tree's root = SHA-256 of nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from envelope.merkle import EMPTY_ROOT, leaf_hash, node_hash

__all__ = ["EMPTY_ROOT", "StreamingTree", "leaf_hash", "node_hash", "root_of"]


class StreamingTree:
    """Append leaf hashes; read the root at any size passed in ``snapshot_sizes``; collect tile hashes."""

    def __init__(self, snapshot_sizes: Iterable[int] = ()) -> None:
        self.size = 0
        self._stack: list[tuple[int, bytes]] = []  # (height, hash), heights strictly decreasing
        self._want = set(snapshot_sizes)
        self.snapshots: dict[int, bytes] = {}
        # level -> {position at that level: hash} for levels >= 1, filled as subtrees complete
        self.tile_hashes: dict[int, dict[int, bytes]] = {}
        if 0 in self._want:
            self.snapshots[0] = EMPTY_ROOT

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (``leaf_hash(entry)``)."""
        self.size += 1
        height, node = 0, leaf
        stack = self._stack
        while stack and stack[-1][0] == height:
            node = node_hash(stack.pop()[1], node)
            height += 1
            if height % 8 == 0:
                level = height // 8
                self.tile_hashes.setdefault(level, {})[(self.size >> height) - 1] = node
        stack.append((height, node))
        if self.size in self._want:
            self.snapshots[self.size] = self.root()

    def root(self) -> bytes:
        """The RFC 6962 root of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node

    def tile_hash(self, level: int, position: int) -> bytes | None:
        """The hash at ``position`` of level ``level`` (>= 1): the root of entries
        ``[position * 256**level, (position + 1) * 256**level)``, once all of them were appended."""
        return self.tile_hashes.get(level, {}).get(position)

    def forget_below(self, level: int, position: int) -> None:
        """Drop remembered level hashes before ``position`` (they were checked): bounded memory."""
        hashes = self.tile_hashes.get(level)
        if hashes:
            for p in [p for p in hashes if p < position]:
                del hashes[p]


def root_of(entries: Iterable[bytes]) -> bytes:
    """The RFC 6962 root over ``entries`` (for tests and small logs)."""
    tree = StreamingTree()
    for e in entries:
        tree.append(leaf_hash(e))
    return tree.root()



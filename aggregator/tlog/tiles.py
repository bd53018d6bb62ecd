"""Tree nodes from the store's tiles, for proofs: O(log n) tile reads, full tiles cached forever.

A full tile never changes, so it is cached (bounded LRU); a partial tile only grows, and any prefix of it
is the same at every later size, so a cached partial tile answers for the nodes it holds and is re-read
only when a node beyond its width is asked for.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from aggregator.errors import LogError
from envelope.merkle import HASH_SIZE, TILE_HEIGHT, TILE_WIDTH, StoredTile

TileRead = Callable[[int, int], "StoredTile | None"]


class TileCache:
    """``node(level, index)`` over stored tiles (a ``NodeReader`` for ``envelope.merkle``)."""

    def __init__(self, read: TileRead, max_tiles: int = 4096) -> None:
        self._read = read
        self._max = max_tiles
        self._tiles: OrderedDict[tuple[int, int], StoredTile] = OrderedDict()
        self.reads = 0  # tiles read from the store (for tests and the bench)

    def tile(self, level: int, index: int, min_width: int = 1) -> StoredTile:
        """The tile, at least ``min_width`` wide; ``LogError`` when the store does not have it."""
        key = (level, index)
        t = self._tiles.get(key)
        if t is not None and t.width >= min_width:
            self._tiles.move_to_end(key)
            return t
        self.reads += 1
        t = self._read(level, index)
        if t is None or t.width < min_width:
            raise LogError(f"the store has no tile {level}/{index} of width >= {min_width}: the log is incomplete")
        self._tiles[key] = t
        if len(self._tiles) > self._max:
            self._tiles.popitem(last=False)
        return t

    def node(self, level: int, index: int) -> bytes:
        t, row = divmod(level, TILE_HEIGHT)
        span = TILE_HEIGHT - row
        tile_index, offset = index >> span, index & ((1 << span) - 1)
        tile = self._tiles.get((t, tile_index))  # the hot path of every proof: no LRU bookkeeping on a hit
        if tile is None or offset >= tile.width >> row:
            tile = self.tile(t, tile_index, min(TILE_WIDTH, (offset + 1) << row))
        pos = tile.offsets[row] + offset * HASH_SIZE
        return tile.data[pos:pos + HASH_SIZE]

    def forget_partial(self) -> None:
        """Drop cached partial tiles (after the store was rewritten under us, e.g. in tests)."""
        for key in [k for k, t in self._tiles.items() if t.width < TILE_WIDTH]:
            del self._tiles[key]

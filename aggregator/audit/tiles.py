"""C2SP tlog-tiles, the client's side: which resources a tree of size ``s`` has, their paths, bundle parsing.

Pure. An auditor fetches, for a verified checkpoint of size ``s``, every entry bundle and every hash tile at
every level (full tiles, then the partial tile of width ``floor(s / 256**l) mod 256``), and checks each served
hash against its own recomputation (``aggregator.audit.tree``). Paths: ``tile/<L>/<N>[.p/<W>]`` and
``tile/entries/<N>[.p/<W>]``, ``<N>`` in zero-padded 3-digit groups, all but the last prefixed ``x``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from envelope.merkle import tile_path

TILE_WIDTH = 256
HASH_SIZE = 32
MAX_LEVEL = 63


@dataclass(frozen=True)
class Tile:
    """One hash tile (``level >= 0``) or entry bundle (``level == -1``) and its width (256 when full)."""

    level: int
    index: int
    width: int

    @property
    def partial(self) -> bool:
        return self.width < TILE_WIDTH

    @property
    def entries(self) -> bool:
        return self.level < 0

    @property
    def path(self) -> str:
        return tile_path("entries" if self.entries else self.level, self.index, self.width)

    @property
    def start(self) -> int:
        """Index of the first hash of this tile at its own level (entry index for level 0 and bundles)."""
        return self.index * TILE_WIDTH


def tiles_for(size: int, level: int) -> Iterator[Tile]:
    """The tiles at ``level`` (-1: entry bundles) that a tree of ``size`` leaves has, in order."""
    hashes = size if level < 0 else size // TILE_WIDTH ** level  # hashes (or entries) at that level
    for n in range(hashes // TILE_WIDTH):
        yield Tile(level, n, TILE_WIDTH)
    if hashes % TILE_WIDTH:
        yield Tile(level, hashes // TILE_WIDTH, hashes % TILE_WIDTH)


def levels_for(size: int) -> list[int]:
    """Hash tile levels a tree of ``size`` has (level ``l`` exists when ``size >= 256**l``)."""
    out = []
    level = 0
    while level <= MAX_LEVEL and size >= TILE_WIDTH ** level and size > 0:
        out.append(level)
        level += 1
    return out


def split_hashes(data: bytes, width: int) -> list[bytes]:
    """A hash tile's bytes as ``width`` hashes; raises ``ValueError`` on a wrong length."""
    if len(data) != width * HASH_SIZE:
        raise ValueError(f"a tile of width {width} is {width * HASH_SIZE} bytes, got {len(data)}")
    return [data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def parse_bundle(data: bytes, width: int) -> list[bytes]:
    """An entry bundle: ``width`` entries, each a big-endian uint16 length then the entry bytes."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ValueError(f"entry bundle truncated in a length prefix at byte {pos}")
        n = int.from_bytes(data[pos:pos + 2], "big")
        if pos + 2 + n > len(data):
            raise ValueError(f"entry bundle truncated: entry {len(out)} needs {n} bytes at byte {pos + 2}")
        out.append(data[pos + 2:pos + 2 + n])
        pos += 2 + n
    if len(out) != width:
        raise ValueError(f"entry bundle holds {len(out)} entries, expected {width}")
    return out

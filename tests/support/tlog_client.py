"""An independent tlog-tiles reader, written from the C2SP specs for the tests (shares no code with the log).

It fetches ``<prefix>/checkpoint``, checks the Ed25519 signature of the log's verifier key (signed-note:
key id = SHA-256(name || 0x0A || 0x01 || key)[:4]), then reads every entry bundle and level-0 tile the
checkpoint needs, checks each entry hashes to its tile hash (RFC 6962: SHA-256(0x00 || entry)), checks
every higher tile hash is the Merkle hash of the full tile below, and recomputes the root from the leaves
by the recursive MTH definition. Slow and simple on purpose.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from dataclasses import dataclass

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return _h(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def tile_url(prefix: str, level: int | str, n: int, width: int) -> str:
    digits = f"{n:d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    path = "/".join([*("x" + g for g in groups[:-1]), groups[-1]])
    return f"{prefix}/tile/{level}/{path}" + ("" if width == 256 else f".p/{width}")


@dataclass
class Checked:
    origin: str
    size: int
    root: bytes
    entries: list[bytes]


class TlogClient:
    def __init__(self, prefix: str, vkey: str) -> None:
        self.prefix = prefix.rstrip("/")
        name, hex_id, key = vkey.split("+", 2)
        raw = base64.b64decode(key)
        assert raw[0] == 1 and len(raw) == 33
        assert _h(name.encode() + b"\n" + raw)[:4].hex() == hex_id
        self.name, self.key_id, self.key = name, bytes.fromhex(hex_id), Ed25519PublicKey.from_public_bytes(raw[1:])
        self.http = httpx.Client(timeout=10, headers={"Accept-Encoding": "gzip, identity"})

    def get(self, url: str) -> httpx.Response:
        r = self.http.get(url)
        r.raise_for_status()
        return r

    def checkpoint(self) -> tuple[str, int, bytes, str]:
        r = self.get(f"{self.prefix}/checkpoint")
        assert r.headers["content-type"].startswith("text/plain")
        text, _, sigs = r.text.rpartition("\n\n")
        body = text + "\n"
        ok = False
        for line in sigs.splitlines():
            dash, name, sig = line.split(" ")
            raw = base64.b64decode(sig)
            if dash == "\u2014" and name == self.name and raw[:4] == self.key_id:
                self.key.verify(raw[4:], body.encode())  # raises on a bad signature
                ok = True
        assert ok, "no signature by the log key"
        origin, size, root = body.splitlines()[:3]
        return origin, int(size), base64.b64decode(root), r.text

    def tile(self, level: int, n: int, width: int) -> list[bytes]:
        data = self.get(tile_url(self.prefix, level, n, width)).content
        assert len(data) == 32 * width, (level, n, width, len(data))
        return [data[i:i + 32] for i in range(0, len(data), 32)]

    def bundle(self, n: int, width: int) -> list[bytes]:
        r = self.get(tile_url(self.prefix, "entries", n, width))
        data = r.content  # httpx undoes Content-Encoding: gzip
        out, pos = [], 0
        while pos < len(data):
            length = int.from_bytes(data[pos:pos + 2], "big")
            out.append(data[pos + 2:pos + 2 + length])
            pos += 2 + length
        assert pos == len(data)
        return out

    def check(self) -> Checked:
        """Everything the checkpoint commits to, verified; raises AssertionError on any discrepancy."""
        origin, size, root, _ = self.checkpoint()
        entries: list[bytes] = []
        leaves: list[bytes] = []
        for n in range((size + 255) // 256):
            width = min(256, size - n * 256)
            bundle = self.bundle(n, width)
            assert len(bundle) == width, f"bundle {n} has {len(bundle)} entries, expected {width}"
            hashes = self.tile(0, n, width)
            for i, (e, h) in enumerate(zip(bundle, hashes, strict=True)):
                assert _h(b"\x00" + e) == h, f"entry {n * 256 + i} does not hash to its tile hash"
            entries += bundle
            leaves += hashes
        level, below = 1, leaves
        while len(below) >= 256:  # every level-L tile hash is the MTH of a full tile of level L-1
            full = len(below) // 256
            above: list[bytes] = []
            for n in range((full + 255) // 256):
                above += self.tile(level, n, min(256, full - n * 256))
            assert above == [mth(below[i * 256:(i + 1) * 256]) for i in range(full)], f"level {level} tiles"
            below, level = above, level + 1
        assert mth(leaves) == root, "the entries do not hash to the checkpoint root"
        return Checked(origin, size, root, entries)


def gunzip_if(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data

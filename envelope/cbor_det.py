"""Deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding) for headers and payloads.

cbor2's ``canonical=True`` sorts map keys shortest-first (the older RFC 7049 rule); the profile sorts by the
bytewise order of the encoded keys so that known-answer vectors can be reproduced by any conforming encoder.
Scalars are delegated to cbor2 in canonical mode (shortest integer and float forms).
"""

from __future__ import annotations

from typing import Any

import cbor2


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([(major << 5) | n])
    if n < 0x100:
        return bytes([(major << 5) | 24, n])
    if n < 0x10000:
        return bytes([(major << 5) | 25]) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes([(major << 5) | 26]) + n.to_bytes(4, "big")
    return bytes([(major << 5) | 27]) + n.to_bytes(8, "big")


def bstr(data: bytes) -> bytes:
    """Encode a byte string (major type 2) without going through cbor2: hot path of sealing."""
    return _head(2, len(data)) + data


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` deterministically: maps sorted by encoded key bytes, shortest scalar forms."""
    t = type(obj)
    if t is int:
        if 0 <= obj < 2**64:
            return _head(0, obj)
        if -(2**64) <= obj < 0:
            return _head(1, -1 - obj)
        big: bytes = cbor2.dumps(obj, canonical=True)
        return big
    if t is str:
        raw: bytes = obj.encode("utf-8")
        return _head(3, len(raw)) + raw
    if isinstance(obj, dict):
        items = sorted((dumps(k), dumps(v)) for k, v in obj.items())
        return _head(5, len(items)) + b"".join(k + v for k, v in items)
    if isinstance(obj, (list, tuple)):
        return _head(4, len(obj)) + b"".join(dumps(v) for v in obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bstr(bytes(obj))
    encoded: bytes = cbor2.dumps(obj, canonical=True)
    return encoded

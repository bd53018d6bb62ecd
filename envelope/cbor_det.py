"""Deterministic CBOR (RFC 8949 §4.2.1 core deterministic encoding) for headers and payloads.

cbor2's ``canonical=True`` sorts map keys shortest-first (the older RFC 7049 rule); the profile sorts by the
bytewise order of the encoded keys so that known-answer vectors can be reproduced by any conforming encoder.
Integers, strings, floats (shortest of half/single/double that keeps the value, NaN as ``f97e00``), booleans
and null are encoded here directly: sealing is on the agent's hot path and a ``cbor2.dumps`` call per float
cost more than the signature. Big integers and any other type are delegated to cbor2 in canonical mode.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import cbor2

from envelope.limits import DEFAULT_LIMITS

_U64 = 2**64
_pack_e = struct.Struct(">e").pack
_unpack_e = struct.Struct(">e").unpack
_pack_f = struct.Struct(">f").pack
_unpack_f = struct.Struct(">f").unpack
_pack_d = struct.Struct(">d").pack


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


def tstr(text: str) -> bytes:
    """Encode a text string (major type 3)."""
    raw = text.encode("utf-8")
    return _head(3, len(raw)) + raw


def uint(n: int) -> bytes:
    """Encode a non-negative integer below 2**64 (major type 0); larger ones go through ``dumps``."""
    return _head(0, n) if 0 <= n < _U64 else dumps(n)


def float_(x: float) -> bytes:
    """Shortest of half, single and double precision that decodes to the same value (RFC 8949 §4.2.1)."""
    if math.isnan(x):  # the one canonical quiet NaN, as cbor2 writes it
        return b"\xf9\x7e\x00"
    if math.isinf(x):
        return b"\xf9\x7c\x00" if x > 0 else b"\xf9\xfc\x00"
    try:
        half = _pack_e(x)
        if _unpack_e(half)[0] == x:
            return b"\xf9" + half
    except OverflowError:
        pass
    try:
        single = _pack_f(x)
        if _unpack_f(single)[0] == x:
            return b"\xfa" + single
    except OverflowError:
        pass
    return b"\xfb" + _pack_d(x)


def _int(obj: int) -> bytes:
    if 0 <= obj < _U64:
        return _head(0, obj)
    if -_U64 <= obj < 0:
        return _head(1, -1 - obj)
    big: bytes = cbor2.dumps(obj, canonical=True)
    return big


_key_cache: dict[str, bytes] = {}
_KEY_CACHE_MAX = 4096


def _map(obj: dict[Any, Any]) -> bytes:
    """A map with its pairs in the bytewise order of the encoded keys; text keys are cached (payload keys repeat)."""
    items = []
    cache = _key_cache
    for k, v in obj.items():
        kb = cache.get(k) if type(k) is str else None
        if kb is None:
            kb = dumps(k)
            if type(k) is str and len(cache) < _KEY_CACHE_MAX:
                cache[k] = kb
        items.append((kb, dumps(v)))
    items.sort(key=_first)
    return _head(5, len(items)) + b"".join([k + v for k, v in items])


def _first(item: tuple[bytes, bytes]) -> bytes:
    return item[0]


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` deterministically: maps sorted by encoded key bytes, shortest scalar forms."""
    t = type(obj)
    if t is str:
        raw: bytes = obj.encode("utf-8")
        return _head(3, len(raw)) + raw
    if t is int:
        return _int(obj)
    if t is float:
        return float_(obj)
    if t is dict or isinstance(obj, dict):
        return _map(obj)
    if t is list or t is tuple:
        return _head(4, len(obj)) + b"".join([dumps(v) for v in obj])
    if t is bool:
        return b"\xf5" if obj else b"\xf4"
    if obj is None:
        return b"\xf6"
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bstr(bytes(obj))
    if isinstance(obj, (list, tuple)):
        return _head(4, len(obj)) + b"".join([dumps(v) for v in obj])
    encoded: bytes = cbor2.dumps(obj, canonical=True)
    return encoded


_MIN_FOR_AI = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}
# Simple values a payload may hold: false, true, null, and the three float widths.
_DATA_SIMPLE = frozenset({20, 21, 22, 25, 26, 27})


def check_strict(data: bytes, *, max_depth: int = DEFAULT_LIMITS.max_cbor_depth, tags: bool = True) -> None:
    """Raise ``ValueError`` unless ``data`` is exactly one well-formed CBOR item in the profile's strict form.

    Strict form: definite lengths, every integer and length in its shortest head, no duplicate map keys, no
    bytes after the item, nesting at most ``max_depth`` deep. RFC 9052 §9 forbids processing a map that
    repeats a label (two parsers could read different values from the same signed bytes); cbor2 keeps the
    last one silently and ignores trailing bytes, so this runs before cbor2 sees untrusted bytes. Map key
    order is not checked: an encoder that sorts keys another way (cbor2's canonical mode) still produces
    records that verify. ``tags=False`` also refuses every tag (a protected header of the profile has none).
    """
    end = _walk(data, 0, 0, max_depth, _RULES_STRICT if tags else _RULES_NO_TAGS)
    if end != len(data):
        raise ValueError(f"{len(data) - end} byte(s) after the end of the CBOR item")


def item_end(data: bytes, pos: int, *, max_depth: int = DEFAULT_LIMITS.max_cbor_depth) -> int:
    """The offset just past the strict-form item that starts at ``pos``; raises ``ValueError``."""
    return _walk(data, pos, 0, max_depth, _RULES_STRICT)


def check_payload(data: bytes, *, max_depth: int = DEFAULT_LIMITS.max_payload_depth) -> None:
    """Raise ``ValueError`` unless ``data`` is a payload of the profile (docs/envelope.md §5).

    A payload is a map in the strict form of ``check_strict``, nested at most ``max_depth`` deep, holding
    only data: integers, floats, text (valid UTF-8), bytes, booleans, null, arrays and maps whose keys are
    text. No tags (cbor2 would turn tags 28/29 into shared, even cyclic, objects and others into dates,
    decimals or sets) and no other simple values (``undefined``), so every consumer reads the same values.
    """
    if not data or data[0] >> 5 != 5:
        kind = "nothing" if not data else _MAJOR_NAMES[data[0] >> 5]
        raise ValueError(f"payload must be a CBOR map, got {kind}")
    end = _walk(data, 0, 0, max_depth, _RULES_DATA)
    if end != len(data):
        raise ValueError(f"{len(data) - end} byte(s) after the end of the payload")


_MAJOR_NAMES = ("an unsigned integer", "a negative integer", "a byte string", "a text string", "an array",
                "a map", "a tag", "a simple value or float")


_RULES_STRICT = 0  # check_strict
_RULES_NO_TAGS = 1  # check_strict(tags=False)
_RULES_DATA = 2  # check_payload: no tags, text keys, data simple values, valid UTF-8


def _walk(data: bytes, pos: int, depth: int, max_depth: int, rules: int) -> int:
    """Check the item at ``pos``; return the offset just past it, under ``rules`` (one of ``_RULES_*``)."""
    data_only = rules == _RULES_DATA
    if depth > max_depth:
        raise ValueError(f"CBOR nested deeper than {max_depth} levels")
    size = len(data)
    if pos >= size:
        raise ValueError("CBOR item truncated")
    ib = data[pos]
    major, ai = ib >> 5, ib & 0x1F
    pos += 1
    if major == 7 and data_only and ai not in _DATA_SIMPLE:
        raise ValueError(f"simple value {ai if ai < 24 else 'of two bytes'} is not allowed in a payload "
                         "(only false, true, null and floats)")
    if ai < 24:
        arg = ai
    elif ai < 28:
        n = 1 << (ai - 24)
        if pos + n > size:
            raise ValueError("CBOR item truncated")
        arg = int.from_bytes(data[pos:pos + n], "big")
        pos += n
        if major == 7:
            if ai == 24 and arg < 32:
                raise ValueError(f"invalid two-byte simple value {arg}")
            return pos
        if arg < _MIN_FOR_AI[ai]:
            raise ValueError(f"integer or length {arg} not in its shortest form (additional info {ai})")
    elif ai == 31:
        raise ValueError("indefinite-length CBOR items are not accepted")
    else:
        raise ValueError(f"reserved additional information value {ai}")
    if major <= 1 or major == 7:
        return pos
    if major <= 3:
        if arg > size - pos:
            raise ValueError("CBOR string truncated")
        if major == 3 and data_only:
            try:
                data[pos:pos + arg].decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"text string is not valid UTF-8: {e.reason}") from e
        return pos + arg
    if major == 6:
        if rules:
            raise ValueError(f"tag {arg} is not allowed {'in a payload' if data_only else 'here'}")
        return _walk(data, pos, depth + 1, max_depth, rules)
    if arg > size - pos:
        raise ValueError("CBOR container truncated")
    if major == 4:
        for _ in range(arg):
            pos = _walk(data, pos, depth + 1, max_depth, rules)
        return pos
    seen: set[bytes] = set()
    for _ in range(arg):
        start = pos
        if data_only and (pos >= size or data[pos] >> 5 != 3):
            raise ValueError("payload map keys must be text strings")
        pos = _walk(data, pos, depth + 1, max_depth, rules)
        key = data[start:pos]
        if key in seen:
            raise ValueError(f"map repeats the key {key.hex()[:80]}")
        seen.add(key)
        pos = _walk(data, pos, depth + 1, max_depth, rules)
    return pos

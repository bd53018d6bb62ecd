"""Consistent Overhead Byte Stuffing (COBS), the framing of the serial protocol.

COBS removes every 0x00 from a frame body at a cost of at most one byte per 254, so 0x00 can delimit
frames: after any corruption the receiver resynchronises at the next 0x00. Encoding is canonical (a
final 254-byte run is not followed by an empty block), matching ``firmware_bridge/c/fb_proto.c``
byte for byte; decoding also accepts the non-canonical trailing empty block some encoders emit.
"""

from __future__ import annotations

__all__ = ["cobs_decode", "cobs_encode", "cobs_max_encoded_len"]


def cobs_max_encoded_len(n: int) -> int:
    """Largest COBS encoding of ``n`` bytes (without the 0x00 delimiter)."""
    return n + n // 254 + 1


def cobs_encode(data: bytes) -> bytes:
    """Encode ``data``: the result holds no 0x00 byte; the caller appends the delimiter."""
    out = bytearray()
    parts = bytes(data).split(b"\x00")
    last = len(parts) - 1
    for i, part in enumerate(parts):
        start = 0
        n = len(part)
        while n - start >= 254:
            out.append(0xFF)
            out += part[start : start + 254]
            start += 254
        rest = n - start
        if rest == 0 and n > 0 and i == last:
            break  # canonical: a final full block is not followed by an empty one
        out.append(rest + 1)
        out += part[start:]
    return bytes(out)


def cobs_decode(data: bytes | bytearray | memoryview) -> bytes | None:
    """Decode one COBS block sequence (no delimiter inside); ``None`` when it is malformed.

    Walks the chain of code bytes only (one step per block, not per byte): each code byte after the
    first becomes the 0x00 it stands for, or is removed when it follows a full 0xFF block.
    """
    buf = bytearray(data)
    n = len(buf)
    if n == 0 or 0 in buf:
        return None
    i = 0
    code = buf[0]
    removed: list[int] = []
    while True:
        j = i + code
        if j >= n:
            break
        nxt = buf[j]
        if code == 0xFF:
            removed.append(j)
        else:
            buf[j] = 0
        i = j
        code = nxt
    if j > n:
        return None  # the last block claims more bytes than arrived
    for k in reversed(removed):
        del buf[k]
    del buf[0]
    return bytes(buf)

"""Large sweeps: random byte strings are never accepted, bit flips are always detected.

1-bit flips: exhaustive, every bit of every wire byte (delimiter included) of 10^4 valid frames.
2-bit flips: exhaustive over every pair of bits of 30 frames, plus 10^6 random pairs spread over the 10^4
frames; an exhaustive 2-bit sweep of all 10^4 frames (about 10^9 decodes) is out of reach in Python.
Flips inside a COBS data byte are 1- or 2-bit errors of the body, which CRC-32 detects with certainty at
these lengths (Hamming distance >= 4 below 11 KB); flips of code bytes or delimiters re-frame the bytes and
are caught by COBS, length and CRC checks (a 2^-32 chance each, never seen).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from firmware_bridge import FrameDecoder, FrameEncoder, Heartbeat, Samples
from firmware_bridge.cobs import cobs_decode
from firmware_bridge.codec import decode_body

N_FRAMES = 10_000


def _frames(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    enc = FrameEncoder()
    out = []
    for i in range(n):
        if i % 7 == 0:
            out.append(enc.encode(Heartbeat(int(rng.integers(0, 2**63)), int(rng.integers(0, 9)))))
        else:
            count = int(rng.integers(1, 9))
            out.append(enc.encode(Samples.from_array(0, i * 8000, rng.integers(-2000, 2000, size=(count, 3)))))
    return out


def _accepted(wire: bytes) -> int:
    """Frames a fresh decoder accepts from ``wire`` followed by a delimiter (if the flip ate the real one)."""
    n = 0
    for part in (wire + b"\x00").split(b"\x00"):
        if not part:
            continue
        body = cobs_decode(part)
        if body is None:
            continue
        try:
            decode_body(body)
        except Exception as e:
            assert type(e).__name__ == "FrameError", e
            continue
        n += 1
    return n


@pytest.mark.slow
def test_every_1_bit_flip_of_10k_frames_is_detected() -> None:
    flips = 0
    for wire in _frames(N_FRAMES, 1):
        assert _accepted(wire) == 1
        buf = bytearray(wire)
        for i in range(len(buf)):
            for b in range(8):
                buf[i] ^= 1 << b
                assert _accepted(bytes(buf)) == 0, (wire.hex(), i, b)
                buf[i] ^= 1 << b
                flips += 1
    assert flips > 10**6


@pytest.mark.slow
def test_2_bit_flips_are_detected() -> None:
    frames = _frames(N_FRAMES, 2)
    for wire in frames[:30]:  # exhaustive for these
        buf = bytearray(wire)
        nbits = len(buf) * 8
        for p in range(nbits):
            buf[p // 8] ^= 1 << (p % 8)
            for q in range(p + 1, nbits):
                buf[q // 8] ^= 1 << (q % 8)
                assert _accepted(bytes(buf)) == 0, (wire.hex(), p, q)
                buf[q // 8] ^= 1 << (q % 8)
            buf[p // 8] ^= 1 << (p % 8)
    rnd = random.Random(5)
    for k in range(10**6):
        wire = frames[k % N_FRAMES]
        nbits = len(wire) * 8
        p, q = rnd.sample(range(nbits), 2)
        buf = bytearray(wire)
        buf[p // 8] ^= 1 << (p % 8)
        buf[q // 8] ^= 1 << (q % 8)
        assert _accepted(bytes(buf)) == 0, (wire.hex(), p, q)


@pytest.mark.slow
def test_a_million_random_byte_strings_yield_no_frame_and_no_exception() -> None:
    rnd = random.Random(1234)
    dec = FrameDecoder()
    accepted = 0
    for _ in range(10**6):
        data = rnd.randbytes(rnd.randint(1, 64))
        accepted += len(dec.feed(data + b"\x00"))
    assert accepted == 0
    assert dec.stats.error_total > 10**6  # every non-empty piece was counted


def test_bit_flips_quick_sample() -> None:
    """A fast version for every run: all 1-bit flips of 100 frames."""
    for wire in _frames(100, 3):
        buf = bytearray(wire)
        for i in range(len(buf) * 8):
            buf[i // 8] ^= 1 << (i % 8)
            assert _accepted(bytes(buf)) == 0
            buf[i // 8] ^= 1 << (i % 8)

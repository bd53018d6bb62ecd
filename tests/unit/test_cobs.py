"""COBS: round trips, no zero in the output, the canonical form the C side produces, junk never raises."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge import cobs_decode, cobs_encode
from firmware_bridge.cobs import cobs_max_encoded_len


@given(st.binary(max_size=2000))
def test_round_trip_and_no_zero(data: bytes) -> None:
    enc = cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= cobs_max_encoded_len(len(data))
    assert cobs_decode(enc) == data


@given(st.binary(max_size=600))
def test_decode_of_anything_returns_bytes_or_none(data: bytes) -> None:
    out = cobs_decode(data)
    assert out is None or isinstance(out, bytes)


def test_known_encodings() -> None:
    # the examples of Cheshire & Baker / Wikipedia
    assert cobs_encode(b"") == b"\x01"
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x00\x00") == b"\x01\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs_encode(b"\x11\x00\x00\x00") == b"\x02\x11\x01\x01\x01"
    run = bytes(range(1, 255))  # 254 non-zero bytes: one full block, no trailing empty block
    assert cobs_encode(run) == b"\xff" + run
    assert cobs_encode(b"\x00" + run) == b"\x01\xff" + run
    assert cobs_encode(bytes(range(1, 256))) == b"\xff" + run + b"\x02\xff"


def test_decoder_accepts_the_non_canonical_trailing_block() -> None:
    run = bytes(range(1, 255))
    assert cobs_decode(b"\xff" + run + b"\x01") == run


def test_malformed() -> None:
    assert cobs_decode(b"") is None
    assert cobs_decode(b"\x05\x01\x02") is None  # block longer than the data
    assert cobs_decode(b"\x02\x00") is None  # a delimiter inside


def test_large_random() -> None:
    data = os.urandom(100_000)
    assert cobs_decode(cobs_encode(data)) == data


def test_max_encoded_len_is_exact() -> None:
    """The bound is reached: all-non-zero data is the worst case; at a multiple of 254 bytes the canonical
    form is one byte shorter and the non-canonical form (which decoders accept) reaches it."""
    for n in range(0, 1100):
        worst = b"\x01" * n
        full = n > 0 and n % 254 == 0
        assert len(cobs_encode(worst)) == cobs_max_encoded_len(n) - full, n
        if full:
            assert cobs_decode(cobs_encode(worst) + b"\x01") == worst
    assert cobs_max_encoded_len(1024) == 1029 and isinstance(cobs_max_encoded_len(7), int)


def test_a_full_block_followed_by_a_zero() -> None:
    """254 non-zero bytes then 0x00: the full block carries no implied zero, so the zero needs its own block."""
    run = bytes(range(1, 255))
    assert cobs_encode(run + b"\x00") == b"\xff" + run + b"\x01\x01"
    assert cobs_encode(run + b"\x00\x07") == b"\xff" + run + b"\x01\x02\x07"
    assert cobs_decode(cobs_encode(run + b"\x00")) == run + b"\x00"

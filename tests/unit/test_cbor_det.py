"""Deterministic CBOR (envelope.cbor_det) against RFC 8949 §4.2.1 and against cbor2 as a decoder."""

from __future__ import annotations

import math
import struct
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envelope import cbor_det

HEAD_BOUNDARIES = [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]


@pytest.mark.parametrize("n", HEAD_BOUNDARIES)
def test_unsigned_heads_use_the_shortest_form(n: int) -> None:
    enc = cbor_det.dumps(n)
    size = 1 if n < 24 else 2 if n < 256 else 3 if n < 65536 else 5 if n < 2**32 else 9
    assert len(enc) == size
    assert enc[0] >> 5 == 0
    assert cbor2.loads(enc) == n
    assert enc == cbor2.dumps(n, canonical=True)


@pytest.mark.parametrize("n", HEAD_BOUNDARIES)
def test_negative_heads_use_the_shortest_form(n: int) -> None:
    value = -1 - n
    enc = cbor_det.dumps(value)
    assert enc[0] >> 5 == 1
    assert cbor2.loads(enc) == value
    assert enc == cbor2.dumps(value, canonical=True)


@pytest.mark.parametrize("value", [2**64, -(2**64) - 1, 2**200, -(2**200)])
def test_big_integers_are_bignums(value: int) -> None:
    enc = cbor_det.dumps(value)
    assert enc[0] == (0xC2 if value > 0 else 0xC3)
    assert cbor2.loads(enc) == value


def test_known_encodings_from_rfc_8949_appendix_a() -> None:
    cases: list[tuple[Any, str]] = [
        (0, "00"), (10, "0a"), (23, "17"), (24, "1818"), (100, "1864"), (1000, "1903e8"),
        (1000000, "1a000f4240"), (1000000000000, "1b000000e8d4a51000"), (18446744073709551615, "1bffffffffffffffff"),
        (-1, "20"), (-10, "29"), (-100, "3863"), (-1000, "3903e7"), (0.0, "f90000"), (-0.0, "f98000"),
        (1.0, "f93c00"), (1.1, "fb3ff199999999999a"), (1.5, "f93e00"), (65504.0, "f97bff"), (100000.0, "fa47c35000"),
        (3.4028234663852886e38, "fa7f7fffff"), (1.0e300, "fb7e37e43c8800759c"), (5.960464477539063e-8, "f90001"),
        (math.inf, "f97c00"), (-math.inf, "f9fc00"), (math.nan, "f97e00"), (False, "f4"), (True, "f5"),
        (None, "f6"), (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"), ("", "60"), ("a", "6161"),
        ("IETF", "6449455446"), ("\u00fc", "62c3bc"), ("\u6c34", "63e6b0b4"), ([], "80"), ([1, 2, 3], "83010203"),
        ([1, [2, 3], [4, 5]], "8301820203820405"), ({}, "a0"), ({1: 2, 3: 4}, "a201020304"),
        ({"a": 1, "b": [2, 3]}, "a26161016162820203"), (["a", {"b": "c"}], "826161a161626163"),
    ]
    for value, hexstr in cases:
        assert cbor_det.dumps(value).hex() == hexstr, value


def test_map_keys_sort_bytewise_not_length_first() -> None:
    """RFC 8949 §4.2.1 sorts by encoded bytes: 24 (0x1818) before -1 (0x20); RFC 7049 put -1 first."""
    value = {-1: "n", 24: "t", "a": 0, 1000: "k"}
    enc = cbor_det.dumps(value)
    assert enc.hex() == "a4" + "1818" + "6174" + "1903e8" + "616b" + "20" + "616e" + "6161" + "00"
    assert cbor2.loads(enc) == value
    assert enc != cbor2.dumps(value, canonical=True)  # cbor2's canonical mode is length-first


def test_tuples_encode_as_arrays_and_bytearrays_as_bytes() -> None:
    assert cbor_det.dumps((1, 2)) == cbor_det.dumps([1, 2])
    assert cbor_det.dumps(bytearray(b"ab")) == cbor_det.dumps(b"ab") == cbor_det.dumps(memoryview(b"ab"))


def _pairs(enc: bytes) -> list[bytes]:
    """Encoded keys of a top-level definite map, in order (test helper)."""
    dec = cbor2.loads(enc)
    return [cbor_det.dumps(k) for k in dec]


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.integers(min_value=-(2**40), max_value=2**40), children, max_size=5),
    max_leaves=30,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=400)
@given(json_like)
def test_round_trip_through_cbor2_and_strict_form(value: Any) -> None:
    enc = cbor_det.dumps(value)
    cbor_det.check_strict(enc)  # shortest heads, definite lengths, unique keys, nothing trailing
    assert _same(cbor2.loads(enc), value)
    assert cbor_det.dumps(cbor2.loads(enc)) == enc  # decoding and re-encoding is a fixed point


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=6) | st.integers(min_value=-(2**33), max_value=2**33) | st.binary(max_size=4),
                       st.integers(), min_size=2, max_size=12))
def test_map_keys_are_in_bytewise_order(value: dict[Any, int]) -> None:
    keys = _pairs(cbor_det.dumps(value))
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


@settings(max_examples=2000)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_floats_are_the_shortest_exact_form_and_match_cbor2(x: float) -> None:
    enc = cbor_det.dumps(x)
    assert enc == cbor2.dumps(x, canonical=True)
    back = cbor2.loads(enc)
    assert _same(back, x)
    if len(enc) > 3 and not math.isnan(x):  # nothing shorter would have kept the value
        with pytest.raises((OverflowError, AssertionError)):
            assert struct.unpack(">e", struct.pack(">e", x))[0] == x
    if len(enc) > 5 and not math.isnan(x):
        with pytest.raises((OverflowError, AssertionError)):
            assert struct.unpack(">f", struct.pack(">f", x))[0] == x


@settings(max_examples=300)
@given(st.integers(min_value=-(2**64), max_value=2**64 - 1))
def test_integers_match_cbor2(n: int) -> None:
    assert cbor_det.dumps(n) == cbor2.dumps(n, canonical=True)


@pytest.mark.parametrize("hexstr, why", [
    ("", "truncated"), ("18", "truncated"), ("1817", "shortest"), ("190017", "shortest"), ("5a00000001ff", "shortest"),
    ("62", "truncated"), ("6261", "truncated"), ("9f01ff", "indefinite"), ("5f4101ff", "indefinite"),
    ("a201010102", "repeats"), ("a2a1010101a1010102", "repeats"), ("0101", "after the end"), ("1c", "reserved"),
    ("f818", "simple"), ("c1", "truncated"), ("82010203", "after the end"), ("83", "truncated"),
    ("81" * 70 + "00", "deeper"),
])
def test_check_strict_rejects(hexstr: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        cbor_det.check_strict(bytes.fromhex(hexstr))


def test_check_strict_accepts_floats_of_any_width_and_tags() -> None:
    for hexstr in ("fb3ff8000000000000", "fa3fc00000", "f93e00", "c11a514b67b0", "f820", "d81840"):
        cbor_det.check_strict(bytes.fromhex(hexstr))

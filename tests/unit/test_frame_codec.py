"""Frame codec: encode → decode round trips for every type, the shared vectors, clear encode errors."""

from __future__ import annotations

import dataclasses
import math
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge import (
    MAX_PAYLOAD,
    Config,
    EncodeError,
    ErrorReport,
    Frame,
    FrameDecoder,
    FrameError,
    Heartbeat,
    Hello,
    HelloRequest,
    Ping,
    Pong,
    SampleFormat,
    Samples,
    SensorInfo,
    TimeSync,
    cobs_encode,
    decode_body,
    decode_frame,
    encode_body,
    encode_frame,
)
from tests.vectors.frames import load, message_from_json, python_results

u8 = st.integers(0, 255)
u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
pos_f32 = st.floats(min_value=0.125, max_value=1e6, width=32)
text = st.text(max_size=40)


@st.composite
def sensors(draw: st.DrawFn) -> SensorInfo:
    # The wire holds at most MAX_UNIT (15) UTF-8 bytes; 5 characters can take up to 20.
    unit = draw(st.text(max_size=5).filter(lambda u: len(u.encode()) <= 15))
    return SensorInfo(draw(u8), draw(u8), draw(st.sampled_from(SampleFormat)), draw(st.integers(1, 16)),
                      draw(pos_f32), draw(f32), draw(f32), unit)


@st.composite
def samples(draw: st.DrawFn) -> Samples:
    fmt = draw(st.sampled_from(SampleFormat))
    ch = draw(st.integers(1, 16))
    max_count = (MAX_PAYLOAD - 13) // (ch * fmt.size)
    count = draw(st.integers(1, min(max_count, 40)))
    data = draw(st.binary(min_size=count * ch * fmt.size, max_size=count * ch * fmt.size))
    return Samples(draw(u8), fmt, ch, draw(u64), data)


messages = st.one_of(
    st.builds(
        Hello, st.tuples(u8, u8, u8), u32, u64, st.binary(max_size=16), st.lists(sensors(), max_size=8).map(tuple)
    ),
    samples(),
    st.builds(Heartbeat, u64, u32),
    st.builds(ErrorReport, u16, text),
    st.builds(Pong, u32, u64),
    st.builds(Config, u8, pos_f32),
    st.builds(Ping, u32),
    st.builds(TimeSync, u32, u64),
    st.just(HelloRequest()),
)


def _same(a: Frame, b: Frame) -> bool:
    if isinstance(a, Samples) and isinstance(b, Samples):  # NaN payloads compare by bytes
        return (a.sensor_id, a.fmt, a.channels, a.t_us, a.data) == (b.sensor_id, b.fmt, b.channels, b.t_us, b.data)
    return a == b


@given(messages, u16, u8)
def test_round_trip(msg: Frame, counter: int, flags: int) -> None:
    wire = encode_frame(msg, counter, flags)
    assert wire.endswith(b"\x00") and 0 not in wire[:-1]
    out = decode_frame(wire)
    assert out.counter == counter and out.flags == flags
    assert _same(dataclasses.replace(msg, counter=counter, flags=flags), out)
    streamed = FrameDecoder().feed(wire)
    assert len(streamed) == 1 and _same(streamed[0], out)


VECTORS = load()["vectors"]


@pytest.mark.parametrize("v", [v for v in VECTORS if "message" in v], ids=lambda v: v["name"])
def test_vectors_encode_and_decode(v: dict) -> None:
    msg = message_from_json(v["message"], v["counter"], v["flags"])
    assert encode_body(msg).hex() == v["body"]
    assert encode_frame(msg).hex() == v["wire"]
    assert _same(decode_frame(bytes.fromhex(v["wire"])), msg)
    assert decode_body(bytes.fromhex(v["body"])) == decode_frame(bytes.fromhex(v["wire"]))


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["name"])
def test_vectors_decoder_results(v: dict) -> None:
    assert python_results(bytes.fromhex(v["wire"])) == v["results"]


def test_vector_hello_fields() -> None:
    v = next(v for v in VECTORS if v["name"] == "hello_boot")
    h = decode_frame(bytes.fromhex(v["wire"]))
    assert isinstance(h, Hello)
    assert h.fw_version == (1, 2, 3) and h.boot_id == 0xDEADBEEF and h.flags == 1
    accel = h.sensor(0)
    assert accel is not None and accel.unit == "g" and accel.rate_hz == 1000.0 and accel.scale == 1 / 4096
    temp = h.sensor(7)
    assert temp is not None and temp.unit == "°C" and temp.fmt is SampleFormat.F32


def test_samples_raw_values() -> None:
    s = Samples.from_array(2, 5, np.array([[1, -2], [3, -4]]), SampleFormat.I16)
    out = decode_frame(encode_frame(s))
    assert isinstance(out, Samples) and out.count == 2
    assert out.raw().tolist() == [[1, -2], [3, -4]]


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (Heartbeat(-1), "t_us: expected an integer in"),
        (Ping(2**32), "nonce"),
        (Config(0, 0.0), "rate_hz: expected a finite positive number, got 0.0"),
        (Config(0, math.inf), "rate_hz"),
        (ErrorReport(1, "x" * 201), "at most 200"),
        (Samples(0, SampleFormat.I16, 3, 0, b"\x01\x02\x03"), "multiple of 6"),
        (Samples(0, SampleFormat.I16, 1, 0, b"\x01\x02" * 600), "exceeds the maximum"),
        (Hello((1, 2, 3), 0, 0, b"x" * 17, ()), "uid: expected at most 16"),
        (Hello((1, 2, 3), 0, 0, b"", (SensorInfo(0, 1, SampleFormat.I16, 1, 1.0, 1.0, 0.0, "x" * 16),)), "unit"),
    ],
)
def test_encode_errors_say_what_was_expected(msg: Frame, match: str) -> None:
    with pytest.raises(EncodeError, match=match):
        encode_frame(msg)


def test_encode_counter_range() -> None:
    with pytest.raises(EncodeError, match="counter"):
        encode_frame(Ping(1), 70000)


@pytest.mark.parametrize(
    ("wire", "kind"),
    [
        (b"\x05\x01\x00", "cobs"),
        (b"\x03\x01\x02\x00", "length"),
        (cobs_encode(encode_body(Ping(1))[:-1] + b"\x00") + b"\x00", "crc"),
    ],
)
def test_decode_frame_raises_frame_error_with_kind(wire: bytes, kind: str) -> None:
    with pytest.raises(FrameError) as ei:
        decode_frame(wire)
    assert ei.value.kind == kind
    assert "expected" in str(ei.value)


def test_float_fields_are_float32() -> None:
    out = decode_frame(encode_frame(Config(1, 1000.1)))
    assert isinstance(out, Config)
    assert out.rate_hz == struct.unpack("<f", struct.pack("<f", 1000.1))[0]

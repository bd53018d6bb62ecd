"""The serial decoder: every bytes-like input, the spec's limits, and decode → encode is the identity
(issue 12, item 14).

Property, over >= 10^5 generated frames (valid messages of every type with random fields and extension
bytes, bodies mutated with the CRC made right again so the damage reaches the payload parsers, raw wire
mutations, random payloads, ERROR frames with random text lengths and bytes): each frame is fed to a fresh
``FrameDecoder`` as a randomly chosen bytes-like object (bytes, bytearray, memoryview, a slice of a larger
buffer, array('B'), a memoryview cast to 16-bit items, a numpy array), and

* a frame that decodes encodes back to the same body, and to the same wire bytes when the COBS was
  canonical (the decoder also accepts the non-canonical trailing block, as the spec says);
* a frame that does not decode is counted as exactly one error, and nothing is raised;
* feeding the same bytes in random chunks of random buffer types gives the same frames and counters.
"""

from __future__ import annotations

import array
import random
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from firmware_bridge import (
    Config,
    ErrorReport,
    FrameDecoder,
    Heartbeat,
    Hello,
    HelloRequest,
    Ping,
    Pong,
    SampleFormat,
    Samples,
    SensorInfo,
    TimeSync,
    cobs_decode,
    cobs_encode,
    decode_frame,
    encode_body,
    encode_frame,
)
from firmware_bridge.errors import EncodeError, FrameError
from firmware_bridge.messages import MAX_ERROR_TEXT, Frame
from tests.support.mutants import mutate_bytes

TEXTS = ["", "ok", "sensor timeout: ADXL355 ✓", "é" * 100, "x" * 200, "😀" * 50, "°C", "\x00\x7f"]


def _f32(rng: random.Random, positive: bool = False) -> float:
    v = struct.unpack("<f", struct.pack("<f", rng.choice([1.0, 0.5, 1000.0, 1 / 4096, 3.4e38, 1e-45, -2.5, -0.0])))[0]
    return abs(v) or 1.0 if positive else v


def random_message(rng: random.Random) -> Frame:
    kw: dict[str, Any] = {"counter": rng.randrange(2**16), "flags": rng.choice([0, 0, 1, 0x80, 0xFF])}
    if rng.random() < 0.15:
        kw["extension"] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 12)))
    t = rng.randrange(9)
    if t == 0:
        sensors = tuple(
            SensorInfo(rng.randrange(256), rng.randrange(256), SampleFormat(rng.randint(1, 3)), rng.randint(1, 16),
                       _f32(rng, True), _f32(rng), _f32(rng), rng.choice(["", "g", "°C", "m/s²", "x" * 15]),
                       extension=bytes(rng.randrange(256) for _ in range(rng.choice([0, 0, 0, 3]))))
            for _ in range(rng.randint(0, 8)))
        return Hello((rng.randrange(256), rng.randrange(256), rng.randrange(256)), rng.randrange(2**32),
                     rng.randrange(2**64), bytes(rng.randrange(256) for _ in range(rng.randint(0, 16))), sensors, **kw)
    if t == 1:
        fmt = SampleFormat(rng.randint(1, 3))
        ch = rng.randint(1, 16)
        count = rng.randint(1, max(1, 900 // (ch * fmt.size)))
        data = bytes(rng.randrange(256) for _ in range(count * ch * fmt.size))
        return Samples(rng.randrange(256), fmt, ch, rng.randrange(2**64), data, **kw)
    if t == 2:
        return Heartbeat(rng.randrange(2**64), rng.randrange(2**32), **kw)
    if t == 3:
        return ErrorReport(rng.randrange(2**16), rng.choice(TEXTS), **kw)
    if t == 4:
        return Pong(rng.randrange(2**32), rng.randrange(2**64), **kw)
    if t == 5:
        return Config(rng.randrange(256), _f32(rng, True), **kw)
    if t == 6:
        return Ping(rng.randrange(2**32), **kw)
    if t == 7:
        return TimeSync(rng.randrange(2**32), rng.randrange(2**64), **kw)
    return HelloRequest(**kw)


def _with_crc(head: bytes) -> bytes:
    return head + struct.pack("<I", zlib.crc32(head))


def _error_body(rng: random.Random) -> bytes:
    n = rng.choice([0, 1, 199, 200, 201, 255, rng.randrange(256)])
    text = bytes(rng.choice([0x61, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xFF, 0xED, 0xA0, 0x00])
                 for _ in range(rng.choice([n, n, max(0, n - 1), n + 1])))
    return _with_crc(struct.pack("<BBBH", 1, 0x04, 0, 0) + struct.pack("<HB", 7, n) + text)


def generate(strategy: str, rng: random.Random) -> bytes:
    """Wire bytes (ending with the delimiter) for one generated case."""
    if strategy == "error_text":
        return cobs_encode(_error_body(rng)) + b"\x00"
    if strategy == "random_payload":
        ftype = rng.choice([1, 2, 3, 4, 5, 0x81, 0x82, 0x83, 0x84, 0x06, 0x7F])
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 2, 4, 5, 12, 13, 20, 30, 60])))
        return cobs_encode(_with_crc(struct.pack("<BBBH", 1, ftype, 0, 0) + payload)) + b"\x00"
    body = encode_body(random_message(rng))
    if strategy == "valid":
        wire = cobs_encode(body)
        if cobs_decode(wire + b"\x01") == body and rng.random() < 0.5:
            wire += b"\x01"  # the non-canonical trailing empty block after a final full run
        return wire + b"\x00"
    if strategy == "body":  # damage inside the body, CRC fixed: reaches the payload parsers
        return cobs_encode(_with_crc(mutate_bytes(body[:-4], rng, max_ops=3))) + b"\x00"
    return mutate_bytes(cobs_encode(body) + b"\x00", rng, max_ops=3) + b"\x00"  # "wire": anything at all


def as_buffer(data: bytes, rng: random.Random) -> Any:
    """``data`` as one of the bytes-like types a caller may hand the decoder."""
    k = rng.randrange(7)
    if k == 0:
        return data
    if k == 1:
        return bytearray(data)
    if k == 2:
        return memoryview(data)
    if k == 3:  # a slice of a larger buffer, as a reader with its own ring buffer hands it over
        pad = bytes(rng.randrange(1, 256) for _ in range(3))
        return memoryview(pad + data + pad)[3:3 + len(data)]
    if k == 4:
        return array.array("B", data)
    if k == 5 and len(data) % 2 == 0:
        return memoryview(data).cast("H")
    return np.frombuffer(data, dtype=np.uint8)


STRATEGIES: dict[str, int] = {"valid": 25_000, "body": 30_000, "wire": 20_000, "random_payload": 15_000,
                              "error_text": 10_000}


def _check_part(part: bytes, frames: list[Frame], errors: int, outcomes: Counter[str], where: str) -> None:
    if not part:
        assert not frames and errors == 0, where
        return
    if not frames:
        assert errors == 1, f"{where}: {part.hex()[:120]} neither decoded nor counted ({errors} errors)"
        outcomes["refused"] += 1
        return
    assert len(frames) == 1 and errors == 0, where
    frame = frames[0]
    body = cobs_decode(part)
    assert body is not None
    try:
        again = encode_body(frame)
    except EncodeError as e:  # the decoder let through what the encoder (the spec's ranges) refuses
        pytest.fail(f"{where}: decoded {frame!r:.200} cannot be encoded: {e}")
    assert again == body, f"{where}: {part.hex()[:120]} re-encodes to another body"
    if cobs_encode(body) == part:
        assert encode_frame(frame) == part + b"\x00"
    if isinstance(frame, ErrorReport):
        assert len(frame.text.encode("utf-8")) <= MAX_ERROR_TEXT
    outcomes["decoded"] += 1


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_decoded_frames_re_encode_to_the_same_bytes(strategy: str) -> None:
    outcomes: Counter[str] = Counter()
    for i in range(STRATEGIES[strategy]):
        rng = random.Random(f"{strategy}-{i}")
        wire = generate(strategy, rng)
        dec = FrameDecoder()
        for part in wire.split(b"\x00")[:-1]:
            before = dec.stats.error_total
            try:
                frames = dec.feed(as_buffer(part + b"\x00", rng))
            except Exception as e:
                pytest.fail(f"{strategy} {i}: feed raised {type(e).__name__}: {e}")
            _check_part(part, frames, dec.stats.error_total - before, outcomes, f"{strategy} {i}")
    if strategy == "valid":
        assert outcomes["refused"] == 0, outcomes
    else:
        assert outcomes["refused"] > 0.1 * STRATEGIES[strategy], outcomes
    assert strategy == "wire" or outcomes["decoded"] > 0.05 * STRATEGIES[strategy], outcomes
    print(strategy, dict(outcomes))


def test_chunking_and_buffer_types_do_not_change_the_result() -> None:
    rng = random.Random(14)
    stream = b"".join(generate(rng.choice(list(STRATEGIES)), rng) for _ in range(400))
    whole = FrameDecoder()
    expected = whole.feed(stream)
    assert len(expected) > 100
    for trial in range(20):
        dec = FrameDecoder()
        got: list[Frame] = []
        pos = 0
        while pos < len(stream):
            n = rng.choice([1, 2, 3, 7, 64, 500, 4096])
            got += dec.feed(as_buffer(stream[pos:pos + n], rng))
            pos += n
        assert got == expected, trial
        assert dec.stats.as_dict() == whole.stats.as_dict(), trial


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview, lambda b: memoryview(bytearray(b)),
                                  lambda b: array.array("B", b), lambda b: np.frombuffer(b, np.uint8)])
def test_feed_accepts_every_bytes_like_input(make: Callable[[bytes], Any]) -> None:
    wire = encode_frame(Ping(7, counter=1)) + encode_frame(Heartbeat(5, 0, counter=2))
    dec = FrameDecoder()
    assert dec.feed(make(wire)) == [Ping(7, counter=1), Heartbeat(5, 0, counter=2)]
    assert dec.stats.bytes == len(wire)


def test_feed_refuses_what_is_not_bytes_like() -> None:
    with pytest.raises(TypeError):
        FrameDecoder().feed("text")  # type: ignore[arg-type]


def _error_wire(n: int, text: bytes) -> bytes:
    return cobs_encode(_with_crc(struct.pack("<BBBH", 1, 0x04, 0, 0) + struct.pack("<HB", 1, n) + text)) + b"\x00"


@pytest.mark.parametrize("text, ok", [
    (b"e" * 200, True), ("é".encode() * 100, True), (b"e" * 201, False), (b"e" * 255, False),
    (b"a\xc3(", False), (b"ab\xe2", False), (b"\xed\xa0\x80", False), (b"\xff", False), (b"\xc0\xaf", False),
])
def test_error_text_limits(text: bytes, ok: bool) -> None:
    dec = FrameDecoder()
    frames = dec.feed(_error_wire(len(text), text))
    if ok:
        assert [f.text.encode() for f in frames] == [text]  # type: ignore[union-attr]
        return
    assert frames == [] and dec.stats.errors["payload"] == 1
    with pytest.raises(FrameError) as e:
        decode_frame(_error_wire(len(text), text))
    assert e.value.kind == "payload"


def test_extension_bytes_are_kept() -> None:
    """Bytes a newer sender appends are skipped by this version, and kept: the frame re-encodes the same."""
    msg = Hello((1, 0, 0), 5, 6, b"u", (SensorInfo(0, 1, SampleFormat.I16, 3, 100.0, 1.0, extension=b"\x09"),),
                extension=b"\x01\x02")
    wire = encode_frame(msg)
    assert decode_frame(wire) == msg
    assert encode_frame(decode_frame(wire)) == wire
    assert decode_frame(encode_frame(Heartbeat(1, 2, extension=b"xyz"))).extension == b"xyz"

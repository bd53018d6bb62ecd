"""Streaming decoder: chunking independence, junk counted never raised, resync, lost-frame counting."""

from __future__ import annotations

import os
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import (
    FLAG_BOOT,
    MAX_WIRE,
    Frame,
    FrameDecoder,
    FrameEncoder,
    Heartbeat,
    Hello,
    Ping,
    SampleFormat,
    Samples,
    encode_frame,
)


def _stream(n: int, seed: int) -> tuple[bytes, list[Frame]]:
    rng = np.random.default_rng(seed)
    enc = FrameEncoder()
    wire, msgs = b"", []
    for i in range(n):
        if i % 5 == 4:
            m: Frame = Heartbeat(int(rng.integers(0, 2**40)), i)
        else:
            m = Samples.from_array(0, i * 1000, rng.integers(-300, 300, size=(int(rng.integers(1, 40)), 3)))
        w = enc.encode(m)
        wire += w
        msgs.append(m)
    return wire, msgs


def _decode_chunks(chunks: list[bytes]) -> tuple[list[Frame], dict[str, int]]:
    dec = FrameDecoder()
    out: list[Frame] = []
    for c in chunks:
        out += dec.feed(c)
    return out, dec.stats.as_dict()


def _key(frames: list[Frame]) -> list[tuple[type, int, bytes]]:
    return [(type(f), f.counter, encode_frame(f)) for f in frames]


@settings(max_examples=60)
@given(st.integers(0, 2**32 - 1), st.binary(max_size=300), st.lists(st.integers(0, 4000), max_size=40))
def test_chunking_independence(seed: int, junk: bytes, cuts: list[int]) -> None:
    """Whole, byte by byte and random splits give the same frames and the same counters."""
    wire, _ = _stream(12, seed)
    data = junk + b"\x00" + wire + junk + wire[: len(wire) // 2]
    whole = _decode_chunks([data])
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    bytewise = _decode_chunks([data[i : i + 1] for i in range(len(data))])
    split = _decode_chunks(pieces)
    assert _key(whole[0]) == _key(bytewise[0]) == _key(split[0])
    counters = [{k: v for k, v in c.items() if k != "bytes"} for c in (whole[1], bytewise[1], split[1])]
    assert counters[0] == counters[1] == counters[2]


@settings(max_examples=300)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    dec = FrameDecoder()
    frames = dec.feed(data) + dec.feed(b"\x00")
    pieces = [p for p in (data + b"\x00").split(b"\x00")[:-1] if p]
    # every non-empty piece is either a frame or exactly one counted error
    assert len(frames) + dec.stats.error_total == len(pieces)


def test_round_trip_of_a_long_stream() -> None:
    wire, msgs = _stream(500, 7)
    frames = FrameDecoder().feed(wire)
    assert [encode_frame(f) for f in frames] == [encode_frame(m, i) for i, m in enumerate(msgs)]


def test_first_valid_frame_after_garbage_bursts_is_decoded() -> None:
    rnd = random.Random(3)
    ping = encode_frame(Ping(99), 5)
    for _ in range(2000):
        garbage = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 300)))
        dec = FrameDecoder()
        # no delimiter needed between garbage and the frame: the sender's delimiter before a frame is optional,
        # so give the decoder the stream as a line would carry it after a burst: garbage, then 0x00, then the frame
        frames = dec.feed(garbage + b"\x00" + ping)
        assert frames and frames[-1] == Ping(99, counter=5)


def test_garbage_longer_than_a_frame_is_counted_once_and_skipped() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"\x41" * (MAX_WIRE + 500)) == []
    assert dec.stats.errors["length"] == 1
    assert dec.feed(b"\x41" * 3000) == []
    assert dec.feed(b"\x00" + encode_frame(Ping(1))) == [Ping(1)]
    assert dec.stats.errors["length"] == 1


def test_lost_frames_counted_from_counter_gaps() -> None:
    dec = FrameDecoder()
    wires = [encode_frame(Heartbeat(i), i) for i in range(10)]
    dec.feed(b"".join(w for i, w in enumerate(wires) if i not in (3, 4, 7)))
    assert dec.stats.lost_frames == 3 and dec.stats.frames == 7


def test_corrupt_frames_are_lost_frames_too() -> None:
    dec = FrameDecoder()
    bad = bytearray(encode_frame(Heartbeat(1), 1))
    bad[3] ^= 0x10
    dec.feed(encode_frame(Heartbeat(0), 0) + bytes(bad) + encode_frame(Heartbeat(2), 2))
    assert dec.stats.error_total == 1 and dec.stats.lost_frames == 1


def test_counter_wraps_without_loss() -> None:
    dec = FrameDecoder()
    dec.feed(b"".join(encode_frame(Ping(i), (65530 + i) & 0xFFFF) for i in range(12)))
    assert dec.stats.lost_frames == 0 and dec.stats.sequence_jumps == 0 and dec.stats.frames == 12


def test_boot_hello_restarts_the_counter() -> None:
    dec = FrameDecoder()
    hello = Hello((1, 0, 0), 5, 0, b"", ())
    dec.feed(encode_frame(Ping(0), 500) + encode_frame(hello, 0, FLAG_BOOT) + encode_frame(Ping(1), 1))
    assert dec.stats.lost_frames == 0 and dec.stats.sequence_jumps == 0


def test_counter_restart_without_hello_is_a_jump_not_a_loss() -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame(Ping(0), 1000) + encode_frame(Ping(1), 0))
    assert dec.stats.lost_frames == 0 and dec.stats.sequence_jumps == 1


def test_clear_forgets_partial_frame_and_counter() -> None:
    dec = FrameDecoder()
    w = encode_frame(Ping(1), 10)
    dec.feed(w[:4])
    dec.clear()
    assert dec.feed(encode_frame(Ping(2), 200)) == [Ping(2, counter=200)]
    assert dec.stats.error_total == 0 and dec.stats.lost_frames == 0


def test_random_noise_between_frames_loses_only_touched_frames() -> None:
    rng = random.Random(11)
    enc = FrameEncoder()
    stream, sent = b"", 0
    for i in range(300):
        stream += enc.encode(Samples.from_array(0, i, [[i, -i, 1]], SampleFormat.I16))
        sent += 1
        if i % 10 == 0:
            stream += os.urandom(rng.randint(1, 50)).replace(b"\x00", b"") + b"\x00"
    frames = FrameDecoder().feed(stream)
    assert len(frames) == sent

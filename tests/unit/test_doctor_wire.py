"""The doctor's MQTT packets (pure): variable byte integers, CONNECT/PUBLISH/DISCONNECT bytes, CONNACK and
PUBACK decoding, and a reader that gives the same packets whether bytes come whole, one at a time or with
trailing data (the h11 way)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.doctor import mqtt_wire as mw


@given(st.integers(0, 268_435_455))
def test_varint_round_trips_in_its_shortest_form(n: int) -> None:
    b = mw.encode_varint(n)
    assert 1 <= len(b) <= 4
    assert mw.decode_varint(b + b"\x99", 0) == (n, len(b))
    assert mw.decode_varint(b[:-1], 0) is None, "a cut integer needs more data"


def test_varint_limits() -> None:
    with pytest.raises(ValueError):
        mw.encode_varint(268_435_456)
    with pytest.raises(mw.MalformedPacket, match="longer than 4"):
        mw.decode_varint(b"\xff\xff\xff\xff\x01", 0)
    with pytest.raises(mw.MalformedPacket, match="shortest"):
        mw.decode_varint(b"\x80\x00", 0)
    assert mw.encode_varint(127) == b"\x7f" and mw.encode_varint(128) == b"\x80\x01"


def test_connect_v5_bytes() -> None:
    pkt = mw.connect_packet("dev-1-doctor", protocol=5, keepalive_s=30, username="u", password=b"pw")
    body = (b"\x00\x04MQTT" + bytes([5, 0xC2]) + struct.pack(">H", 30) + b"\x00"
            + b"\x00\x0cdev-1-doctor" + b"\x00\x01u" + b"\x00\x02pw")
    assert pkt == bytes([0x10, len(body)]) + body


def test_connect_v311_has_no_properties() -> None:
    pkt = mw.connect_packet("c", protocol=4)
    assert pkt == bytes([0x10, 13]) + b"\x00\x04MQTT\x04\x02\x00\x1e\x00\x01c"
    with pytest.raises(ValueError):
        mw.connect_packet("c", protocol=3)


def test_publish_qos1_bytes() -> None:
    pkt = mw.publish_packet("a/b", b"x", 7, protocol=5)
    assert pkt == bytes([0x32, 9]) + b"\x00\x03a/b" + b"\x00\x07" + b"\x00" + b"x"
    assert mw.publish_packet("a/b", b"x", 7, protocol=4) == bytes([0x32, 8]) + b"\x00\x03a/b\x00\x07x"
    with pytest.raises(ValueError):
        mw.publish_packet("a", b"", 0)


def test_connack_and_puback_decoding() -> None:
    assert mw.parse_connack(mw.Packet(mw.CONNACK, 0, b"\x00\x00"), 5) == (False, 0)
    assert mw.parse_connack(mw.Packet(mw.CONNACK, 0, b"\x01\x87\x00"), 5) == (True, 0x87)
    assert mw.parse_connack(mw.Packet(mw.CONNACK, 0, b"\x00\x05"), 4) == (False, 0x87), "3.1.1 'not authorized'"
    assert mw.parse_connack(mw.Packet(mw.CONNACK, 0, b"\x00\x01"), 4) == (False, 0x84)
    assert mw.parse_puback(mw.Packet(mw.PUBACK, 0, b"\x00\x01"), 5) == (1, 0), "short form: success"
    assert mw.parse_puback(mw.Packet(mw.PUBACK, 0, b"\x00\x01\x87\x00"), 5) == (1, 0x87)
    assert mw.parse_puback(mw.Packet(mw.PUBACK, 0, b"\x00\x02\x87"), 4) == (2, 0), "3.1.1 has no reason"
    with pytest.raises(mw.MalformedPacket):
        mw.parse_connack(mw.Packet(mw.PUBACK, 0, b"\x00\x00"), 5)
    with pytest.raises(mw.MalformedPacket):
        mw.parse_puback(mw.Packet(mw.PUBACK, 0, b"\x00"), 5)
    assert mw.reason_name(0x87) == "Not authorized" and mw.reason_name(0x42) == "reason 0x42"


packets = st.lists(st.tuples(st.integers(1, 15), st.integers(0, 15), st.binary(max_size=300)), min_size=1,
                   max_size=8)


def _wire(pkts: list[tuple[int, int, bytes]]) -> bytes:
    return b"".join(bytes([(t << 4) | f]) + mw.encode_varint(len(b)) + b for t, f, b in pkts)


def _drain(r: mw.PacketReader) -> list[mw.Packet]:
    out = []
    while (p := r.next_packet()) is not None:
        out.append(p)
    return out


@given(packets, st.data())
def test_reader_gives_the_same_packets_whole_bytewise_and_split(pkts: list[tuple[int, int, bytes]],
                                                                 data: st.DataObject) -> None:
    wire = _wire(pkts)
    expected = [mw.Packet(t, f, b) for t, f, b in pkts]
    whole = mw.PacketReader()
    whole.feed(wire)
    assert _drain(whole) == expected
    bytewise = mw.PacketReader()
    got: list[mw.Packet] = []
    for i in range(len(wire)):
        bytewise.feed(memoryview(wire)[i:i + 1])
        got += _drain(bytewise)
    assert got == expected
    cut = data.draw(st.integers(0, len(wire)))
    split = mw.PacketReader()
    split.feed(wire[:cut])
    got = _drain(split)
    split.feed(wire[cut:])
    assert got + _drain(split) == expected


def test_reader_leaves_a_partial_packet_waiting_and_refuses_giants() -> None:
    r = mw.PacketReader()
    r.feed(bytes([0x20, 3, 0]))
    assert r.next_packet() is None
    r.feed(b"\x00\x00" + bytes([0x40]))
    assert r.next_packet() == mw.Packet(mw.CONNACK, 0, b"\x00\x00\x00")
    assert r.next_packet() is None, "the trailing byte waits for the rest of its packet"
    big = mw.PacketReader()
    big.feed(bytes([0x30]) + mw.encode_varint(mw.MAX_REMAINING + 1))
    with pytest.raises(mw.MalformedPacket):
        big.next_packet()

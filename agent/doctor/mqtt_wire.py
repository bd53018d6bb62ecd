"""The few MQTT packets the doctor's broker probe needs, encoded and decoded without I/O (MQTT 5 and 3.1.1).

Why not paho: the probe must tell apart steps paho folds together (the TLS handshake, a TLS alert that a
TLS 1.3 broker sends only after the handshake, CONNACK, PUBACK), report the exact reason codes, and leave
no thread behind. With the socket in the doctor's hand, each step has its own timeout and its own failure.
Only what the probe sends is encoded: CONNECT (clean start, session expiry 0, no will), PUBLISH QoS 1,
DISCONNECT; only CONNACK and PUBACK are decoded, other packets are returned raw and skipped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["CONNACK_HINTS", "MalformedPacket", "Packet", "PacketReader", "connect_packet", "decode_varint",
           "disconnect_packet", "encode_varint", "parse_connack", "parse_puback", "publish_packet", "reason_name"]

CONNECT, CONNACK, PUBLISH, PUBACK, DISCONNECT = 1, 2, 3, 4, 14
MAX_REMAINING = 1 << 20  # nothing the probe waits for is anywhere near this; refuse larger

# MQTT 5 reason codes the probe may see (CONNACK, PUBACK, DISCONNECT), by value.
REASONS: dict[int, str] = {
    0x00: "Success", 0x10: "No matching subscribers", 0x80: "Unspecified error", 0x81: "Malformed Packet",
    0x82: "Protocol Error", 0x83: "Implementation specific error", 0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid", 0x86: "Bad User Name or Password", 0x87: "Not authorized",
    0x88: "Server unavailable", 0x89: "Server busy", 0x8A: "Banned", 0x8C: "Bad authentication method",
    0x8E: "Session taken over", 0x90: "Topic Name invalid", 0x91: "Packet Identifier in use",
    0x95: "Packet too large", 0x97: "Quota exceeded", 0x99: "Payload format invalid",
    0x9A: "Retain not supported", 0x9B: "QoS not supported", 0x9C: "Use another server", 0x9D: "Server moved",
    0x9F: "Connection rate exceeded",
}
# MQTT 3.1.1 CONNACK return codes mapped onto the MQTT 5 reason with the same meaning.
V4_CONNACK = {0: 0x00, 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}

CONNACK_HINTS: dict[int, str] = {
    0x84: 'the broker does not speak this MQTT version: set mqtt.protocol = "3.1.1"',
    0x85: "the broker refuses the client id: check mqtt.client_id",
    0x86: "check mqtt.username and mqtt.password_file",
    0x87: "the broker does not admit this identity: check the certificate CN and the broker's ACL/password file",
    0x88: "the broker is starting or overloaded: retry, then read its log",
    0x89: "the broker is starting or overloaded: retry, then read its log",
    0x8A: "this client is banned on the broker: ask its operator",
    0x8C: "the broker wants another authentication method: check its listener config",
    0x9F: "too many connects: wait and retry",
}


class MalformedPacket(ValueError):
    """Bytes from the broker that are not the MQTT this module reads."""


def reason_name(code: int) -> str:
    return REASONS.get(code, f"reason 0x{code:02x}")


def encode_varint(n: int) -> bytes:
    """MQTT variable byte integer (0..268435455)."""
    if not 0 <= n <= 268_435_455:
        raise ValueError(f"variable byte integer out of range: {n}")
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def decode_varint(buf: bytes | bytearray, i: int) -> tuple[int, int] | None:
    """(value, index after it), or None when ``buf`` ends inside it. Raises on more than 4 bytes."""
    value, mult = 0, 1
    for k in range(4):
        if i + k >= len(buf):
            return None
        b = buf[i + k]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            if k and b == 0:
                raise MalformedPacket("variable byte integer not in its shortest form")
            return value, i + k + 1
        mult *= 128
    raise MalformedPacket("variable byte integer longer than 4 bytes")


def _str(s: str) -> bytes:
    b = s.encode()
    if len(b) > 65535:
        raise ValueError("MQTT string longer than 65535 bytes")
    return struct.pack(">H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_varint(len(body)) + body


def connect_packet(client_id: str, *, protocol: int = 5, keepalive_s: int = 30, username: str | None = None,
                   password: bytes | None = None) -> bytes:
    """CONNECT with clean start, no will; MQTT 5 sends no properties (session expiry 0: nothing kept)."""
    if protocol not in (4, 5):
        raise ValueError(f"protocol level must be 4 (3.1.1) or 5, got {protocol}")
    flags = 0x02
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = _str("MQTT") + bytes([protocol, flags]) + struct.pack(">H", keepalive_s)
    if protocol == 5:
        body += encode_varint(0)
    body += _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += struct.pack(">H", len(password)) + password
    return _packet(CONNECT << 4, body)


def publish_packet(topic: str, payload: bytes, packet_id: int, *, protocol: int = 5) -> bytes:
    """PUBLISH at QoS 1, not retained."""
    if not 1 <= packet_id <= 65535:
        raise ValueError(f"packet id must be 1..65535, got {packet_id}")
    body = _str(topic) + struct.pack(">H", packet_id) + (encode_varint(0) if protocol == 5 else b"") + payload
    return _packet((PUBLISH << 4) | 0x02, body)


def disconnect_packet() -> bytes:
    """DISCONNECT, normal (an empty body means reason 0 in MQTT 5 and is the only form in 3.1.1)."""
    return _packet(DISCONNECT << 4, b"")


@dataclass(frozen=True)
class Packet:
    type: int
    flags: int
    body: bytes


class PacketReader:
    """Reassembles packets from a byte stream: ``feed`` bytes, then take ``next_packet()`` until None."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += bytes(data)

    def next_packet(self) -> Packet | None:
        if len(self._buf) < 2:
            return None
        got = decode_varint(self._buf, 1)
        if got is None:
            return None
        length, start = got
        if length > MAX_REMAINING:
            raise MalformedPacket(f"packet of {length} bytes: larger than the probe accepts")
        if len(self._buf) < start + length:
            return None
        first = self._buf[0]
        body = bytes(self._buf[start:start + length])
        del self._buf[:start + length]
        return Packet(first >> 4, first & 0x0F, body)


def parse_connack(pkt: Packet, protocol: int) -> tuple[bool, int]:
    """(session present, MQTT 5 reason code); 3.1.1 return codes are mapped to the same reason."""
    if pkt.type != CONNACK or len(pkt.body) < 2:
        raise MalformedPacket(f"expected CONNACK, got packet type {pkt.type} of {len(pkt.body)} bytes")
    present = bool(pkt.body[0] & 0x01)
    code = pkt.body[1]
    if protocol == 4:
        return present, V4_CONNACK.get(code, 0x80)
    return present, code


def parse_puback(pkt: Packet, protocol: int) -> tuple[int, int]:
    """(packet id, reason code); a body of two bytes means success (MQTT 5 §3.4.2.1, and always in 3.1.1)."""
    if pkt.type != PUBACK or len(pkt.body) < 2:
        raise MalformedPacket(f"expected PUBACK, got packet type {pkt.type} of {len(pkt.body)} bytes")
    (pid,) = struct.unpack(">H", pkt.body[:2])
    code = pkt.body[2] if protocol == 5 and len(pkt.body) > 2 else 0
    return pid, code

"""Pure frame codec: message ↔ body (header, payload, CRC-32) ↔ wire bytes (COBS + 0x00).

No I/O and no state except ``FrameEncoder``'s frame counter. Layouts are in docs/serial-protocol.md;
``firmware_bridge/c/fb_proto.c`` implements the same bytes and the vectors in ``tests/vectors/frames/``
hold both to them. CRC-32 is the ISO-HDLC / IEEE 802.3 polynomial as ``zlib.crc32`` computes it (C-fast
here, table-driven in the C file).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable

from firmware_bridge.cobs import cobs_decode, cobs_encode
from firmware_bridge.errors import EncodeError, FrameError
from firmware_bridge.messages import (
    CRC_SIZE,
    HEADER_SIZE,
    MAX_BODY,
    MAX_CHANNELS,
    MAX_ERROR_TEXT,
    MAX_PAYLOAD,
    MAX_SENSORS,
    MAX_UID,
    MAX_UNIT,
    PROTOCOL_VERSION,
    Config,
    ErrorReport,
    Frame,
    FrameType,
    Heartbeat,
    Hello,
    HelloRequest,
    Ping,
    Pong,
    SampleFormat,
    Samples,
    SensorInfo,
    TimeSync,
)

__all__ = ["FrameEncoder", "check_body", "decode_body", "decode_frame", "encode_body", "encode_frame", "parse_payload"]

_HDR = struct.Struct("<BBBH")
_HELLO = struct.Struct("<BBBIQ")
_SENSOR = struct.Struct("<BBBBfff")
_SAMPLES = struct.Struct("<BBBHQ")
_HEARTBEAT = struct.Struct("<QI")
_ERROR = struct.Struct("<HB")
_NONCE_T = struct.Struct("<IQ")
_CONFIG = struct.Struct("<Bf")
_PING = struct.Struct("<I")
_U64 = 2**64
_U32 = 2**32
_CRC = struct.Struct("<I")


# ----------------------------------------------------------------------------------------------- encode


def _int(name: str, value: int, hi: int, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value < hi:
        raise EncodeError(f"{name}: expected an integer in [{lo}, {hi}), got {value!r}")
    return value


def _f32(name: str, value: float, positive: bool = False) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or (positive and value <= 0):
        raise EncodeError(f"{name}: expected a finite{' positive' if positive else ''} number, got {value!r}")
    try:
        struct.pack("<f", value)
    except OverflowError:
        raise EncodeError(f"{name}: {value!r} does not fit a float32") from None
    return float(value)


def _pack_hello(m: Hello) -> bytes:
    if len(m.fw_version) != 3:
        raise EncodeError(f"fw_version: expected (major, minor, patch), got {m.fw_version!r}")
    major, minor, patch = (_int("fw_version", v, 256) for v in m.fw_version)
    if len(m.uid) > MAX_UID:
        raise EncodeError(f"uid: expected at most {MAX_UID} bytes, got {len(m.uid)}")
    if len(m.sensors) > MAX_SENSORS:
        raise EncodeError(f"sensors: expected at most {MAX_SENSORS}, got {len(m.sensors)}")
    out = bytearray(_HELLO.pack(major, minor, patch, _int("boot_id", m.boot_id, _U32), _int("t_us", m.t_us, _U64)))
    out.append(len(m.uid))
    out += m.uid
    out.append(len(m.sensors))
    for s in m.sensors:
        unit = s.unit.encode("utf-8")
        if len(unit) > MAX_UNIT:
            raise EncodeError(f"unit: expected at most {MAX_UNIT} UTF-8 bytes, got {len(unit)} ({s.unit!r})")
        desc = _SENSOR.pack(
            _int("sensor_id", s.sensor_id, 256),
            _int("kind", int(s.kind), 256),
            int(SampleFormat(s.fmt)),
            _int("channels", s.channels, MAX_CHANNELS + 1, 1),
            _f32("rate_hz", s.rate_hz, positive=True),
            _f32("scale", s.scale),
            _f32("offset", s.offset),
        )
        desc += bytes([len(unit)]) + unit + _ext(s.extension)
        if len(desc) > 255:
            raise EncodeError(f"sensor {s.sensor_id}: descriptor of {len(desc)} bytes exceeds 255")
        out.append(len(desc))
        out += desc
    return bytes(out)


def _pack_samples(m: Samples) -> bytes:
    fmt = SampleFormat(m.fmt)
    _int("channels", m.channels, MAX_CHANNELS + 1, 1)
    per = m.channels * fmt.size
    if not m.data or len(m.data) % per:
        raise EncodeError(f"data: expected a positive multiple of {per} bytes, got {len(m.data)}")
    count = len(m.data) // per
    head = _SAMPLES.pack(_int("sensor_id", m.sensor_id, 256), int(fmt), m.channels, count, _int("t_us", m.t_us, _U64))
    return head + bytes(m.data)


def _pack_error(m: ErrorReport) -> bytes:
    try:
        text = m.text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: not UTF-8, and the decoder refuses what is not
        raise EncodeError(f"text: expected text that encodes as UTF-8, got {m.text!r:.80}") from e
    if len(text) > MAX_ERROR_TEXT:
        raise EncodeError(f"text: expected at most {MAX_ERROR_TEXT} UTF-8 bytes, got {len(text)}")
    return _ERROR.pack(_int("code", m.code, 2**16), len(text)) + text


def _ext(extension: bytes) -> bytes:
    if not isinstance(extension, (bytes, bytearray)):
        raise EncodeError(f"extension: expected bytes, got {type(extension).__name__}")
    return bytes(extension)


def _payload(m: Frame) -> tuple[FrameType, bytes]:
    """The type and payload of ``m``, extension bytes included."""
    ftype, payload = _known_payload(m)
    return ftype, payload + _ext(m.extension)


def _known_payload(m: Frame) -> tuple[FrameType, bytes]:
    if isinstance(m, Samples):
        return FrameType.SAMPLES, _pack_samples(m)
    if isinstance(m, Hello):
        return FrameType.HELLO, _pack_hello(m)
    if isinstance(m, Heartbeat):
        t = _HEARTBEAT.pack(_int("t_us", m.t_us, _U64), _int("dropped_samples", m.dropped_samples, _U32))
        return FrameType.HEARTBEAT, t
    if isinstance(m, ErrorReport):
        return FrameType.ERROR, _pack_error(m)
    if isinstance(m, Pong):
        return FrameType.PONG, _NONCE_T.pack(_int("nonce", m.nonce, _U32), _int("t_us", m.t_us, _U64))
    if isinstance(m, Config):
        sid = _int("sensor_id", m.sensor_id, 256)
        return FrameType.CONFIG, _CONFIG.pack(sid, _f32("rate_hz", m.rate_hz, positive=True))
    if isinstance(m, Ping):
        return FrameType.PING, _PING.pack(_int("nonce", m.nonce, _U32))
    if isinstance(m, TimeSync):
        nonce = _int("nonce", m.nonce, _U32)
        return FrameType.TIME_SYNC, _NONCE_T.pack(nonce, _int("host_time_us", m.host_time_us, _U64))
    if isinstance(m, HelloRequest):
        return FrameType.HELLO_REQUEST, b""
    raise EncodeError(f"expected a firmware_bridge message, got {type(m).__name__}")


def encode_body(msg: Frame, counter: int | None = None, flags: int | None = None) -> bytes:
    """Header + payload + CRC for ``msg``; ``counter``/``flags`` default to the message's own fields."""
    ftype, payload = _payload(msg)
    if len(payload) > MAX_PAYLOAD:
        raise EncodeError(f"payload of {len(payload)} bytes exceeds the maximum of {MAX_PAYLOAD}")
    c = _int("counter", msg.counter if counter is None else counter, 2**16)
    f = _int("flags", msg.flags if flags is None else flags, 256)
    head = _HDR.pack(PROTOCOL_VERSION, int(ftype), f, c) + payload
    return head + _CRC.pack(zlib.crc32(head))


def encode_frame(msg: Frame, counter: int | None = None, flags: int | None = None) -> bytes:
    """Wire bytes for ``msg``: COBS-encoded body followed by the 0x00 delimiter."""
    return cobs_encode(encode_body(msg, counter, flags)) + b"\x00"


class FrameEncoder:
    """Numbers the frames one side sends (16-bit counter, wrapping) and encodes them."""

    def __init__(self, first_counter: int = 0) -> None:
        self.counter = first_counter & 0xFFFF

    def encode(self, msg: Frame, flags: int | None = None) -> bytes:
        """Wire bytes for ``msg`` with the next counter value."""
        wire = encode_frame(msg, self.counter, flags)
        self.counter = (self.counter + 1) & 0xFFFF
        return wire


# ----------------------------------------------------------------------------------------------- decode


def check_body(body: bytes) -> tuple[int, int, int, int]:
    """Length and CRC check; ``(version, type, flags, counter)`` of an intact body, else ``FrameError``."""
    n = len(body)
    if n < HEADER_SIZE + CRC_SIZE:
        raise FrameError("length", f"expected at least {HEADER_SIZE + CRC_SIZE} bytes, got {n}")
    if n > MAX_BODY:
        raise FrameError("length", f"expected at most {MAX_BODY} bytes, got {n}")
    got = int.from_bytes(body[-CRC_SIZE:], "little")
    want = zlib.crc32(memoryview(body)[:-CRC_SIZE])
    if got != want:
        raise FrameError("crc", f"expected CRC-32 {want:08x}, got {got:08x}")
    version, ftype, flags, counter = _HDR.unpack_from(body)
    return version, ftype, flags, counter


def _need(payload: bytes, n: int, what: str) -> None:
    if len(payload) < n:
        raise FrameError("payload", f"{what}: expected at least {n} payload bytes, got {len(payload)}")


def _finite(name: str, value: float, positive: bool = False) -> float:
    if not math.isfinite(value) or (positive and value <= 0):
        raise FrameError("payload", f"{name}: expected a finite{' positive' if positive else ''} number, got {value!r}")
    return value


def _fmt(code: int) -> SampleFormat:
    try:
        return SampleFormat(code)
    except ValueError:
        raise FrameError("payload", f"sample format: expected one of 1, 2, 3, got {code}") from None


def _channels(n: int) -> int:
    if not 1 <= n <= MAX_CHANNELS:
        raise FrameError("payload", f"channels: expected 1..{MAX_CHANNELS}, got {n}")
    return n


def _parse_hello(p: bytes, counter: int, flags: int) -> Hello:
    _need(p, _HELLO.size + 2, "HELLO")
    major, minor, patch, boot_id, t_us = _HELLO.unpack_from(p)
    i = _HELLO.size
    uid_len = p[i]
    if uid_len > MAX_UID:
        raise FrameError("payload", f"HELLO uid: expected at most {MAX_UID} bytes, got {uid_len}")
    _need(p, i + 1 + uid_len + 1, "HELLO uid")
    uid = p[i + 1 : i + 1 + uid_len]
    i += 1 + uid_len
    n_sensors = p[i]
    i += 1
    if n_sensors > MAX_SENSORS:
        raise FrameError("payload", f"HELLO sensors: expected at most {MAX_SENSORS}, got {n_sensors}")
    sensors = []
    for k in range(n_sensors):
        _need(p, i + 1, f"HELLO sensor {k}")
        desc_len = p[i]
        start, end = i + 1, i + 1 + desc_len
        _need(p, end, f"HELLO sensor {k}")
        if desc_len < _SENSOR.size + 1:
            raise FrameError("payload", f"HELLO sensor {k}: expected a descriptor of >= 17 bytes, got {desc_len}")
        sid, kind, fmt, ch, rate, scale, offset = _SENSOR.unpack_from(p, start)
        unit_len = p[start + _SENSOR.size]
        if unit_len > MAX_UNIT or _SENSOR.size + 1 + unit_len > desc_len:
            raise FrameError("payload", f"HELLO sensor {k}: unit length {unit_len} does not fit its descriptor")
        u0 = start + _SENSOR.size + 1
        unit = _utf8(p[u0 : u0 + unit_len], f"HELLO sensor {k} unit")
        sensors.append(
            SensorInfo(
                sid, kind, _fmt(fmt), _channels(ch), _finite("rate_hz", rate, True),
                _finite("scale", scale), _finite("offset", offset), unit, extension=bytes(p[u0 + unit_len : end]),
            )
        )
        i = end  # bytes a newer firmware appended to the descriptor are skipped (and kept)
    return Hello((major, minor, patch), boot_id, t_us, bytes(uid), tuple(sensors), counter=counter, flags=flags,
                 extension=bytes(p[i:]))


def _parse_samples(p: bytes, counter: int, flags: int) -> Samples:
    _need(p, _SAMPLES.size, "SAMPLES")
    sid, fmt_code, ch, count, t_us = _SAMPLES.unpack_from(p)
    fmt = _fmt(fmt_code)
    _channels(ch)
    if count == 0:
        raise FrameError("payload", "SAMPLES count: expected >= 1, got 0")
    end = _SAMPLES.size + count * ch * fmt.size
    _need(p, end, f"SAMPLES of {count}x{ch} {fmt.name}")
    return Samples(sid, fmt, ch, t_us, p[_SAMPLES.size : end], counter=counter, flags=flags, extension=p[end:])


def _parse_heartbeat(p: bytes, counter: int, flags: int) -> Heartbeat:
    _need(p, _HEARTBEAT.size, "HEARTBEAT")
    t_us, dropped = _HEARTBEAT.unpack_from(p)
    return Heartbeat(t_us, dropped, counter=counter, flags=flags, extension=p[_HEARTBEAT.size:])


def _parse_error(p: bytes, counter: int, flags: int) -> ErrorReport:
    _need(p, _ERROR.size, "ERROR")
    code, n = _ERROR.unpack_from(p)
    if n > MAX_ERROR_TEXT:
        raise FrameError("payload", f"ERROR text: expected at most {MAX_ERROR_TEXT} bytes, got {n}")
    _need(p, _ERROR.size + n, "ERROR text")
    text = _utf8(p[_ERROR.size : _ERROR.size + n], "ERROR text")
    return ErrorReport(code, text, counter=counter, flags=flags, extension=p[_ERROR.size + n:])


def _utf8(raw: bytes, what: str) -> str:
    """Text of the protocol: valid UTF-8 or a ``payload`` error (never silently replaced, docs/serial-protocol.md)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FrameError("payload", f"{what}: expected UTF-8, got {raw[e.start:e.end + 3].hex()} at byte {e.start}") \
            from None


def _parse_pong(p: bytes, counter: int, flags: int) -> Pong:
    _need(p, _NONCE_T.size, "PONG")
    nonce, t_us = _NONCE_T.unpack_from(p)
    return Pong(nonce, t_us, counter=counter, flags=flags, extension=p[_NONCE_T.size:])


def _parse_config(p: bytes, counter: int, flags: int) -> Config:
    _need(p, _CONFIG.size, "CONFIG")
    sid, rate = _CONFIG.unpack_from(p)
    return Config(sid, _finite("rate_hz", rate, True), counter=counter, flags=flags, extension=p[_CONFIG.size:])


def _parse_ping(p: bytes, counter: int, flags: int) -> Ping:
    _need(p, _PING.size, "PING")
    return Ping(_PING.unpack_from(p)[0], counter=counter, flags=flags, extension=p[_PING.size:])


def _parse_time_sync(p: bytes, counter: int, flags: int) -> TimeSync:
    _need(p, _NONCE_T.size, "TIME_SYNC")
    nonce, host = _NONCE_T.unpack_from(p)
    return TimeSync(nonce, host, counter=counter, flags=flags, extension=p[_NONCE_T.size:])


def _parse_hello_request(p: bytes, counter: int, flags: int) -> HelloRequest:
    return HelloRequest(counter=counter, flags=flags, extension=p)


PARSERS: dict[int, Callable[[bytes, int, int], Frame]] = {
    FrameType.HELLO: _parse_hello,
    FrameType.SAMPLES: _parse_samples,
    FrameType.HEARTBEAT: _parse_heartbeat,
    FrameType.ERROR: _parse_error,
    FrameType.PONG: _parse_pong,
    FrameType.CONFIG: _parse_config,
    FrameType.PING: _parse_ping,
    FrameType.TIME_SYNC: _parse_time_sync,
    FrameType.HELLO_REQUEST: _parse_hello_request,
}


def parse_payload(version: int, ftype: int, flags: int, counter: int, payload: bytes) -> Frame:
    """The message in an intact body's payload; ``FrameError`` (version, unknown_type, payload) otherwise."""
    if version != PROTOCOL_VERSION:
        raise FrameError("version", f"expected protocol version {PROTOCOL_VERSION}, got {version}")
    parser = PARSERS.get(ftype)
    if parser is None:
        raise FrameError("unknown_type", f"frame type 0x{ftype:02x} is not known to protocol version 1")
    return parser(payload, counter, flags)


def decode_body(body: bytes) -> Frame:
    """The message in one frame body (COBS already removed); raises ``FrameError``."""
    version, ftype, flags, counter = check_body(body)
    return parse_payload(version, ftype, flags, counter, body[HEADER_SIZE:-CRC_SIZE])


def decode_frame(wire: bytes) -> Frame:
    """The message in one frame's wire bytes (delimiters around it optional); raises ``FrameError``."""
    core = wire.strip(b"\x00")
    if b"\x00" in core:
        raise FrameError("cobs", "expected one frame, got a 0x00 delimiter inside")
    body = cobs_decode(core)
    if body is None:
        raise FrameError("cobs", f"expected COBS blocks that end with the frame, got {len(core)} bytes that do not")
    return decode_body(body)

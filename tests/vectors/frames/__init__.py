"""Known-answer frame vectors shared by the Python codec and the C codec (``firmware_bridge/c``).

``vectors.json`` is the contract; ``python -m tests.vectors.frames`` regenerates it from ``build()``
(only ever on a deliberate protocol change: the vectors exist so that changes are noticed). Each valid
vector has the message (JSON fields), its body and wire bytes; every vector has ``results``: the lines a
decoder reports for its wire bytes (``ok TYPE COUNTER FLAGS PAYLOAD [parsed]`` or ``error KIND``), the
format the C test driver prints. ``c`` is False where the C decoder does not check a payload
(MCU → host types are parsed by the host only).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from pathlib import Path
from typing import Any

from firmware_bridge import (
    FLAG_BOOT,
    Config,
    ErrorReport,
    Frame,
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
    cobs_encode,
    encode_body,
    encode_frame,
)

PATH = Path(__file__).with_name("vectors.json")


def message_to_json(m: Frame) -> dict[str, Any]:
    """A JSON-able description of a message (bytes as hex, floats exact float32 values)."""
    if isinstance(m, Hello):
        return {
            "type": "hello", "fw_version": list(m.fw_version), "boot_id": m.boot_id, "t_us": m.t_us,
            "uid": m.uid.hex(),
            "sensors": [
                {"id": s.sensor_id, "kind": int(s.kind), "format": int(s.fmt), "channels": s.channels,
                 "rate_hz": s.rate_hz, "scale": s.scale, "offset": s.offset, "unit": s.unit}
                for s in m.sensors
            ],
        }
    if isinstance(m, Samples):
        return {"type": "samples", "sensor_id": m.sensor_id, "format": int(m.fmt), "channels": m.channels,
                "t_us": m.t_us, "values": m.raw().reshape(-1).tolist()}
    if isinstance(m, Heartbeat):
        return {"type": "heartbeat", "t_us": m.t_us, "dropped_samples": m.dropped_samples}
    if isinstance(m, ErrorReport):
        return {"type": "error", "code": m.code, "text": m.text}
    if isinstance(m, Pong):
        return {"type": "pong", "nonce": m.nonce, "t_us": m.t_us}
    if isinstance(m, Config):
        return {"type": "config", "sensor_id": m.sensor_id, "rate_hz": m.rate_hz}
    if isinstance(m, Ping):
        return {"type": "ping", "nonce": m.nonce}
    if isinstance(m, TimeSync):
        return {"type": "time_sync", "nonce": m.nonce, "host_time_us": m.host_time_us}
    return {"type": "hello_request"}


def message_from_json(d: dict[str, Any], counter: int = 0, flags: int = 0) -> Frame:
    """The inverse of ``message_to_json``."""
    kw: dict[str, Any] = {"counter": counter, "flags": flags}
    t = d["type"]
    if t == "hello":
        sensors = tuple(
            SensorInfo(s["id"], s["kind"], SampleFormat(s["format"]), s["channels"], s["rate_hz"], s["scale"],
                       s["offset"], s["unit"])
            for s in d["sensors"]
        )
        fw = tuple(d["fw_version"])
        return Hello((fw[0], fw[1], fw[2]), d["boot_id"], d["t_us"], bytes.fromhex(d["uid"]), sensors, **kw)
    if t == "samples":
        fmt = SampleFormat(d["format"])
        data = struct.pack(f"<{len(d['values'])}{'hif'[fmt - 1]}", *d["values"])
        return Samples(d["sensor_id"], fmt, d["channels"], d["t_us"], data, **kw)
    if t == "heartbeat":
        return Heartbeat(d["t_us"], d["dropped_samples"], **kw)
    if t == "error":
        return ErrorReport(d["code"], d["text"], **kw)
    if t == "pong":
        return Pong(d["nonce"], d["t_us"], **kw)
    if t == "config":
        return Config(d["sensor_id"], d["rate_hz"], **kw)
    if t == "ping":
        return Ping(d["nonce"], **kw)
    if t == "time_sync":
        return TimeSync(d["nonce"], d["host_time_us"], **kw)
    return HelloRequest(**kw)


def result_line(m: Frame) -> str:
    """The decoder result line for a valid frame (as the C driver prints it)."""
    body = encode_body(m)
    line = f"ok {body[1]} {m.counter} {m.flags} {body[5:-4].hex()}"
    if isinstance(m, Config):
        line += f" config {m.sensor_id} {struct.unpack('<I', struct.pack('<f', m.rate_hz))[0]:08x}"
    elif isinstance(m, Ping):
        line += f" ping {m.nonce}"
    elif isinstance(m, TimeSync):
        line += f" time_sync {m.nonce} {m.host_time_us}"
    return line


def python_results(wire: bytes) -> list[str]:
    """Result lines of the Python ``FrameDecoder`` for ``wire``, fed one delimiter-terminated piece at a time."""
    dec = FrameDecoder()
    out: list[str] = []
    pieces = wire.split(b"\x00")
    for i, piece in enumerate(pieces):
        chunk = piece + (b"\x00" if i < len(pieces) - 1 else b"")
        before = dict(dec.stats.errors)
        frames = dec.feed(chunk)
        for kind, n in dec.stats.errors.items():
            out += [f"error {kind}"] * (n - before[kind])
        out += [result_line(f) for f in frames]
    return out


def _raw_frame(version: int, ftype: int, flags: int, counter: int, payload: bytes) -> bytes:
    head = struct.pack("<BBBH", version, ftype, flags, counter) + payload
    return cobs_encode(head + struct.pack("<I", zlib.crc32(head))) + b"\x00"


def build() -> dict[str, Any]:
    """All vectors (deterministic)."""
    accel = SensorInfo(0, 1, SampleFormat.I16, 3, 1000.0, 1 / 4096, 0.0, "g")
    temp = SensorInfo(7, 4, SampleFormat.F32, 1, 0.5, 1.0, -273.1500244140625, "°C")
    i16 = [[(i * 37) % 700 - 350, 4096 + i, -i] for i in range(32)]
    valid: list[tuple[str, Frame]] = [
        ("hello_boot", Hello((1, 2, 3), 0xDEADBEEF, 1_234_567, bytes(range(8)), (accel, temp), flags=FLAG_BOOT)),
        ("hello_no_sensors", Hello((0, 0, 1), 1, 0, b"", (), counter=9)),
        ("samples_i16", Samples.from_array(0, 10_000, i16, SampleFormat.I16)),
        ("samples_i32", Samples.from_array(3, 2**40 + 5, [[-1], [0], [2**31 - 1], [-(2**31)]], SampleFormat.I32)),
        ("samples_f32", Samples.from_array(7, 99, [[1.5, -0.25], [3.0e-3, 1e6]], SampleFormat.F32)),
        ("samples_max_body", Samples.from_array(1, 7, [[0x4141]] * 501, SampleFormat.I16)),
        ("heartbeat_wrap", Heartbeat(2**64 - 1, 12, counter=0xFFFF)),
        ("error_utf8", ErrorReport(7, "sensor timeout: ADXL355 ✓")),
        ("error_text_max", ErrorReport(8, "é" * 99 + "xy")),  # 200 UTF-8 bytes: the limit is inclusive
        ("pong", Pong(0xCAFEBABE, 5_000_000)),
        ("config", Config(0, 800.0, counter=3)),
        ("ping", Ping(42, counter=4)),
        ("time_sync", TimeSync(43, 1_700_000_000_123_456, counter=5)),
        ("hello_request", HelloRequest(counter=6)),
    ]
    counters = {"samples_i16": 1, "samples_i32": 2, "samples_f32": 3, "samples_max_body": 4, "pong": 11}
    vectors: list[dict[str, Any]] = []
    for name, m in valid:
        c = counters.get(name, m.counter)
        body = encode_body(m, c)
        wire = encode_frame(m, c)
        vectors.append({
            "name": name, "counter": c, "flags": m.flags, "message": message_to_json(m), "body": body.hex(),
            "wire": wire.hex(), "results": python_results(wire), "c": True,
        })
    hb = encode_body(Heartbeat(1, 0), 0)
    bad_crc = cobs_encode(hb[:-1] + bytes([hb[-1] ^ 0x01])) + b"\x00"
    nan = struct.unpack("<f", b"\x00\x00\xc0\x7f")[0]
    invalid = [
        ("bad_crc", bad_crc, True),
        ("bad_cobs", bytes.fromhex("0501020300"), True),
        ("too_short", cobs_encode(b"\x01\x02\x03\x04") + b"\x00", True),
        ("too_long", b"\x41" * 1100 + b"\x00", True),
        ("bad_version", _raw_frame(2, 0x03, 0, 0, bytes(12)), True),
        ("unknown_type", _raw_frame(1, 0x7E, 0, 0, b""), True),
        ("config_nan_rate", _raw_frame(1, 0x81, 0, 0, b"\x00" + struct.pack("<f", nan)), True),
        ("config_negative_rate", _raw_frame(1, 0x81, 0, 0, b"\x00" + struct.pack("<f", -1.0)), True),
        ("ping_short", _raw_frame(1, 0x82, 0, 0, b"\x01\x02"), True),
        ("samples_bad_format", _raw_frame(1, 0x02, 0, 0, struct.pack("<BBBHQ", 0, 9, 1, 1, 0) + b"\x01\x02"), False),
        ("error_text_too_long", _raw_frame(1, 0x04, 0, 0, struct.pack("<HB", 1, 201) + b"e" * 201), False),
        ("error_text_bad_utf8", _raw_frame(1, 0x04, 0, 0, struct.pack("<HB", 1, 3) + b"a\xc3("), False),
        ("error_text_cut_utf8", _raw_frame(1, 0x04, 0, 0, struct.pack("<HB", 1, 3) + b"ab\xe2"), False),
        ("hello_unit_bad_utf8", _raw_frame(1, 0x01, 0, 0, struct.pack("<BBBIQ", 1, 0, 0, 1, 0) + b"\x00\x01"
                                           + bytes([19]) + struct.pack("<BBBBfff", 0, 1, 1, 3, 100.0, 1.0, 0.0)
                                           + b"\x02\xff\xfe"), False),
        ("garbage_then_ping", bytes.fromhex("ff13370042") + b"\x00" + encode_frame(Ping(7), 8), True),
        ("idle_delimiters_then_ping", b"\x00\x00\x00" + encode_frame(Ping(1), 1) + b"\x00", True),
    ]
    for name, wire, c_checks in invalid:
        vectors.append({"name": name, "wire": wire.hex(), "results": python_results(wire), "c": c_checks})
    for v in vectors:
        assert v["results"], v["name"]
        assert all(not isinstance(x, float) or math.isfinite(x) for x in v.get("message", {}).values())
    return {
        "protocol_version": 1,
        "crc": "CRC-32/ISO-HDLC (zlib.crc32): poly 0x04C11DB7 reflected, init 0xFFFFFFFF, xorout 0xFFFFFFFF",
        "vectors": vectors,
    }


def load() -> dict[str, Any]:
    """The committed vectors."""
    data: dict[str, Any] = json.loads(PATH.read_text())
    return data

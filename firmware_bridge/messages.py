"""The protocol's messages as frozen dataclasses, with the constants of docs/serial-protocol.md.

One dataclass per frame type; ``counter`` and ``flags`` come from the frame header (set by the decoder,
assigned by the encoder). Field ranges are checked when encoding, so a message that decodes is one the
other side may send. ``extension`` holds the bytes a newer sender appended after the fields version 1
defines (docs/serial-protocol.md, Versioning): a receiver ignores them, but keeps them, so that every frame
that decodes encodes back to the same body. Types 0x01-0x7F travel MCU → host, 0x80-0xFF host → MCU.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = [
    "FLAG_BOOT",
    "MAX_BODY",
    "MAX_PAYLOAD",
    "MAX_WIRE",
    "PROTOCOL_VERSION",
    "Config",
    "ErrorReport",
    "Frame",
    "FrameType",
    "Heartbeat",
    "Hello",
    "HelloRequest",
    "Ping",
    "Pong",
    "SampleFormat",
    "Samples",
    "SensorInfo",
    "SensorKind",
    "TimeSync",
]

PROTOCOL_VERSION = 1
HEADER_SIZE = 5  # version u8, type u8, flags u8, counter u16 LE
CRC_SIZE = 4  # CRC-32 (ISO-HDLC, as zlib.crc32) over header + payload, u32 LE
MAX_BODY = 1024  # header + payload + CRC, before COBS
MAX_PAYLOAD = MAX_BODY - HEADER_SIZE - CRC_SIZE
MAX_WIRE = MAX_BODY + MAX_BODY // 254 + 1  # longest COBS encoding of a body, without the delimiter
FLAG_BOOT = 0x01  # on HELLO: the first HELLO after the MCU booted

MAX_UID = 16
MAX_SENSORS = 8
MAX_CHANNELS = 16
MAX_UNIT = 15
MAX_ERROR_TEXT = 200


class FrameType(enum.IntEnum):
    """Frame type codes (header byte 1)."""

    HELLO = 0x01
    SAMPLES = 0x02
    HEARTBEAT = 0x03
    ERROR = 0x04
    PONG = 0x05
    CONFIG = 0x81
    PING = 0x82
    TIME_SYNC = 0x83
    HELLO_REQUEST = 0x84


class SampleFormat(enum.IntEnum):
    """Encoding of each value in a SAMPLES frame (little-endian)."""

    I16 = 1
    I32 = 2
    F32 = 3

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return np.dtype({1: "<i2", 2: "<i4", 3: "<f4"}[int(self)])

    @property
    def size(self) -> int:
        return {1: 2, 2: 4, 3: 4}[int(self)]


class SensorKind(enum.IntEnum):
    """What a sensor measures; receivers keep unknown kinds as plain integers."""

    GENERIC = 0
    ACCELEROMETER = 1
    GYROSCOPE = 2
    MAGNETOMETER = 3
    TEMPERATURE = 4
    PRESSURE = 5
    HUMIDITY = 6
    CURRENT = 7
    VOLTAGE = 8
    MICROPHONE = 9


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """One sensor as a HELLO announces it: physical value = raw * scale + offset, in ``unit``."""

    sensor_id: int
    kind: int
    fmt: SampleFormat
    channels: int
    rate_hz: float
    scale: float
    offset: float = 0.0
    unit: str = ""
    # bytes a newer firmware appended to the descriptor after the unit: skipped, kept to re-encode the same bytes
    extension: bytes = field(default=b"", kw_only=True)


@dataclass(frozen=True, slots=True)
class Hello:
    """MCU → host at boot (flag BOOT) and on request: who the MCU is and what it samples."""

    fw_version: tuple[int, int, int]
    boot_id: int
    t_us: int
    uid: bytes
    sensors: tuple[SensorInfo, ...]
    counter: int = field(default=0, kw_only=True)
    flags: int = field(default=0, kw_only=True)
    extension: bytes = field(default=b"", kw_only=True)  # payload bytes after the known fields (see docstring)

    def sensor(self, sensor_id: int) -> SensorInfo | None:
        """The descriptor of ``sensor_id``, or None when this MCU does not announce it."""
        for s in self.sensors:
            if s.sensor_id == sensor_id:
                return s
        return None


@dataclass(frozen=True, slots=True)
class Samples:
    """MCU → host: ``count`` samples of one sensor, channels interleaved; ``t_us`` is the first sample's time."""

    sensor_id: int
    fmt: SampleFormat
    channels: int
    t_us: int
    data: bytes
    counter: int = field(default=0, kw_only=True)
    flags: int = field(default=0, kw_only=True)
    extension: bytes = field(default=b"", kw_only=True)  # payload bytes after the known fields (see docstring)

    @property
    def count(self) -> int:
        return len(self.data) // (self.channels * self.fmt.size)

    def raw(self) -> npt.NDArray[np.generic]:
        """The raw values, shape ``(count, channels)``, in the wire's dtype."""
        return np.frombuffer(self.data, dtype=self.fmt.dtype).reshape(-1, self.channels)

    @classmethod
    def from_array(
        cls, sensor_id: int, t_us: int, values: npt.ArrayLike, fmt: SampleFormat = SampleFormat.I16
    ) -> Samples:
        """Build from a ``(count, channels)`` array of raw values (converted to ``fmt``)."""
        arr = np.asarray(values)
        if arr.ndim != 2:
            raise ValueError(f"values: expected shape (count, channels), got {arr.shape}")
        data = np.ascontiguousarray(arr, dtype=fmt.dtype).tobytes()
        return cls(sensor_id, fmt, int(arr.shape[1]), t_us, data)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """MCU → host, about once a second: proof of life, a clock observation, samples the MCU had to drop."""

    t_us: int
    dropped_samples: int = 0
    counter: int = field(default=0, kw_only=True)
    flags: int = field(default=0, kw_only=True)
    extension: bytes = field(default=b"", kw_only=True)  # payload bytes after the known fields (see docstring)


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """MCU → host: something went wrong on the MCU (sensor not responding, bad CONFIG...)."""

    code: int
    text: str
    counter: int = field(default=0, kw_only=True)
    flags: int = field(default=0, kw_only=True)
    extension: bytes = field(default=b"", kw_only=True)  # payload bytes after the known fields (see docstring)


@dataclass(frozen=True, slots=True)
class Pong:
    """MCU → host: answer to PING or TIME_SYNC, with the MCU's clock when it was received."""

    nonce: int
    t_us: int
    counter: int = field(default=0, kw_only=True)
    flags: int = field(default=0, kw_only=True)
    extension: bytes = field(default=b"", kw_only=True)  # payload bytes after the known fields (see docstring)


@dataclass(frozen=True, slots=True)
class Config:
    """Host → MCU: set a sensor's sample rate; the MCU answers with a HELLO (or an ERROR)."""

    sensor_id: int
    rate_hz: float
    counter: int = field(default=0, kw_only=True)
    flags: int = field(default=0, kw_only=True)
    extension: bytes = field(default=b"", kw_only=True)  # payload bytes after the known fields (see docstring)


@dataclass(frozen=True, slots=True)
class Ping:
    """Host → MCU: liveness probe; answered by PONG."""

    nonce: int
    counter: int = field(default=0, kw_only=True)
    flags: int = field(default=0, kw_only=True)
    extension: bytes = field(default=b"", kw_only=True)  # payload bytes after the known fields (see docstring)


@dataclass(frozen=True, slots=True)
class TimeSync:
    """Host → MCU: the host's wall clock (µs since the Unix epoch); answered by PONG."""

    nonce: int
    host_time_us: int
    counter: int = field(default=0, kw_only=True)
    flags: int = field(default=0, kw_only=True)
    extension: bytes = field(default=b"", kw_only=True)  # payload bytes after the known fields (see docstring)


@dataclass(frozen=True, slots=True)
class HelloRequest:
    """Host → MCU: send a HELLO now (after the host connects or loses track)."""

    counter: int = field(default=0, kw_only=True)
    flags: int = field(default=0, kw_only=True)
    extension: bytes = field(default=b"", kw_only=True)  # payload bytes after the known fields (see docstring)


Frame = Hello | Samples | Heartbeat | ErrorReport | Pong | Config | Ping | TimeSync | HelloRequest

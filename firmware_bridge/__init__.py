"""firmware_bridge: the serial link between the host and a sensor microcontroller.

Wire protocol (docs/serial-protocol.md): COBS frames delimited by 0x00, a 5-byte header, CRC-32. The
pure codec (``FrameDecoder``, ``encode_frame``) does no I/O; ``SerialSource`` is the pyserial shell with
reconnects, reset detection and clock mapping; ``Simulator`` plays the MCU on a pty; ``firmware_bridge/c``
holds the C99 half for the firmware. This package imports nothing else of the project.
"""

from firmware_bridge.clock import ClockMap
from firmware_bridge.cobs import cobs_decode, cobs_encode
from firmware_bridge.codec import FrameEncoder, decode_body, decode_frame, encode_body, encode_frame
from firmware_bridge.decoder import ERROR_KINDS, DecoderStats, FrameDecoder
from firmware_bridge.errors import BridgeError, EncodeError, FrameError, ProtocolError, TransportError
from firmware_bridge.link import LinkEvent, LinkSession, McuError, McuHello, McuReset, SensorBlock
from firmware_bridge.messages import (
    FLAG_BOOT,
    MAX_BODY,
    MAX_PAYLOAD,
    MAX_WIRE,
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
    SensorKind,
    TimeSync,
)
from firmware_bridge.simulator import SentBlock, SimConfig, Simulator
from firmware_bridge.transport import SerialSource

__all__ = [
    "ERROR_KINDS",
    "FLAG_BOOT",
    "MAX_BODY",
    "MAX_PAYLOAD",
    "MAX_WIRE",
    "PROTOCOL_VERSION",
    "BridgeError",
    "ClockMap",
    "Config",
    "DecoderStats",
    "EncodeError",
    "ErrorReport",
    "Frame",
    "FrameDecoder",
    "FrameEncoder",
    "FrameError",
    "FrameType",
    "Heartbeat",
    "Hello",
    "HelloRequest",
    "LinkEvent",
    "LinkSession",
    "McuError",
    "McuHello",
    "McuReset",
    "Ping",
    "Pong",
    "ProtocolError",
    "SampleFormat",
    "Samples",
    "SensorBlock",
    "SensorInfo",
    "SensorKind",
    "SentBlock",
    "SerialSource",
    "SimConfig",
    "Simulator",
    "TimeSync",
    "TransportError",
    "cobs_decode",
    "cobs_encode",
    "decode_body",
    "decode_frame",
    "encode_body",
    "encode_frame",
]

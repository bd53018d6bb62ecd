"""firmware_bridge: the serial link between the host and a sensor microcontroller.

Wire protocol (docs/serial-protocol.md): COBS frames delimited by 0x00, a 5-byte header, CRC-32. The
pure codec (``FrameDecoder``, ``encode_frame``) does no I/O; ``SerialSource`` is the pyserial shell with
reconnects, reset detection and clock mapping; ``Simulator`` plays the MCU on a pty; ``firmware_bridge/c``
holds the C99 half for the firmware; the vibration signal model (``CLASSES``, ``VibrationStream``, ...) is
the one the simulator streams. This package imports nothing else of the project.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from firmware_bridge.signal_model import (
        CHANNELS,
        CLASSES,
        SAMPLE_RATE_HZ,
        WINDOW,
        MachineParams,
        VibrationStream,
        random_params,
        synthesize,
    )
    from firmware_bridge.simulator import SentBlock, SimConfig, Simulator
    from firmware_bridge.transport import SerialSource

# name -> defining module: submodules load on first attribute access (PEP 562), so a process that needs
# one leaf module does not pay for the rest of the package.
_LAZY: dict[str, str] = {
    "BridgeError": "firmware_bridge.errors",
    "CHANNELS": "firmware_bridge.signal_model",
    "CLASSES": "firmware_bridge.signal_model",
    "ClockMap": "firmware_bridge.clock",
    "Config": "firmware_bridge.messages",
    "DecoderStats": "firmware_bridge.decoder",
    "ERROR_KINDS": "firmware_bridge.decoder",
    "EncodeError": "firmware_bridge.errors",
    "ErrorReport": "firmware_bridge.messages",
    "FLAG_BOOT": "firmware_bridge.messages",
    "Frame": "firmware_bridge.messages",
    "FrameDecoder": "firmware_bridge.decoder",
    "FrameEncoder": "firmware_bridge.codec",
    "FrameError": "firmware_bridge.errors",
    "FrameType": "firmware_bridge.messages",
    "Heartbeat": "firmware_bridge.messages",
    "Hello": "firmware_bridge.messages",
    "HelloRequest": "firmware_bridge.messages",
    "LinkEvent": "firmware_bridge.link",
    "LinkSession": "firmware_bridge.link",
    "MAX_BODY": "firmware_bridge.messages",
    "MAX_PAYLOAD": "firmware_bridge.messages",
    "MAX_WIRE": "firmware_bridge.messages",
    "MachineParams": "firmware_bridge.signal_model",
    "McuError": "firmware_bridge.link",
    "McuHello": "firmware_bridge.link",
    "McuReset": "firmware_bridge.link",
    "PROTOCOL_VERSION": "firmware_bridge.messages",
    "Ping": "firmware_bridge.messages",
    "Pong": "firmware_bridge.messages",
    "ProtocolError": "firmware_bridge.errors",
    "SAMPLE_RATE_HZ": "firmware_bridge.signal_model",
    "SampleFormat": "firmware_bridge.messages",
    "Samples": "firmware_bridge.messages",
    "SensorBlock": "firmware_bridge.link",
    "SensorInfo": "firmware_bridge.messages",
    "SensorKind": "firmware_bridge.messages",
    "SentBlock": "firmware_bridge.simulator",
    "SerialSource": "firmware_bridge.transport",
    "SimConfig": "firmware_bridge.simulator",
    "Simulator": "firmware_bridge.simulator",
    "TimeSync": "firmware_bridge.messages",
    "TransportError": "firmware_bridge.errors",
    "VibrationStream": "firmware_bridge.signal_model",
    "WINDOW": "firmware_bridge.signal_model",
    "cobs_decode": "firmware_bridge.cobs",
    "cobs_encode": "firmware_bridge.cobs",
    "decode_body": "firmware_bridge.codec",
    "decode_frame": "firmware_bridge.codec",
    "encode_body": "firmware_bridge.codec",
    "encode_frame": "firmware_bridge.codec",
    "random_params": "firmware_bridge.signal_model",
    "synthesize": "firmware_bridge.signal_model",
}

__all__ = [
    "CHANNELS",
    "CLASSES",
    "ERROR_KINDS",
    "FLAG_BOOT",
    "MAX_BODY",
    "MAX_PAYLOAD",
    "MAX_WIRE",
    "PROTOCOL_VERSION",
    "SAMPLE_RATE_HZ",
    "WINDOW",
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
    "MachineParams",
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
    "VibrationStream",
    "cobs_decode",
    "cobs_encode",
    "decode_body",
    "decode_frame",
    "encode_body",
    "encode_frame",
    "random_params",
    "synthesize",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first use and cache the attribute (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names too, loaded or not."""
    return sorted(set(globals()) | set(__all__))

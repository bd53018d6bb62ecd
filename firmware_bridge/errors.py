"""Errors of the firmware bridge, split by who is at fault.

``ProtocolError`` (and its ``FrameError``): the bytes the microcontroller sent are not a valid frame; the
streaming decoder never raises these, it counts them by ``kind`` and skips. ``TransportError``: our side
of the link failed (port missing, open or write refused). ``EncodeError``: we were asked to encode a
message the protocol cannot carry (a caller's bug, caught before anything is written).
"""

from __future__ import annotations

__all__ = ["BridgeError", "EncodeError", "FrameError", "ProtocolError", "TransportError"]


class BridgeError(Exception):
    """Root of every firmware_bridge error."""


class ProtocolError(BridgeError):
    """The microcontroller sent something the protocol does not allow (bad bytes from outside)."""


class FrameError(ProtocolError):
    """One frame is malformed. ``kind`` is the counter it lands in (see ``ERROR_KINDS``)."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


class TransportError(BridgeError):
    """Our serial transport failed (port missing, permission, I/O error)."""

    def __init__(self, port: str, detail: str) -> None:
        self.port = port
        self.detail = detail
        super().__init__(f"serial port {port}: {detail}")


class EncodeError(BridgeError):
    """A message cannot be encoded: a field is out of range or the frame would exceed the maximum length."""

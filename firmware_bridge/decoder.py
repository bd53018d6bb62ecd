"""Streaming frame decoder in the sans-I/O style: bytes in, frames out, nothing raised.

``FrameDecoder.feed(data)`` returns every frame completed by ``data`` (an empty list means "need more
data"). Anything malformed is counted by kind (``ERROR_KINDS``) and skipped; decoding resumes at the next
0x00 delimiter, so the first valid frame after any garbage is decoded. The 16-bit frame counter is
tracked: a gap is added to ``lost_frames`` (corrupt frames are lost frames too), a HELLO with the BOOT
flag restarts the count, and a jump of half the counter space or more (a reset whose HELLO was lost) is
counted as ``sequence_jumps`` instead. The result never depends on how the byte stream is chunked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware_bridge.cobs import cobs_decode
from firmware_bridge.codec import check_body, parse_payload
from firmware_bridge.errors import FrameError
from firmware_bridge.messages import CRC_SIZE, FLAG_BOOT, HEADER_SIZE, MAX_WIRE, Frame, FrameType

__all__ = ["ERROR_KINDS", "DecoderStats", "FrameDecoder"]

ERROR_KINDS: tuple[str, ...] = ("cobs", "length", "crc", "version", "unknown_type", "payload")


@dataclass
class DecoderStats:
    """Monotonic counters of one decoder."""

    frames: int = 0
    bytes: int = 0
    lost_frames: int = 0
    sequence_jumps: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, int]:
        """Flat counters (``frame_errors_<kind>``) for telemetry."""
        out = {
            "frames": self.frames,
            "bytes": self.bytes,
            "lost_frames": self.lost_frames,
            "sequence_jumps": self.sequence_jumps,
            "frame_errors": self.error_total,
        }
        out.update({f"frame_errors_{k}": v for k, v in self.errors.items()})
        return out


class FrameDecoder:
    """Turns a byte stream into frames; see the module docstring for the guarantees."""

    def __init__(self, max_wire: int = MAX_WIRE) -> None:
        self.max_wire = max_wire
        self.stats = DecoderStats()
        self.last_error: FrameError | None = None
        self._buf = bytearray()
        self._discarding = False  # an over-long frame is being skipped up to the next delimiter
        self._expect: int | None = None  # next frame counter

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Decode what ``data`` completes; malformed frames are counted, never raised.

        ``data`` is any bytes-like object (bytes, bytearray, memoryview of any format or shape, array,
        mmap...): it is taken as its raw bytes. A ``memoryview`` used to decode nothing: ``b"\\x00" in view``
        compares the delimiter with integers and is always false.
        """
        if type(data) is not bytes and type(data) is not bytearray:
            data = bytes(memoryview(data))  # raw bytes whatever the buffer's format; TypeError if not bytes-like
        self.stats.bytes += len(data)
        if b"\x00" not in data:
            if self._discarding:
                return []
            self._buf += data
            self._check_overflow()
            return []
        if self._buf:
            self._buf += data
            parts: list[bytes] | list[bytearray] = self._buf.split(b"\x00")
        else:
            parts = bytes(data).split(b"\x00")
        tail = parts[-1]
        frames: list[Frame] = []
        for part in parts[:-1]:
            if self._discarding:
                self._discarding = False  # the over-long frame ends here; it was counted already
                continue
            if part:
                frame = self._one(part)
                if frame is not None:
                    frames.append(frame)
        self._buf = bytearray(tail)
        self._check_overflow()
        return frames

    def clear(self) -> None:
        """Forget a partial frame and the expected counter (after a reconnect): nothing is counted."""
        self._buf.clear()
        self._discarding = False
        self._expect = None

    def restart_sequence(self) -> None:
        """Forget the expected frame counter (the MCU restarted it), keeping any partial frame."""
        self._expect = None

    def _check_overflow(self) -> None:
        if len(self._buf) > self.max_wire:
            self._error(FrameError("length", f"expected a delimiter within {self.max_wire} bytes, got more"))
            self._buf.clear()
            self._discarding = True

    def _error(self, err: FrameError) -> None:
        self.stats.errors[err.kind] += 1
        self.last_error = err

    def _one(self, part: bytes | bytearray) -> Frame | None:
        if len(part) > self.max_wire:
            self._error(FrameError("length", f"expected at most {self.max_wire} encoded bytes, got {len(part)}"))
            return None
        body = cobs_decode(part)
        if body is None:
            detail = f"expected COBS blocks that end with the frame, got {len(part)} bytes that do not"
            self._error(FrameError("cobs", detail))
            return None
        try:
            version, ftype, flags, counter = check_body(body)
        except FrameError as e:
            self._error(e)
            return None
        self._track(ftype, flags, counter)
        try:
            frame = parse_payload(version, ftype, flags, counter, body[HEADER_SIZE:-CRC_SIZE])
        except FrameError as e:
            self._error(e)
            return None
        self.stats.frames += 1
        return frame

    def _track(self, ftype: int, flags: int, counter: int) -> None:
        expect = self._expect
        self._expect = (counter + 1) & 0xFFFF
        if expect is None or counter == expect:
            return
        if ftype == FrameType.HELLO and flags & FLAG_BOOT:
            return  # the MCU restarted its counter
        gap = (counter - expect) & 0xFFFF
        if gap >= 0x8000:
            self.stats.sequence_jumps += 1
        else:
            self.stats.lost_frames += gap

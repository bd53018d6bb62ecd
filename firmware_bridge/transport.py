"""The serial transport: pyserial I/O around the pure decoder and link session.

Open the port by a stable path (``/dev/serial/by-id/usb-...``, which survives ``ttyUSB`` renumbering;
the path is re-resolved at every open), read whatever is waiting in chunks (never ``readline``), and on
any I/O error or unplug close, back off (doubling with jitter up to ``reopen_backoff_max_s``) and reopen.
A link that stays silent for ``silence_timeout_s`` is reopened too: a USB adapter can vanish without an
error. After each open the host asks for a HELLO and, every ``time_sync_interval_s``, sends TIME_SYNC,
whose PONG gives the clock map a low-latency observation. Everything recoverable is counted, not raised.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterator

import serial

from firmware_bridge.codec import FrameEncoder
from firmware_bridge.decoder import FrameDecoder
from firmware_bridge.errors import TransportError
from firmware_bridge.link import LinkEvent, LinkSession, McuError, McuHello, McuReset
from firmware_bridge.messages import Frame, HelloRequest, TimeSync

__all__ = ["SerialSource"]

log = logging.getLogger(__name__)

_MAX_CHUNK = 65536


class SerialSource:
    """A microcontroller on a serial port; ``events()`` yields ``LinkEvent``s until ``close()``."""

    def __init__(
        self,
        port: str,
        baudrate: int = 921600,
        *,
        reopen_backoff_min_s: float = 0.05,
        reopen_backoff_max_s: float = 2.0,
        read_timeout_s: float = 0.1,
        silence_timeout_s: float = 5.0,
        hello_retry_s: float = 0.5,
        time_sync_interval_s: float = 10.0,
        session: LinkSession | None = None,
    ) -> None:
        if reopen_backoff_max_s < reopen_backoff_min_s or reopen_backoff_min_s <= 0:
            raise ValueError(
                f"backoff: expected 0 < min <= max, got min={reopen_backoff_min_s} max={reopen_backoff_max_s}"
            )
        self.port = port
        self.baudrate = baudrate
        self.backoff_min_s = reopen_backoff_min_s
        self.backoff_max_s = reopen_backoff_max_s
        self.read_timeout_s = read_timeout_s
        self.silence_timeout_s = silence_timeout_s
        self.hello_retry_s = hello_retry_s
        self.time_sync_interval_s = time_sync_interval_s
        self.session = session or LinkSession()
        self.decoder = FrameDecoder()
        self._encoder = FrameEncoder()
        self._closed = threading.Event()
        self._ser: serial.Serial | None = None
        self._write_lock = threading.Lock()
        self._nonce = random.getrandbits(32)
        self._counts = {"opens": 0, "reconnects": 0, "open_failures": 0, "io_errors": 0, "silence_reopens": 0}

    # ------------------------------------------------------------------------------------------ public

    def close(self) -> None:
        """Stop ``events()`` within about ``read_timeout_s``; safe from any thread, more than once."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def counters(self) -> dict[str, int]:
        """Monotonic counters: decoder errors by kind, lost frames, reconnects, resets, link counts."""
        out = self.decoder.stats.as_dict()
        out.update(self.session.counts)
        out.update(self._counts)
        return out

    def send(self, msg: Frame) -> bool:
        """Send a host → MCU message; False when the port is not open or the write failed (counted)."""
        with self._write_lock:
            ser = self._ser
            if ser is None:
                return False
            try:
                ser.write(self._encoder.encode(msg))
                return True
            except (serial.SerialException, OSError) as e:
                self._counts["io_errors"] += 1
                log.debug("write to %s failed: %s", self.port, e)
                return False

    def events(self) -> Iterator[LinkEvent]:
        """Yield link events until ``close()``; reconnects forever with backoff in between."""
        backoff = self.backoff_min_s
        first = True
        while not self._closed.is_set():
            try:
                self._open()
            except TransportError as e:
                self._counts["open_failures"] += 1
                level = logging.WARNING if self._counts["open_failures"] == 1 else logging.DEBUG
                log.log(level, "%s; retrying in up to %.2f s", e, backoff)
                self._closed.wait(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            backoff = self.backoff_min_s
            if not first:
                self._counts["reconnects"] += 1
            first = False
            try:
                yield from self._read_loop()
            finally:
                self._close_port()

    # ----------------------------------------------------------------------------------------- private

    def _open(self) -> None:
        try:
            real = os.path.realpath(self.port)
            ser = serial.Serial(
                self.port, self.baudrate, timeout=self.read_timeout_s, write_timeout=1.0, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as e:
            raise TransportError(self.port, f"cannot open: {e}") from e
        with self._write_lock:
            self._ser = ser
        self._counts["opens"] += 1
        self.decoder.clear()
        self.session.connected()
        log.info("opened serial port %s (%s) at %d baud", self.port, real, self.baudrate)

    def _close_port(self) -> None:
        with self._write_lock:
            ser, self._ser = self._ser, None
        if ser is not None:
            try:
                ser.close()
            except (serial.SerialException, OSError):
                pass

    def _read_loop(self) -> Iterator[LinkEvent]:
        ser = self._ser
        assert ser is not None
        now = time.monotonic()
        last_rx = now
        last_hello_req = -1e9
        last_sync = now
        ping_sent = False
        while not self._closed.is_set():
            now = time.monotonic()
            if self.session.need_hello and now - last_hello_req >= self.hello_retry_s:
                self.send(HelloRequest())
                last_hello_req = now
            if now - last_sync >= self.time_sync_interval_s:
                self._nonce = (self._nonce + 1) & 0xFFFFFFFF
                self.send(TimeSync(self._nonce, time.time_ns() // 1000))
                last_sync = now
            try:
                data = ser.read(1)
                if data:
                    waiting = ser.in_waiting
                    if waiting:
                        data += ser.read(min(waiting, _MAX_CHUNK))
            except (serial.SerialException, OSError) as e:
                self._counts["io_errors"] += 1
                log.warning("serial port %s failed (%s): reopening", self.port, e)
                return
            if not data:
                silent = time.monotonic() - last_rx
                if silent >= self.silence_timeout_s:
                    self._counts["silence_reopens"] += 1
                    log.warning("serial port %s silent for %.1f s: reopening", self.port, silent)
                    return
                if silent >= self.silence_timeout_s / 2 and not ping_sent:
                    self.send(HelloRequest())
                    ping_sent = True
                continue
            last_rx = time.monotonic()
            ping_sent = False
            host_us = time.monotonic_ns() // 1000
            wall_offset = time.time_ns() // 1000 - host_us
            for frame in self.decoder.feed(data):
                for ev in self.session.on_frame(frame, host_us, wall_offset):
                    self._log_event(ev)
                    yield ev

    def _log_event(self, ev: LinkEvent) -> None:
        if isinstance(ev, McuReset):
            log.warning(
                "MCU reset detected on %s: %s (boot id %s -> %s)",
                self.port, ev.reason, _hex(ev.old_boot_id), _hex(ev.new_boot_id),
            )
        elif isinstance(ev, McuHello):
            h = ev.hello
            log.info(
                "MCU on %s: firmware %d.%d.%d, uid %s, boot id %08x, %d sensor(s)",
                self.port, *h.fw_version, h.uid.hex(), h.boot_id, len(h.sensors),
            )
        elif isinstance(ev, McuError):
            log.warning("MCU on %s reports error %d: %s", self.port, ev.code, ev.text)


def _hex(v: int | None) -> str:
    return "unknown" if v is None else f"{v:08x}"

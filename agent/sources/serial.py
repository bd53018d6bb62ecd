"""A sensor source fed by a microcontroller on a serial port (the firmware_bridge protocol).

Thin: ``firmware_bridge.SerialSource`` does the I/O, reconnects, reset detection and clock mapping;
this adapter picks the configured sensor's blocks and hands them to the pipeline as ``SampleBlock``s
(wall-clock ``t0_us`` from the MCU clock mapping, the rate from the HELLO's sensor descriptor, physical
units). A block is flagged ``reset`` after anything that broke continuity: an MCU reset, a reconnect, a
changed sensor descriptor or a gap in the sensor's timestamps (lost frames). Frame errors by kind, lost
frames, reconnects and resets appear in ``counters()``; nothing recoverable is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from agent.settings import SerialSourceConfig
from agent.sources.base import CLOCK_UNSYNCED, SampleBlock, Source
from firmware_bridge import McuHello, McuReset, SensorBlock, SerialSource

__all__ = ["SerialSensorSource"]

log = logging.getLogger(__name__)


class SerialSensorSource(Source):
    """Blocks of one sensor (``cfg.sensor_id``) of the MCU on ``cfg.port``."""

    idle_ok = True  # an MCU may pause; the bridge reconnects by itself

    name = "serial"

    def __init__(self, stream: str, cfg: SerialSourceConfig) -> None:
        if not cfg.port:
            raise ValueError(f"serial source {stream!r}: port: expected a device path, got an empty string")
        self.stream = stream
        self.cfg = cfg
        self.bridge = SerialSource(cfg.port, cfg.baudrate, reopen_backoff_max_s=cfg.reopen_backoff_max_s)
        self._counts = {"blocks": 0, "samples": 0, "other_sensor_blocks": 0}
        self._pending_reset = False

    def blocks(self) -> Iterator[SampleBlock]:
        """Yield the configured sensor's blocks until ``close()``."""
        sid = self.cfg.sensor_id
        for ev in self.bridge.events():
            if isinstance(ev, SensorBlock):
                if ev.sensor.sensor_id != sid:
                    self._counts["other_sensor_blocks"] += 1
                    continue
                self._counts["blocks"] += 1
                self._counts["samples"] += len(ev.samples)
                block = SampleBlock(
                    t0_us=ev.t0_us,
                    rate_hz=float(ev.sensor.rate_hz),
                    samples=np.ascontiguousarray(ev.samples, dtype=np.float32),
                    clock_state=CLOCK_UNSYNCED,
                    reset=ev.reset or self._pending_reset,
                )
                self._pending_reset = False
                yield block
            elif isinstance(ev, McuReset):
                self._pending_reset = True
                log.warning("stream %s: MCU on %s was reset (%s)", self.stream, self.cfg.port, ev.reason)
            elif isinstance(ev, McuHello) and ev.hello.sensor(sid) is None:
                log.warning(
                    "stream %s: the MCU on %s announces sensors %s but not sensor %d: no samples until it does",
                    self.stream, self.cfg.port, [s.sensor_id for s in ev.hello.sensors], sid,
                )

    def close(self) -> None:
        """Stop ``blocks()`` within about 0.1 s; safe from any thread, more than once."""
        self.bridge.close()

    def counters(self) -> dict[str, int]:
        """Bridge counters (frame errors by kind, lost frames, reconnects, resets...) plus blocks yielded."""
        out = dict(self.bridge.counters())
        out.update(self._counts)
        return out

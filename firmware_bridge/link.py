"""What the host knows about the microcontroller at the other end: pure link state, frames → events.

``LinkSession`` turns decoded frames into ``LinkEvent``s: scaled ``SensorBlock``s with host times from
the ``ClockMap``, ``McuHello``, ``McuReset`` and ``McuError``. It decides what counts as an MCU reset
(a HELLO with a new boot id or the BOOT flag, or a sensor's clock running backwards) and which blocks
start after a discontinuity (reset, reconnect, changed sensor, a gap in a sensor's timestamps) so that
windowing never joins samples across one. No I/O, no clock reads: the shell passes times in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from firmware_bridge.clock import ClockMap
from firmware_bridge.messages import FLAG_BOOT, ErrorReport, Frame, Heartbeat, Hello, Pong, Samples, SensorInfo

__all__ = ["LinkEvent", "LinkSession", "McuError", "McuHello", "McuReset", "SensorBlock"]


@dataclass(frozen=True)
class SensorBlock:
    """Samples of one sensor in physical units, ``(n, channels)`` float32; ``t0_us`` is the first sample's
    host time (the clock the shell passed in plus its offset, normally wall-clock µs)."""

    sensor: SensorInfo
    t0_us: int
    t_mcu_us: int
    samples: npt.NDArray[np.float32]
    reset: bool
    counter: int


@dataclass(frozen=True)
class McuHello:
    """A HELLO arrived; ``reset`` when it shows that the MCU restarted."""

    hello: Hello
    reset: bool


@dataclass(frozen=True)
class McuReset:
    """The MCU restarted: ``reason`` says how we noticed; boot ids may be None when unknown."""

    old_boot_id: int | None
    new_boot_id: int | None
    reason: str


@dataclass(frozen=True)
class McuError:
    """The MCU reported an ERROR frame."""

    code: int
    text: str


LinkEvent = SensorBlock | McuHello | McuReset | McuError

_COUNTERS = (
    "hellos",
    "resets",
    "samples_before_hello",
    "unknown_sensor",
    "sensor_mismatch",
    "sample_gaps",
    "clock_backwards",
    "mcu_errors",
    "mcu_dropped_samples",
)


class LinkSession:
    """Link state across reconnects; see the module docstring."""

    def __init__(self, clock: ClockMap | None = None) -> None:
        self.clock = clock or ClockMap()
        self.hello: Hello | None = None
        self.need_hello = True
        self.counts: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._boot_id: int | None = None
        self._reset_counted = False  # a reset seen without HELLO; the next HELLO confirms it
        self._next_t: dict[int, int] = {}  # sensor id -> expected MCU time of its next block
        self._prev_t: dict[int, int] = {}  # sensor id -> MCU time of its last block
        self._discontinuous: set[int] = set()
        self._all_discontinuous = False
        self._connections = 0

    def connected(self) -> None:
        """A (re)connection: ask for HELLO; after a reconnect every sensor's next block is flagged ``reset``."""
        self.need_hello = True
        if self._connections:
            self._mark_all()
        self._connections += 1

    def _mark_all(self) -> None:
        self._all_discontinuous = True
        self._next_t.clear()
        self._prev_t.clear()

    def on_frame(self, frame: Frame, host_us: int, wall_offset_us: int = 0) -> list[LinkEvent]:
        """Events for one decoded frame that arrived at ``host_us``; ``wall_offset_us`` is added to times."""
        if isinstance(frame, Samples):
            block = self._samples(frame, host_us, wall_offset_us)
            return [block] if block is not None else []
        if isinstance(frame, Hello):
            return self._hello(frame, host_us)
        if isinstance(frame, (Heartbeat, Pong)):
            self.clock.observe(frame.t_us, host_us)
            if isinstance(frame, Heartbeat):
                self.counts["mcu_dropped_samples"] = frame.dropped_samples
            return []
        if isinstance(frame, ErrorReport):
            self.counts["mcu_errors"] += 1
            return [McuError(frame.code, frame.text)]
        return []  # host → MCU types echoed back are ignored

    def _hello(self, h: Hello, host_us: int) -> list[LinkEvent]:
        events: list[LinkEvent] = []
        self.counts["hellos"] += 1
        old = self._boot_id
        reset = old is not None and (h.boot_id != old or bool(h.flags & FLAG_BOOT))
        if reset and not self._reset_counted:
            self.counts["resets"] += 1
            reason = "boot id changed" if h.boot_id != old else "boot HELLO with the same boot id"
            events.append(McuReset(old, h.boot_id, reason))
        if reset or self._reset_counted:
            self.clock.reset()
            self._mark_all()
        self._reset_counted = False
        if self.hello is not None:
            for s in h.sensors:
                prev = self.hello.sensor(s.sensor_id)
                if prev != s:
                    self._discontinuous.add(s.sensor_id)
                    self._next_t.pop(s.sensor_id, None)
                    self._prev_t.pop(s.sensor_id, None)
        self._boot_id = h.boot_id
        self.hello = h
        self.need_hello = False
        self.clock.observe(h.t_us, host_us)
        events.append(McuHello(h, reset))
        return events

    def _samples(self, f: Samples, host_us: int, wall_offset_us: int) -> SensorBlock | None:
        if self.hello is None:
            self.counts["samples_before_hello"] += 1
            self.need_hello = True
            return None
        info = self.hello.sensor(f.sensor_id)
        if info is None:
            self.counts["unknown_sensor"] += 1
            return None
        if info.fmt != f.fmt or info.channels != f.channels:
            self.counts["sensor_mismatch"] += 1
            self.need_hello = True
            return None
        period_us = 1e6 / info.rate_hz
        count = f.count
        expected = self._next_t.get(f.sensor_id)
        flagged = self._all_discontinuous or f.sensor_id in self._discontinuous
        prev = self._prev_t.get(f.sensor_id)
        if prev is not None and f.t_us < prev:
            # the sensor's clock went backwards: the MCU restarted and its HELLO did not arrive
            self.counts["clock_backwards"] += 1
            if not self._reset_counted:
                self.counts["resets"] += 1
                self._reset_counted = True
            self.clock.reset()
            self._mark_all()
            self.need_hello = True
            flagged = True
        elif expected is not None and abs(f.t_us - expected) > period_us / 2 + 2:
            self.counts["sample_gaps"] += 1
            flagged = True
        self._next_t[f.sensor_id] = f.t_us + round(count * period_us)
        self._prev_t[f.sensor_id] = f.t_us
        self.clock.observe(f.t_us + round((count - 1) * period_us), host_us)
        t0 = self.clock.to_host(f.t_us) + wall_offset_us
        raw = f.raw().astype(np.float32)
        values = raw * np.float32(info.scale)
        if info.offset:
            values += np.float32(info.offset)
        if flagged:
            self._discontinuous.discard(f.sensor_id)
            if self._all_discontinuous:
                self._discontinuous.update(s.sensor_id for s in self.hello.sensors if s.sensor_id != f.sensor_id)
                self._all_discontinuous = False
        return SensorBlock(info, t0, f.t_us, values, flagged, f.counter)

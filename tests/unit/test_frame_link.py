"""LinkSession: scaled blocks with mapped times, reset detection, discontinuity flags, counters."""

from __future__ import annotations

import numpy as np

from firmware_bridge import (
    FLAG_BOOT,
    ErrorReport,
    Heartbeat,
    Hello,
    LinkSession,
    McuError,
    McuHello,
    McuReset,
    SampleFormat,
    Samples,
    SensorBlock,
    SensorInfo,
)

ACCEL = SensorInfo(0, 1, SampleFormat.I16, 3, 1000.0, 1 / 4096, 0.0, "g")
TEMP = SensorInfo(1, 4, SampleFormat.I16, 1, 10.0, 0.01, -40.0, "°C")


def hello(boot_id: int = 1, flags: int = FLAG_BOOT, sensors: tuple[SensorInfo, ...] = (ACCEL,)) -> Hello:
    return Hello((1, 0, 0), boot_id, 1000, b"u", sensors, flags=flags)


def samples(t_us: int, n: int = 32, sid: int = 0, ch: int = 3) -> Samples:
    raw = (np.arange(n * ch).reshape(n, ch) - 10) * 41
    return Samples.from_array(sid, t_us, raw)


def blocks(events: list) -> list[SensorBlock]:
    return [e for e in events if isinstance(e, SensorBlock)]


def test_samples_scaled_and_timed() -> None:
    s = LinkSession()
    s.connected()
    s.on_frame(hello(), host_us=1_000_000)
    (b,) = blocks(s.on_frame(samples(10_000), host_us=1_050_000, wall_offset_us=7))
    want = ((np.arange(96).reshape(32, 3) - 10) * 41).astype(np.float32) * np.float32(1 / 4096)
    assert b.samples.dtype == np.float32 and np.array_equal(b.samples, want)
    assert not b.reset
    # HELLO (MCU 1 ms) arrived at 1.0 s: delay 999 ms; the last sample (MCU 41 ms) at 1.05 s: 1009 ms.
    # The lower envelope wins: t0 = 10 ms + 999 ms, plus the wall offset.
    assert b.t0_us == 10_000 + 999_000 + 7


def test_offset_applied() -> None:
    s = LinkSession()
    s.on_frame(hello(sensors=(TEMP,)), 0)
    (b,) = blocks(s.on_frame(Samples.from_array(1, 5000, [[6500]]), 10_000))
    assert b.samples[0, 0] == np.float32(6500) * np.float32(0.01) + np.float32(-40.0)


def test_samples_before_hello_dropped_and_hello_requested() -> None:
    s = LinkSession()
    s.connected()
    s.on_frame(hello(), 0)
    s2 = LinkSession()
    assert s2.on_frame(samples(0), 0) == [] and s2.counts["samples_before_hello"] == 1 and s2.need_hello


def test_reset_by_new_boot_id() -> None:
    s = LinkSession()
    s.on_frame(hello(1), 0)
    s.on_frame(samples(10_000), 50_000)
    ev = s.on_frame(hello(2), 100_000)
    assert isinstance(ev[0], McuReset) and ev[0].old_boot_id == 1 and ev[0].new_boot_id == 2
    assert isinstance(ev[1], McuHello) and ev[1].reset
    (b,) = blocks(s.on_frame(samples(10_000), 150_000))
    assert b.reset and s.counts["resets"] == 1


def test_requested_hello_is_not_a_reset() -> None:
    s = LinkSession()
    s.on_frame(hello(1), 0)
    ev = s.on_frame(hello(1, flags=0), 10)
    assert [type(e) for e in ev] == [McuHello] and s.counts["resets"] == 0


def test_reset_by_clock_going_backwards_counted_once() -> None:
    s = LinkSession()
    s.on_frame(hello(1), 0)
    s.on_frame(samples(5_000_000), 50_000)
    (b,) = blocks(s.on_frame(samples(10_000), 60_000))
    assert b.reset and s.counts["resets"] == 1 and s.counts["clock_backwards"] == 1 and s.need_hello
    s.on_frame(hello(9, flags=0), 70_000)
    assert s.counts["resets"] == 1


def test_gap_in_timestamps_flags_next_block() -> None:
    s = LinkSession()
    s.on_frame(hello(), 0)
    assert not blocks(s.on_frame(samples(10_000), 1))[0].reset
    assert not blocks(s.on_frame(samples(42_000), 2))[0].reset
    assert blocks(s.on_frame(samples(106_000), 3))[0].reset  # 74_000 expected: one block lost
    assert s.counts["sample_gaps"] == 1


def test_reconnect_flags_every_sensor_once() -> None:
    s = LinkSession()
    s.connected()
    s.on_frame(hello(sensors=(ACCEL, TEMP)), 0)
    s.on_frame(samples(10_000), 1)
    s.connected()
    s.on_frame(hello(flags=0, sensors=(ACCEL, TEMP)), 2)
    assert blocks(s.on_frame(samples(42_000), 3))[0].reset
    assert blocks(s.on_frame(Samples.from_array(1, 5000, [[1]]), 4))[0].reset
    assert not blocks(s.on_frame(samples(74_000), 5))[0].reset


def test_mismatch_with_hello_is_dropped() -> None:
    s = LinkSession()
    s.on_frame(hello(), 0)
    assert s.on_frame(samples(0, ch=2), 1) == [] and s.counts["sensor_mismatch"] == 1
    assert s.on_frame(samples(0, sid=5), 1) == [] and s.counts["unknown_sensor"] == 1


def test_error_and_heartbeat() -> None:
    s = LinkSession()
    assert s.on_frame(ErrorReport(3, "adc stuck"), 0) == [McuError(3, "adc stuck")]
    s.on_frame(Heartbeat(1000, 17), 5000)
    assert s.counts["mcu_dropped_samples"] == 17 and s.clock.to_host(1000) == 5000

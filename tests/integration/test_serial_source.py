"""Through a real pty: simulator → firmware_bridge → agent SerialSensorSource.

The simulator's pty is reached through a symlink, as ``/dev/serial/by-id/...`` reaches a USB adapter; an
unplug closes the pty and recreates it (a new /dev/pts/N) behind the same symlink.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.settings import SerialSourceConfig
from agent.sources.base import SampleBlock
from agent.sources.serial import SerialSensorSource
from firmware_bridge import SimConfig, Simulator
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

SCALE = 1.0 / 4096


class Collector:
    """Runs ``source.blocks()`` in a thread and keeps what it yields."""

    def __init__(self, source: SerialSensorSource) -> None:
        self.source = source
        self.blocks: list[SampleBlock] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for b in self.source.blocks():
                self.blocks.append(b)
        except BaseException as e:  # surfaced by the test
            self.error = e

    def count(self) -> int:
        return len(self.blocks)

    def stop(self) -> None:
        self.source.close()
        self.thread.join(5)
        assert not self.thread.is_alive(), "blocks() did not notice close()"
        assert self.error is None, self.error


@pytest.fixture
def link(tmp_path: Path) -> str:
    by_id = tmp_path / "serial" / "by-id"
    by_id.mkdir(parents=True)
    return str(by_id / "usb-Simulated_MCU_SIM0001-if00")


@pytest.fixture
def sim(link: str) -> Iterator[Simulator]:
    s = Simulator(link, SimConfig(seed=42, record=2000)).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def collector(link: str, sim: Simulator) -> Iterator[Collector]:
    c = Collector(SerialSensorSource("vibration", SerialSourceConfig(port=link, reopen_backoff_max_s=0.5)))
    try:
        yield c
    finally:
        c.stop()


def sent_values(sim: Simulator) -> np.ndarray:
    return np.concatenate([b.raw for b in sim.history]).astype(np.float32) * np.float32(SCALE)


def assert_contiguous_run(received: list[SampleBlock], sim: Simulator) -> None:
    """The received samples are exactly a contiguous run of what the simulator sent, scaled to g."""
    got = np.concatenate([b.samples for b in received])
    sent = sent_values(sim)
    starts = np.flatnonzero(np.all(sent == got[0], axis=1))
    assert any(np.array_equal(sent[s : s + len(got)], got) for s in starts), "received samples not found in sent"


def test_blocks_carry_the_simulated_samples(collector: Collector, sim: Simulator) -> None:
    wait_for(lambda: collector.count() >= 30, timeout=10, what="30 blocks")
    blocks = collector.blocks[:30]
    for b in blocks:
        assert b.rate_hz == 1000.0 and b.samples.shape == (32, 3) and b.samples.dtype == np.float32
    assert not any(b.reset for b in blocks)
    assert_contiguous_run(blocks, sim)
    # y carries gravity: about +1 g
    assert abs(float(np.concatenate([b.samples for b in blocks])[:, 1].mean()) - 1.0) < 0.1
    # capture times: wall clock, 32 ms apart (to the MCU clock's µs)
    steps = np.diff([b.t0_us for b in blocks])
    assert np.all(np.abs(steps - 32_000) <= 2_000), steps
    assert abs(blocks[-1].t0_us - time.time() * 1e6) < 5e6
    c = collector.source.counters()
    assert c["frame_errors"] == 0 and c["lost_frames"] == 0 and c["reconnects"] == 0 and c["resets"] == 0


def test_unplug_is_recovered_within_2s(collector: Collector, sim: Simulator) -> None:
    wait_for(lambda: collector.count() >= 5, timeout=10, what="first blocks")
    before = collector.count()
    sim.unplug(0.5)
    wait_for(lambda: sim.counts["unplugs"] == 1 and sim._unplugged_until is None, timeout=5, what="replug")
    replugged = collector.count()
    # from the moment the pty is back behind the symlink, blocks flow again within 2 s
    wait_for(lambda: collector.count() > replugged + 1, timeout=2.0, what="blocks after the replug")
    after = collector.blocks[replugged:]
    assert after[0].reset and not any(b.reset for b in after[1:])
    assert not any(b.reset for b in collector.blocks[1:before])
    c = collector.source.counters()
    assert c["reconnects"] == 1 and c["resets"] == 0
    assert_contiguous_run(after, sim)


def test_unplug_with_power_loss_is_a_reset(collector: Collector, sim: Simulator) -> None:
    wait_for(lambda: collector.count() >= 5, timeout=10, what="first blocks")
    sim.unplug(0.3, reset=True)
    wait_for(lambda: collector.source.counters()["resets"] == 1, timeout=5, what="reset after replug")
    n = collector.count()
    wait_for(lambda: collector.count() > n, timeout=5, what="blocks after the reset")
    assert collector.blocks[n].reset or any(b.reset for b in collector.blocks[n - 1 : n + 1])


def test_mcu_reset_is_detected_and_logged(
    collector: Collector, sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    wait_for(lambda: collector.count() >= 5, timeout=10, what="first blocks")
    old_boot = sim.boot_id
    sim.reset()
    wait_for(lambda: collector.source.counters()["resets"] == 1, timeout=5, what="reset detected")
    n = collector.count()
    wait_for(lambda: collector.count() > n + 2, timeout=5, what="blocks after the reset")
    first_after = next(i for i, b in enumerate(collector.blocks) if b.reset)
    assert first_after >= 5 and not any(b.reset for b in collector.blocks[first_after + 1 :])
    msgs = [r.getMessage() for r in caplog.records if "MCU reset detected" in r.getMessage()]
    assert len(msgs) == 1 and f"{old_boot:08x}" in msgs[0] and f"{sim.boot_id:08x}" in msgs[0]
    c = collector.source.counters()
    assert c["reconnects"] == 0 and c["lost_frames"] == 0  # the counter restart is not a loss


def test_noise_flips_and_drops_are_counted_and_survived(collector: Collector, sim: Simulator) -> None:
    wait_for(lambda: collector.count() >= 5, timeout=10, what="first blocks")
    sim.noise(300)
    sim.flip_bits(3)
    sim.drop(2)
    wait_for(lambda: sim.counts["frames_flipped"] == 3 and sim.counts["frames_dropped"] == 2, timeout=5,
             what="faults injected")
    n = collector.count()
    wait_for(lambda: collector.count() >= n + 10, timeout=5, what="blocks after the faults")
    c = collector.source.counters()
    assert c["frame_errors"] >= 3  # the flipped frames (the noise adds its own)
    assert c["lost_frames"] >= 5  # 3 flipped + 2 dropped frames never arrived intact
    assert c["reconnects"] == 0 and c["resets"] == 0
    intact = [b for b in collector.blocks[n:]]
    assert_contiguous_run(intact[-5:], sim)


def test_port_missing_at_start_then_appearing(link: str) -> None:
    c = Collector(SerialSensorSource("vibration", SerialSourceConfig(port=link, reopen_backoff_max_s=0.3)))
    try:
        wait_for(lambda: c.source.counters()["open_failures"] >= 2, timeout=5, what="open failures")
        with Simulator(link, SimConfig(seed=1)):
            wait_for(lambda: c.count() >= 3, timeout=5, what="blocks once the port exists")
    finally:
        c.stop()


def test_close_is_noticed_quickly(collector: Collector) -> None:
    wait_for(lambda: collector.count() >= 1, timeout=10, what="a block")
    t = time.monotonic()
    collector.source.close()
    collector.thread.join(2)
    assert not collector.thread.is_alive()
    assert time.monotonic() - t < 1.0  # the contract is 0.5 s; 1 s leaves room for a loaded CI machine


def test_clock_drift_is_estimated(link: str) -> None:
    with Simulator(link, SimConfig(seed=3, drift_ppm=500.0)):
        c = Collector(SerialSensorSource("vibration", SerialSourceConfig(port=link)))
        try:
            clock = c.source.bridge.session.clock
            wait_for(lambda: clock.ready and len(clock._buckets) >= 5, timeout=15, what="5 s of clock data")
            # the MCU runs 500 ppm fast, so host time per MCU µs is 1/1.0005: slope ≈ -500 ppm
            assert clock.drift_ppm == pytest.approx(-500, abs=150)
        finally:
            c.stop()


def test_simulator_cli_help() -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "firmware_bridge.simulator", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    for flag in ("--link", "--rate", "--noise-every", "--flip-every", "--drop-every", "--reset-every",
                 "--unplug-every", "--control-stdin"):
        assert flag in p.stdout

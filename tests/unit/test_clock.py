"""ClockMap: offset from the lower envelope of arrival delays, drift from its slope."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge import ClockMap


def _feed(cm: ClockMap, offset_us: float, drift_ppm: float, seconds: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for k in range(int(seconds * 50)):  # 50 frames/s
        mcu = 5_000_000 + k * 20_000
        true_host = mcu + offset_us + drift_ppm * 1e-6 * (mcu - 5_000_000)
        latency = 200 + rng.exponential(2000)  # USB serial: >= 200 µs, a long tail
        cm.observe(mcu, int(true_host + latency))


def test_needs_an_observation() -> None:
    with pytest.raises(ValueError, match="expected at least one observation"):
        ClockMap().to_host(0)


def test_single_observation_maps_by_its_delay() -> None:
    cm = ClockMap()
    cm.observe(1000, 51_000)
    assert cm.to_host(2000) == 52_000 and cm.drift_ppm == 0


@pytest.mark.parametrize("drift_ppm", [0.0, 80.0, -350.0, 5000.0])
def test_offset_and_drift_estimated(drift_ppm: float) -> None:
    cm = ClockMap()
    offset = 1_700_000_000_000_000.0
    _feed(cm, offset, drift_ppm, seconds=60)
    assert cm.drift_ppm == pytest.approx(drift_ppm, abs=5.0)
    mcu = 5_000_000 + 59 * 1_000_000
    true = mcu + offset + drift_ppm * 1e-6 * (mcu - 5_000_000)
    # mapped times are late by about the smallest latency seen (>= 200 µs), never by the typical one
    assert 0 <= cm.to_host(mcu) - true < 600


def test_never_earlier_than_any_arrival_allows() -> None:
    cm = ClockMap()
    _feed(cm, 10_000.0, 40.0, seconds=20, seed=3)
    # a frame that arrived at host time h carried MCU time m: the mapping must not put m after h
    cm2 = ClockMap()
    rng = np.random.default_rng(4)
    obs = []
    for k in range(500):
        m = k * 20_000
        h = m + 10_000 + int(rng.exponential(1000)) + 100
        cm2.observe(m, h)
        obs.append((m, h))
    assert all(cm2.to_host(m) <= h + 1 for m, h in obs[-64:])


def test_reset_forgets() -> None:
    cm = ClockMap()
    _feed(cm, 0.0, 0.0, seconds=5)
    cm.reset()
    assert not cm.ready
    cm.observe(0, 999)
    assert cm.to_host(0) == 999

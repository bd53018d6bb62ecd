"""Issue 12 item 16: the signed CPU figures cover the interval since the previous record of the *same* stream.

Two builders (the status writer and the telemetry loop) used to share psutil's one ``cpu_percent`` baseline,
so whichever built last reset the other's interval. Here a known busy period (this process spinning one core)
happens between two telemetry builds while another builder builds in between: the telemetry record must
still show it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agent.telemetry import CpuMeter, CpuSample, TelemetryBuilder, cpu_percent_between
from tests.unit.test_telemetry import snapshot

BUSY_CPU_S = 0.3  # CPU seconds this process burns: a known amount, however loaded the machine is


def spin(cpu_seconds: float) -> None:
    """Burn ``cpu_seconds`` of this process's CPU time (not wall time: the machine may be busy)."""
    end = time.process_time() + cpu_seconds
    x = 0
    while time.process_time() < end:
        x += 1


def measured(body: Callable[[], None]) -> tuple[float, float]:
    """(agent %, host lower bound %) the test itself measures around ``body``."""
    t0, c0 = time.monotonic(), time.process_time()
    body()
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    return 100.0 * cpu / wall, 100.0 * cpu / (wall * (os.cpu_count() or 1))


def test_a_busy_period_shows_up_in_the_next_record_despite_another_builder() -> None:
    telemetry, status = TelemetryBuilder(), TelemetryBuilder()
    snap = snapshot()
    out: dict[str, Any] = {}

    def interval() -> None:
        telemetry.build(snap)  # baseline of the telemetry stream
        spin(BUSY_CPU_S)
        status.build(snap)  # the status writer builds in between (it used to reset the shared baseline)
        out["rec"] = telemetry.build(snap)  # right after: with a shared baseline this interval was ~0 s long

    agent_pct, host_min = measured(interval)
    host = out["rec"]["host"]
    assert agent_pct >= 5.0, "the test burnt a known amount of CPU"
    # The record covers the whole interval: the agent's figure is what the test measured (the round-1 code
    # reported ~0 here, the share of the microseconds since the status build).
    assert host["agent_cpu_percent"] >= 0.7 * agent_pct, (host, agent_pct)
    # The spin is part of the host's busy time, so the host figure is at least its share of all CPUs.
    assert host["cpu_percent"] >= 0.7 * host_min, (host, host_min)


def test_an_idle_interval_after_a_busy_one_reads_low() -> None:
    meter = CpuMeter()
    busy_pct, _ = measured(lambda: spin(BUSY_CPU_S))
    busy_agent = meter.read()[1]
    time.sleep(0.5)
    idle_agent = meter.read()[1]
    assert busy_agent >= 0.7 * busy_pct
    assert idle_agent < 10.0, (busy_agent, idle_agent)


def test_meters_do_not_share_a_baseline() -> None:
    a, b = CpuMeter(), CpuMeter()
    pct, _ = measured(lambda: spin(BUSY_CPU_S))
    assert b.read()[1] >= 0.7 * pct
    assert a.read()[1] >= 0.7 * pct, "reading b must not reset a"


samples = st.builds(CpuSample, wall=st.floats(0, 1e6), total=st.floats(0, 1e7), busy=st.floats(0, 1e7),
                    process=st.floats(0, 1e6))


@given(samples, samples)
def test_cpu_percent_is_bounded_and_never_negative(prev: CpuSample, cur: CpuSample) -> None:
    host, proc = cpu_percent_between(prev, cur)
    assert 0.0 <= host <= 100.0
    assert proc >= 0.0


@given(st.floats(0.01, 1e4), st.floats(0.0, 1.0), st.floats(0.0, 4.0))
def test_cpu_percent_recovers_the_busy_share(dt: float, share: float, cores: float) -> None:
    ncpu = 4
    prev = CpuSample(wall=100.0, total=1000.0, busy=300.0, process=50.0)
    cur = CpuSample(wall=100.0 + dt, total=1000.0 + dt * ncpu, busy=300.0 + dt * ncpu * share,
                    process=50.0 + dt * cores)
    host, proc = cpu_percent_between(prev, cur)
    assert abs(host - 100.0 * share) <= 0.06
    assert abs(proc - 100.0 * cores) <= 0.06 + 1e-9 * proc

"""Issue 12 item 16: the signed CPU figures cover the interval since the previous record of the *same* stream.

Two builders (the status writer and the telemetry loop) used to share psutil's one ``cpu_percent`` baseline,
so whichever built last reset the other's interval. Here a known busy period (this process spinning one core)
happens between two telemetry builds while another builder builds in between: the telemetry record must
still show it.
"""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from agent.telemetry import CpuMeter, CpuSample, TelemetryBuilder, cpu_percent_between
from tests.unit.test_telemetry import snapshot

BUSY_S = 0.6


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def test_a_busy_period_shows_up_in_the_next_record_despite_another_builder() -> None:
    telemetry, status = TelemetryBuilder(), TelemetryBuilder()
    snap = snapshot()
    telemetry.build(snap)  # baseline of the telemetry stream
    spin(BUSY_S)
    status.build(snap)  # the status writer builds in between (it used to reset the shared baseline)
    rec = telemetry.build(snap)  # right after: with a shared baseline this interval was ~0 s long
    host = rec["host"]
    # One core spun for (nearly) the whole interval: the agent's figure is ~100 % of one core.
    assert host["agent_cpu_percent"] >= 50.0, host
    # The host figure is the busy share of every CPU: one busy core of N is at least 100/N, give or take.
    ncpu = len(__import__("os").sched_getaffinity(0)) or 1
    assert host["cpu_percent"] >= 50.0 / max(ncpu, 1), host


def test_an_idle_interval_after_a_busy_one_reads_low() -> None:
    meter = CpuMeter()
    spin(0.3)
    busy_agent = meter.read()[1]
    time.sleep(0.4)
    idle_agent = meter.read()[1]
    assert busy_agent >= 50.0
    assert idle_agent < busy_agent / 2, (busy_agent, idle_agent)


def test_meters_do_not_share_a_baseline() -> None:
    a, b = CpuMeter(), CpuMeter()
    spin(0.4)
    assert b.read()[1] >= 50.0
    assert a.read()[1] >= 50.0, "reading b must not reset a"


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

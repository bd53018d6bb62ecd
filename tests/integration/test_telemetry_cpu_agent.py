"""Issue 12 item 16 end to end: a known busy period inside a running agent shows up in its signed telemetry.

The agent runs in this process (so the CPU this test burns is the agent's), with the status writer rewriting
every 0.2 s and telemetry every 3 s: the two builders that used to share psutil's one baseline. Right after a
telemetry record the test burns 0.4 CPU-s, then idles; the CPU seconds the next two records report (percent x
interval) must account for it. With the shared baseline each record covered only the idle last 0.2 s of its
interval and reported ~0 (this test fails on the round-1 code).
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.service import Agent
from envelope import open_record
from tests.support.agent_proc import agent_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

BUSY_CPU_S = 0.4
INTERVAL_S = 3.0


def spin(cpu_seconds: float) -> None:
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_a_busy_period_shows_up_in_the_next_telemetry_records(tmp_path: Path, mosquitto: Mosquitto,
                                                               unique_id: str) -> None:
    device = f"dev-{unique_id}"
    cfg = parse_config(agent_config(tmp_path, device, mosquitto.url,
                                    source={"type": "simulated", "fault": "normal", "realtime": True,
                                            "rate_hz": 1000.0},
                                    status={"interval_s": 0.2}, telemetry={"interval_s": INTERVAL_S}),
                       str(tmp_path / "agent.toml"))
    rec = Recorder(mosquitto.url, [f"edge/v1/{device}/telemetry"])
    agent = Agent(cfg)
    agent.start()
    try:
        def records() -> list[dict]:
            return [open_record(m.payload).payload() for m in rec.snapshot()]

        wait_for(lambda: len(records()) >= 1, timeout=20, what="a first telemetry record")
        before = len(records())
        wait_for(lambda: len(records()) > before, timeout=20, interval=0.005, what="the next record")
        # Right after a record: burn CPU early in the interval, then idle. A builder whose baseline the status
        # writer (every 0.2 s) keeps resetting sees only the idle end of the interval.
        n = len(records())
        spin(BUSY_CPU_S)
        wait_for(lambda: len(records()) >= n + 2, timeout=20, what="two records after the busy period")
        recs = records()
    finally:
        agent.stop()
        rec.close()
    # CPU seconds the two records after the busy period report (percent x their interval, from uptime).
    window = recs[n - 1:n + 2]
    reported = sum(cur["host"]["agent_cpu_percent"] / 100.0 * (cur["uptime_s"] - prev["uptime_s"])
                   for prev, cur in itertools.pairwise(window))
    assert reported >= 0.7 * BUSY_CPU_S, (f"telemetry reports {reported:.2f} CPU-s over the busy period, the test "
                                          f"burnt {BUSY_CPU_S}: {[r['host'] for r in window]}")

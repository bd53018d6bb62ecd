"""R1: 50 kill -9 of the agent at random moments during 10,000 records → 0 lost, 0 duplicates stored.

The agent produces 250 records/s (so the 50 lives span about 10,000 records), delivery mode `aggregator`,
a real `edge-aggregator` stores into SQLite.
Each life of the agent ends with SIGKILL at a random moment 0.2–2.0 s after its start (so some kills land
during start-up, most while committing and publishing). A record is a committed seq: every seq from 1 to
the last committed one must end up stored exactly once, or still wait in the outbox.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.reliability.harness import RATE_500_PER_S, AggregatorProcess, Device, outbox_meta, outbox_rows, report
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

KILLS = 50
TARGET = 10_000


def test_r1_kill9_agent_50_times_loses_nothing(device: Device, mosquitto: Mosquitto,
                                                aggregator: AggregatorProcess) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    source = {**RATE_500_PER_S, "rate_hz": 32000.0}  # 250 records/s
    conf = device.config(mosquitto.url, source=source, outbox={"path": str(device.outbox), "delivery": "aggregator",
                                                "resend_after_s": 3.0})
    aggregator.start()
    started = time.monotonic()
    agent = device.agent(conf)
    try:
        for i in range(KILLS):
            agent = device.agent(conf).start()
            # The fault schedule itself: a random moment in this life of the agent.
            time.sleep(rng.uniform(0.2, 2.0))
            assert agent.alive(), f"life {i}: the agent exited by itself\n{agent.log()[-3000:]}"
            agent.kill9()
            agent.stop()
        killed_at = outbox_meta(device.outbox, "last_seq")

        agent = device.agent(conf).start()
        wait_for(lambda: outbox_meta(device.outbox, "last_seq") >= TARGET, timeout=120,
                 what=f"{TARGET} committed records")
        target = outbox_meta(device.outbox, "last_seq")
        drain_from = time.monotonic()
        wait_for(lambda: aggregator.contiguous(device.device_id) >= target, timeout=120,
                 what=f"the aggregator to store every seq up to {target}")
        drain_s = time.monotonic() - drain_from
        agent.kill9()
    finally:
        agent.stop()
    last = outbox_meta(device.outbox, "last_seq")
    waiting = outbox_rows(device.outbox)
    figures = aggregator.stored(device.device_id)
    stored = set(figures.seqs)
    lost = [s for s in range(1, last + 1) if s not in stored and s not in waiting]
    report("R1", seed=seed, kills=KILLS + 1, committed=last, committed_before_final_run=killed_at,
           stored=len(stored), still_in_outbox=len(waiting - stored), lost=len(lost),
           duplicates_stored=figures.duplicates_stored, duplicates_received_and_dropped=figures.duplicates_received,
           epochs=outbox_meta(device.outbox, "epoch"), catch_up_s=round(drain_s, 1),
           runtime_s=round(time.monotonic() - started, 1))
    assert last >= TARGET
    assert lost == [], f"lost seqs (first 20): {lost[:20]}"
    assert figures.duplicates_stored == 0
    # Kills during start-up (before the outbox was opened) do not start an epoch; every other start does.
    assert 1 < outbox_meta(device.outbox, "epoch") <= KILLS + 1
    assert aggregator.alive(), aggregator.log()

"""R2: 5 kill -9 of the broker while the agent publishes → 0 lost end to end (aggregator delivery mode).

A PUBACK is not durable: a broker killed with SIGKILL (persistence off) loses messages it already
acknowledged. The agent keeps every row until the aggregator's durable ack and re-sends from the last ack
after reconnecting, so nothing committed is lost.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.reliability.harness import AggregatorProcess, Device, outbox_meta, outbox_rows, report
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

KILLS = 5


def test_r2_kill9_broker_5_times_loses_nothing(device: Device, mosquitto: Mosquitto,
                                               aggregator: AggregatorProcess) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    conf = device.config(mosquitto.url, outbox={"path": str(device.outbox), "delivery": "aggregator",
                                                "resend_after_s": 3.0})
    aggregator.start()
    agent = device.agent(conf).start()
    recoveries = []
    try:
        wait_for(lambda: aggregator.contiguous(device.device_id) > 500, timeout=60, what="steady delivery")
        for _ in range(KILLS):
            time.sleep(rng.uniform(1.0, 3.0))  # the fault schedule: a random moment while publishing
            mosquitto.kill()
            time.sleep(rng.uniform(0.2, 1.5))  # down for a moment
            mosquitto.restart()
            up = time.monotonic()
            at_restart = outbox_meta(device.outbox, "last_seq")
            wait_for(lambda: aggregator.contiguous(device.device_id) >= at_restart,  # noqa: B023 - waited for here
                     timeout=60, what=f"delivery of every seq up to {at_restart} after the broker restart")
            recoveries.append(time.monotonic() - up)
            assert agent.alive(), agent.log()[-3000:]
        agent.kill9()
    finally:
        agent.stop()
    last = outbox_meta(device.outbox, "last_seq")
    waiting = outbox_rows(device.outbox)
    figures = aggregator.stored(device.device_id)
    stored = set(figures.seqs)
    lost = [s for s in range(1, last + 1) if s not in stored and s not in waiting]
    report("R2", seed=seed, broker_kills=KILLS, committed=last, stored=len(stored), lost=len(lost),
           duplicates_stored=figures.duplicates_stored, duplicates_received_and_dropped=figures.duplicates_received,
           recovery_s_max=round(max(recoveries), 1), recovery_s=[round(r, 1) for r in recoveries])
    assert lost == [], f"lost seqs (first 20): {lost[:20]}"
    assert figures.duplicates_stored == 0
    assert aggregator.alive(), aggregator.log()

"""R7: a dead connection (a TCP proxy that stops forwarding, sockets left open) is detected within
1.5 × keepalive + 2 s, and the agent reconnects and delivers everything.

Detection is measured from the moment the proxy froze the connection to the moment the agent's new
connection arrived at the proxy (so it includes the reconnect's first attempt).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.harness import AggregatorProcess, Device, outbox_meta, outbox_rows, report
from tests.reliability.proxy import StallingProxy
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

KEEPALIVE_S = 5
LIMIT_S = 1.5 * KEEPALIVE_S + 2
STALLS = 2


@pytest.fixture
def proxy(mosquitto: Mosquitto) -> Iterator[StallingProxy]:
    p = StallingProxy(mosquitto.port)
    try:
        yield p
    finally:
        p.close()


def test_r7_dead_link_detected_within_one_and_a_half_keepalives(device: Device, mosquitto: Mosquitto,
                                                                aggregator: AggregatorProcess,
                                                                proxy: StallingProxy) -> None:
    conf = device.config(proxy.url, outbox={"path": str(device.outbox), "delivery": "aggregator",
                                            "resend_after_s": 3.0},
                         mqtt={"url": proxy.url, "keepalive_s": KEEPALIVE_S, "reconnect_min_s": 0.1,
                               "reconnect_max_s": 1.0})
    aggregator.start()
    agent = device.agent(conf).start()
    detections = []
    try:
        for i in range(STALLS):
            wait_for(lambda: aggregator.contiguous(device.device_id) > outbox_meta(device.outbox, "last_seq") - 1000
                     and aggregator.contiguous(device.device_id) > 500, timeout=60, what="steady delivery")
            connections = len(proxy.accepts)
            stalled = proxy.stall()
            wait_for(lambda: len(proxy.accepts) > connections, timeout=LIMIT_S + 10,  # noqa: B023
                     what=f"reconnect after stall {i + 1}")
            detections.append(proxy.accepts[connections] - stalled)
        at = outbox_meta(device.outbox, "last_seq")
        wait_for(lambda: aggregator.contiguous(device.device_id) >= at, timeout=60, what="delivery after the stalls")
        agent.kill9()
    finally:
        agent.stop()
    log = agent.log()
    last = outbox_meta(device.outbox, "last_seq")
    waiting = outbox_rows(device.outbox)
    figures = aggregator.stored(device.device_id)
    stored = set(figures.seqs)
    lost = [s for s in range(1, last + 1) if s not in stored and s not in waiting]
    report("R7", keepalive_s=KEEPALIVE_S, limit_s=LIMIT_S, detection_s=[round(d, 2) for d in detections],
           dead_link_log_lines=log.count("connection is dead"), lost=len(lost),
           duplicates_stored=figures.duplicates_stored)
    assert all(d <= LIMIT_S for d in detections), detections
    assert log.count("connection is dead") >= STALLS
    assert lost == []

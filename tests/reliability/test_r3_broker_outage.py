"""R3: the broker down for 60 s while the agent produces 500 records/s → everything is delivered
afterwards, in seq order per device.

The outbox holds the ~30,000 records of the outage; after the broker returns the agent re-sends from the
last durable ack. Order is checked twice: in the aggregator's store (insertion order) and on the wire (the
first arrival of each seq at an independent subscriber).
"""

from __future__ import annotations

import time

import pytest

from envelope import open_record
from tests.reliability.harness import AggregatorProcess, Device, outbox_meta, outbox_rows, report
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

OUTAGE_S = 60.0


def test_r3_broker_down_60s_then_everything_delivered_in_order(device: Device, mosquitto: Mosquitto,
                                                               aggregator: AggregatorProcess) -> None:
    conf = device.config(mosquitto.url, outbox={"path": str(device.outbox), "delivery": "aggregator",
                                                "resend_after_s": 5.0})
    aggregator.start()
    rec = Recorder(mosquitto.url, [f"edge/v1/{device.device_id}/result/#"])
    agent = device.agent(conf).start()
    try:
        wait_for(lambda: aggregator.contiguous(device.device_id) > 1000, timeout=60, what="steady delivery")
        before = outbox_meta(device.outbox, "last_seq")
        mosquitto.kill()
        down = time.monotonic()
        time.sleep(OUTAGE_S)  # the fault itself: the broker stays down this long
        at_restart = outbox_meta(device.outbox, "last_seq")
        depth_at_restart = len(outbox_rows(device.outbox))
        mosquitto.restart()
        up = time.monotonic()
        wait_for(lambda: aggregator.contiguous(device.device_id) >= at_restart, timeout=180,
                 what=f"delivery of every seq up to {at_restart}")
        recovery_s = time.monotonic() - up
        assert agent.alive(), agent.log()[-3000:]
        agent.kill9()
    finally:
        agent.stop()
        rec.close()
    rate = (at_restart - before) / (up - down)
    last = outbox_meta(device.outbox, "last_seq")
    waiting = outbox_rows(device.outbox)
    figures = aggregator.stored(device.device_id)
    stored = set(figures.seqs)
    lost = [s for s in range(1, last + 1) if s not in stored and s not in waiting]

    first_arrivals: list[int] = []
    seen: set[int] = set()
    for m in rec.snapshot():
        seq = open_record(m.payload).seq
        if seq not in seen:
            seen.add(seq)
            first_arrivals.append(seq)
    wire_out_of_order = sum(1 for a, b in zip(first_arrivals, first_arrivals[1:], strict=False) if b < a)

    report("R3", outage_s=OUTAGE_S, records_per_s_during_outage=round(rate), backlog_at_restart=depth_at_restart,
           committed=last, stored=len(stored), lost=len(lost), duplicates_stored=figures.duplicates_stored,
           stored_out_of_order=figures.out_of_order, wire_out_of_order=wire_out_of_order,
           recovery_s=round(recovery_s, 1))
    assert rate >= 400, "the agent kept producing during the outage"
    assert depth_at_restart >= 0.9 * OUTAGE_S * 400, "the outage backlog waited in the outbox"
    assert lost == [], f"lost seqs (first 20): {lost[:20]}"
    assert figures.duplicates_stored == 0
    assert figures.out_of_order == 0, "stored in seq order"
    assert wire_out_of_order == 0, "first arrivals in seq order"

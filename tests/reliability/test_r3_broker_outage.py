"""R3: the broker down for 60 s while the agent produces 500 records/s → everything is delivered
afterwards, in seq order per device.

The outbox holds the ~30,000 records of the outage; after the broker returns the agent re-sends from the
last durable ack. Order is checked in the aggregator's store (insertion order) and by the aggregator's own
reorder counter.

The broker runs with persistence, as a production broker does: the aggregator's persistent session (its
subscription and the messages queued for it) survives the restart, so the backlog reaches it in order
whichever of agent and aggregator reconnects first. Without broker persistence the aggregator's
subscription is gone until it reconnects; what the agent sent in between arrives again after
``resend_after_s``, after later seqs: nothing is lost, the aggregator counts it as reordering (see R2 and
docs/reliability.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.reliability.harness import AggregatorProcess, Device, outbox_meta, outbox_rows, report
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

OUTAGE_S = 60.0


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """This module's broker keeps sessions across restarts (persistence, autosave every second)."""
    broker = Mosquitto(persistence=True).start()
    try:
        yield broker
    finally:
        broker.cleanup()


def test_r3_broker_down_60s_then_everything_delivered_in_order(device: Device, mosquitto: Mosquitto,
                                                               aggregator: AggregatorProcess) -> None:
    conf = device.config(mosquitto.url, outbox={"path": str(device.outbox), "delivery": "aggregator",
                                                "resend_after_s": 5.0})
    aggregator.start()
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
    rate = (at_restart - before) / (up - down)
    last = outbox_meta(device.outbox, "last_seq")
    waiting = outbox_rows(device.outbox)
    figures = aggregator.stored(device.device_id)
    stored = set(figures.seqs)
    lost = [s for s in range(1, last + 1) if s not in stored and s not in waiting]

    report("R3", outage_s=OUTAGE_S, records_per_s_during_outage=round(rate), backlog_at_restart=depth_at_restart,
           committed=last, stored=len(stored), lost=len(lost), duplicates_stored=figures.duplicates_stored,
           stored_out_of_order=figures.out_of_order, aggregator_reorders=figures.reorders,
           recovery_s=round(recovery_s, 1))
    assert rate >= 400, "the agent kept producing during the outage"
    assert depth_at_restart >= 0.9 * OUTAGE_S * 400, "the outage backlog waited in the outbox"
    assert lost == [], f"lost seqs (first 20): {lost[:20]}"
    assert figures.duplicates_stored == 0
    assert figures.out_of_order == 0, "stored in seq order"
    assert figures.reorders == 0, "the aggregator saw no seq arrive after a higher one"

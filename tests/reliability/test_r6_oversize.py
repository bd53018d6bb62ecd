"""R6: a record larger than the broker's maximum packet size never blocks the ones after it.

One QoS 1 message above Mosquitto's ``max_packet_size`` makes the broker drop the connection, and a client
that re-sends it after every reconnect delivers nothing ever again. The agent sizes every record against
``mqtt.max_packet_bytes`` (set to the broker's limit) before it enters the outbox and refuses what does not
fit, without giving it a seq. The oversize record here is the birth record, made too large by a
certificate file padded with extra certificates.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import AggregatorProcess, Device, outbox_meta, report
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MAX_PACKET = 4096


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """This module's broker refuses packets above MAX_PACKET bytes."""
    broker = Mosquitto(extra=f"max_packet_size {MAX_PACKET}").start()
    try:
        yield broker
    finally:
        broker.cleanup()


def test_r6_oversize_record_is_refused_and_blocks_nothing(tmp_path: Path, device: Device, mosquitto: Mosquitto,
                                                         aggregator: AggregatorProcess) -> None:
    files = device.fleet.devices[device.device_id]
    padded = tmp_path / "padded-chain.pem"
    padded.write_bytes(files.cert.read_bytes() + device.fleet.ca_cert.read_bytes() * 8)
    status_file = tmp_path / "status.json"
    conf = device.config(mosquitto.url, outbox={"path": str(device.outbox), "delivery": "aggregator",
                                                "resend_after_s": 3.0},
                         mqtt={"url": mosquitto.url, "max_packet_bytes": MAX_PACKET, "keepalive_s": 10,
                               "reconnect_min_s": 0.1, "reconnect_max_s": 1.0},
                         certificate=str(padded), status={"path": str(status_file), "interval_s": 0.5})
    aggregator.start()
    agent = device.agent(conf).start()
    try:
        started = time.monotonic()
        wait_for(lambda: aggregator.contiguous(device.device_id) >= 2000, timeout=60,
                 what="2,000 records delivered after the oversize one")
        delivered_s = time.monotonic() - started
        def read_status() -> dict[str, Any] | None:
            return json.loads(status_file.read_text()) if status_file.exists() else None
        doc = wait_for(read_status, timeout=10, what="status file")
        assert doc is not None
        agent.kill9()
    finally:
        agent.stop()
    log = agent.log()
    assert "refused a status record of" in log and "-byte packet budget" in log
    figures = aggregator.stored(device.device_id)
    last = outbox_meta(device.outbox, "last_seq")
    assert figures.seqs[:1] == [1] and figures.lost(2000) == []
    mqtt_log = mosquitto.log()
    disconnects = mqtt_log.count("disconnected") + mqtt_log.count("exceeded")
    report("R6", broker_max_packet=MAX_PACKET, refused_oversize=doc["telemetry"]["outbox"]["refused_oversize"],
           committed=last, delivered_contiguous=aggregator.contiguous(device.device_id),
           seconds_to_2000_delivered=round(delivered_s, 1),
           agent_reconnects=doc["telemetry"]["mqtt"]["reconnects"], broker_disconnect_lines=disconnects)
    assert doc["telemetry"]["outbox"]["refused_oversize"] == 1
    assert doc["telemetry"]["mqtt"]["reconnects"] == 0, "the oversize record never reached the broker"

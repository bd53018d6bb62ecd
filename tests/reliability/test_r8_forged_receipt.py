"""R8: a client that may write the ack topic (a permissive ACL: the misconfiguration this is about) but holds
no aggregator certificate publishes forged receipts; the real agent deletes nothing, across a kill -9 too
(the forgery is retained and re-delivered at every subscribe). A genuine receipt afterwards still deletes,
so the test can tell "deletes nothing" from "deletes never".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cbor2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.reliability.harness import Device, outbox_meta, outbox_rows, report
from tests.support.mosquitto import Mosquitto
from tests.support.pki import make_fleet
from tests.support.receipts import make_receipt
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture
def permissive_broker() -> Iterator[Mosquitto]:
    broker = Mosquitto()
    acl = broker.workdir / "acl"
    acl.write_text("# anonymous clients may read and write everything, every device's ack topic included\n"
                   "topic readwrite #\n")
    acl.chmod(0o644)
    broker.extra = f"allow_anonymous true\nacl_file {acl}\n"
    broker.start()
    try:
        yield broker
    finally:
        broker.cleanup()


def invalid_counts(status: Path, pid: int | None = None) -> dict[str, int]:
    """Invalid receipts by reason in the status file (of the agent with ``pid``, when given)."""
    try:
        doc = json.loads(status.read_text())
        if pid is not None and doc["pid"] != pid:
            return {}
        return dict(doc["telemetry"]["receipts"]["invalid"])
    except (OSError, ValueError, KeyError):
        return {}


def test_r8_forged_receipts_delete_nothing(device: Device, permissive_broker: Mosquitto, tmp_path: Path) -> None:
    fleet = device.fleet
    fleet.add_device("thief")
    fleet.add_aggregator("agg-1")
    outsider = make_fleet(tmp_path / "outsider", aggregators=["agg-1"])  # an "aggregator" of its own CA
    status = device.workdir / "status.json"
    conf = device.config(permissive_broker.url, receipts={"ca_file": str(fleet.ca_cert), "crl_file": str(fleet.crl)},
                         status={"interval_s": 0.3})
    agent = device.agent(conf).start()
    thief = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="thief", protocol=mqtt.MQTTv5)
    thief.connect("127.0.0.1", permissive_broker.port)
    thief.loop_start()
    ack = f"edge/v1/{device.device_id}/ack"
    try:
        wait_for(lambda: outbox_meta(device.outbox, "last_seq") >= 500, timeout=60, what="500 committed records")
        epoch = outbox_meta(device.outbox, "epoch")
        top = outbox_meta(device.outbox, "last_seq") + 10**6
        forgeries = [
            cbor2.dumps({"seq": top, "epoch": epoch}),
            make_receipt(fleet.devices["thief"], device.device_id, epoch, top),
            make_receipt(outsider.aggregators["agg-1"], device.device_id, epoch, top),
            make_receipt(fleet.aggregators["agg-1"], "another-device", epoch, top),
        ]
        for f in forgeries:
            info = thief.publish(ack, f, qos=1, retain=True)
            info.wait_for_publish(5)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS
        wait_for(lambda: sum(invalid_counts(status).values()) >= len(forgeries), timeout=20,
                 what="every forgery refused and counted")
        before_kill = outbox_meta(device.outbox, "last_seq")
        agent.kill9()
        agent = device.agent(conf).start()  # the last forgery is retained: re-delivered at subscribe
        wait_for(lambda: outbox_meta(device.outbox, "last_seq") > before_kill + 200, timeout=60,
                 what="the restarted agent committing")
        assert agent.proc is not None
        pid = agent.proc.pid
        wait_for(lambda: sum(invalid_counts(status, pid).values()) >= 1, timeout=20,
                 what="the retained forgery refused again after the restart")
        assert outbox_meta(device.outbox, "acked_seq") == 0
        held = outbox_rows(device.outbox)
        assert min(held) == 1 and len(held) >= before_kill, "a forged receipt deleted rows"
        report("R8", forgeries=len(forgeries), invalid=invalid_counts(status), rows_held=len(held))

        settled = 100  # a genuine receipt still works: the test can fail
        thief.publish(ack, make_receipt(fleet.aggregators["agg-1"], device.device_id, epoch, settled),
                      qos=1, retain=True).wait_for_publish(5)
        wait_for(lambda: outbox_meta(device.outbox, "acked_seq") == settled, timeout=20, what="genuine receipt")
        assert min(outbox_rows(device.outbox)) == settled + 1
        assert agent.terminate() == 0
    finally:
        agent.stop()
        thief.loop_stop()
        thief.disconnect()
    assert "Traceback" not in agent.log()

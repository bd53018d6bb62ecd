"""The real agent in aggregator delivery: garbage, unsigned round-1 acks, receipts signed by a non-aggregator
and receipts for another device delete nothing and are counted by reason; a genuine receipt deletes exactly
what it settled, is kept on disk and shown by ``edge-agent status``; an older receipt replayed afterwards is
stale; a receipt asking for the birth record gets it re-published; rejects are counted by reason."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.agent_proc import REPO, AgentProcess, agent_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.pki import make_fleet
from tests.support.receipts import make_receipt
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def meta(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {k: int(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    except sqlite3.OperationalError:  # created, schema not yet written
        return {}
    finally:
        conn.close()


def rows_upto(db: Path, seq: int) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM records WHERE seq <= ?", (seq,)).fetchone()[0])
    finally:
        conn.close()


def status_doc(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc
    except (OSError, ValueError):
        return None


def test_only_a_genuine_receipt_deletes(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    device = f"dev-{unique_id}"
    fleet = make_fleet(tmp_path, devices=[device, "thief"], aggregators=["agg-1"])
    agg, thief = fleet.aggregators["agg-1"], fleet.devices["thief"]
    cfg = agent_config(tmp_path, device, mosquitto.url, delivery="aggregator", key_path=fleet.devices[device].key,
                       certificate=str(fleet.devices[device].cert),
                       source={"type": "simulated", "fault": "normal", "realtime": True},
                       receipts={"ca_file": str(fleet.ca_cert), "crl_file": str(fleet.crl)},
                       status={"interval_s": 0.3})
    conf = write_config(tmp_path / "agent.toml", cfg)
    agent = AgentProcess(conf).start()
    births = Recorder(mosquitto.url, [f"edge/v1/{device}/status"])
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    db = tmp_path / "outbox.db"
    status_file = tmp_path / "status.json"
    ack = f"edge/v1/{device}/ack"

    def send(payload: bytes, retain: bool = True) -> None:
        pub.publish(ack, payload, qos=1, retain=retain).wait_for_publish(5)

    def receipts() -> dict[str, Any]:
        d = status_doc(status_file)
        return d["telemetry"]["receipts"] if d else {}

    try:
        wait_for(lambda: db.exists() and meta(db).get("last_seq", 0) >= 20, timeout=30, what="20 committed records")
        epoch = meta(db)["epoch"]
        top = meta(db)["last_seq"]
        forged = [
            b"\xff\xfe", b"offline", cbor2.dumps({"seq": top, "epoch": epoch}),  # the round-1 unsigned ack
            make_receipt(thief, device, epoch, top),  # signed, chained to the fleet, but a device's certificate
            make_receipt(agg, "someone-else", epoch, top),  # genuine, for another device
        ]
        for f in forged:
            send(f)
        wait_for(lambda: sum(receipts().get("invalid", {}).values()) >= len(forged), timeout=15,
                 what="every forged receipt counted")
        assert meta(db).get("acked_seq", 0) == 0 and rows_upto(db, top) == top, "a forged receipt deleted rows"
        invalid = receipts()["invalid"]
        assert invalid.get("wrong_device") == 1 and sum(invalid.values()) == len(forged), invalid

        settled = top - 5
        good = make_receipt(agg, device, epoch, settled, time_ms=1_900_000_000_000,
                            rejected=((settled, "bad_signature"),))
        send(good)
        wait_for(lambda: meta(db).get("acked_seq", 0) >= settled, timeout=15, what="the genuine receipt applied")
        assert rows_upto(db, settled) == 0 and rows_upto(db, top) == 5
        wait_for(lambda: (tmp_path / "receipt.cose").exists() and (tmp_path / "receipt.cose").read_bytes() == good,
                 timeout=10, what="the receipt kept on disk")
        wait_for(lambda: receipts().get("settled") == settled, timeout=10, what="status shows the receipt")
        r = receipts()
        assert r["signer"] == "agg-1" and r["time"].startswith("2030-03-17") and r["records_rejected"] == {
            "bad_signature": 1}

        send(make_receipt(agg, device, epoch, settled - 3, time_ms=1_800_000_000_000))  # an older one, replayed
        wait_for(lambda: receipts().get("stale", 0) >= 1, timeout=10, what="a stale receipt counted")
        assert meta(db)["acked_seq"] == settled

        n = sum(1 for m in births.snapshot() if m.payload != b"offline")
        send(make_receipt(agg, device, epoch, settled, time_ms=1_900_000_000_001, birth=True))
        wait_for(lambda: sum(1 for m in births.snapshot() if m.payload != b"offline") > n, timeout=10,
                 what="the birth record re-published on request")

        table = subprocess.run([sys.executable, "-m", "agent", "status", "--config", str(conf)],
                               capture_output=True, text=True, cwd=str(REPO), timeout=60)
        assert "receipts.signer" in table.stdout and "agg-1" in table.stdout, table.stdout
        tele = status_doc(status_file)
        assert tele is not None and tele["telemetry"]["low_water"] > settled
        assert agent.terminate() == 0
    finally:
        agent.stop()
        births.close()
        pub.loop_stop()
        pub.disconnect()
    assert "Traceback" not in agent.log()
    assert "ignoring an invalid receipt" in agent.log()

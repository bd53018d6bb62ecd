"""Garbage on the agent's ack topic is ignored and counted; a genuine ack afterwards still frees the outbox."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cbor2
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.agent_proc import AgentProcess, agent_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def meta(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {k: int(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    finally:
        conn.close()


def test_garbage_acks_are_ignored_and_a_real_ack_still_works(tmp_path: Path, mosquitto: Mosquitto,
                                                           unique_id: str) -> None:
    device = f"dev-{unique_id}"
    cfg = agent_config(tmp_path, device, mosquitto.url, delivery="aggregator",
                       source={"type": "simulated", "fault": "normal", "realtime": True})
    agent = AgentProcess(write_config(tmp_path / "agent.toml", cfg)).start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    db = tmp_path / "outbox.db"
    try:
        wait_for(lambda: db.exists() and meta(db).get("last_seq", 0) >= 20, timeout=30, what="20 committed records")
        for garbage in (b"\xff\xfe", b"offline", cbor2.dumps({"seq": "all"}), cbor2.dumps([1, 2, 3]), b""):
            pub.publish(f"edge/v1/{device}/ack", garbage, qos=1).wait_for_publish(5)
        ack_to = meta(db)["last_seq"]
        pub.publish(f"edge/v1/{device}/ack", cbor2.dumps({"seq": ack_to, "epoch": 1}), qos=1,
                    retain=True).wait_for_publish(5)
        wait_for(lambda: meta(db).get("acked_seq", 0) >= ack_to, timeout=15, what="the genuine ack applied")
        assert agent.alive()
        assert agent.terminate() == 0
    finally:
        agent.stop()
        pub.loop_stop()
        pub.disconnect()
    log = agent.log()
    assert "ignoring malformed ack" in log
    assert "Traceback" not in log
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM records WHERE seq <= ?", (ack_to,)).fetchone()[0] == 0
    finally:
        conn.close()

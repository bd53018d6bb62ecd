"""AggregatorService in-process against a real Mosquitto and SQLite: store, ack, restart, will, MQTT 3.1.1."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from aggregator import AggregatorConfig, AggregatorService, MqttSettings, StoreSettings, open_store
from aggregator.config import IdentitySettings, TrustSettings
from envelope import open_receipt
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for
from tests.unit.test_agg_support import fleet_with

pytestmark = pytest.mark.integration


class Peer:
    """A plain MQTT client for the test: publishes as devices, watches the ack topics."""

    def __init__(self, port: int, protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
                 inflight: int = 20) -> None:
        self.acks: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.c.on_message = self._on_message
        self.c.max_inflight_messages_set(inflight)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        wait_for(self.c.is_connected, what="test client connected")

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            receipt, _ = open_receipt(msg.payload)  # the signature is the agent's business (tests of R8-R12)
            self.acks[msg.topic.split("/")[2]] = (receipt.settled, receipt.epoch)

    def watch_acks(self, prefix: str = "edge/v1") -> None:
        self.c.subscribe(f"{prefix}/+/ack", qos=1)

    def publish(self, records: Iterable[tuple[str, bytes]], retain: bool = False) -> None:
        infos = [self.c.publish(t, d, qos=1, retain=retain) for t, d in records]
        for info in infos:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def make_config(tmp_path: Path, fleet, port: int, client_id: str, protocol: str = "5") -> AggregatorConfig:
    return AggregatorConfig(
        mqtt=MqttSettings(url=f"mqtt://127.0.0.1:{port}", client_id=client_id, protocol=protocol),
        store=StoreSettings(url=str(tmp_path / "agg.db")),
        trust=TrustSettings(ca_files=(str(fleet.ca_cert),), crl_files=(str(fleet.crl),)),
        identity=IdentitySettings(**fleet.identity()),
        ack_interval_ms=20,
    )


@pytest.fixture
def peer(mosquitto: Mosquitto) -> Iterator[Peer]:
    p = Peer(mosquitto.port)
    try:
        yield p
    finally:
        p.close()


def test_records_are_verified_stored_and_acked(tmp_path: Path, mosquitto: Mosquitto, peer: Peer,
                                               unique_id: str) -> None:
    fleet, (dev,) = fleet_with(tmp_path, unique_id)
    svc = AggregatorService(make_config(tmp_path, fleet, mosquitto.port, f"agg-{unique_id}"))
    svc.start()
    try:
        peer.watch_acks()
        peer.publish([dev.birth()], retain=True)
        peer.publish([dev.record("result") for _ in range(300)] + [dev.record("telemetry")])
        wait_for(lambda: svc.stats().stored == 302, timeout=30, what="302 records stored")
        wait_for(lambda: peer.acks.get(unique_id) == (302, 1), timeout=10, what="ack for seq 302")
        s = svc.stats()
        assert s.verified == 302 and s.rejected == {} and s.duplicates == 0
    finally:
        svc.stop()
    store = open_store(str(tmp_path / "agg.db"))
    try:
        rows = list(store.export())
        assert [r["seq"] for r in rows] == list(range(1, 303))
        stats = store.device_stats()[0]
        assert stats["contiguous_seq"] == 302 and stats["online"] == 1
    finally:
        store.close()


def test_nothing_is_lost_while_the_aggregator_is_down(tmp_path: Path, mosquitto: Mosquitto, peer: Peer,
                                                      unique_id: str) -> None:
    fleet, (dev,) = fleet_with(tmp_path, unique_id)
    cfg = make_config(tmp_path, fleet, mosquitto.port, f"agg-{unique_id}")
    svc = AggregatorService(cfg)
    svc.start()
    peer.publish([dev.birth()], retain=True)
    peer.publish([dev.record() for _ in range(50)])
    wait_for(lambda: svc.stats().stored == 51, what="first 51 stored")
    svc.stop()
    peer.publish([dev.record() for _ in range(200)])  # queued by the broker for our persistent session
    svc = AggregatorService(cfg)
    svc.start()
    try:
        wait_for(lambda: svc.stats().stored == 200, timeout=30, what="200 queued records stored after restart")
        peer.watch_acks()
        wait_for(lambda: peer.acks.get(unique_id, (0, 0))[0] == 251, what="ack 251")
        assert svc.stats().rejected == {}
    finally:
        svc.stop()


def test_will_is_recorded_as_offline_not_as_a_reject(tmp_path: Path, mosquitto: Mosquitto, peer: Peer,
                                                     unique_id: str) -> None:
    fleet, (dev,) = fleet_with(tmp_path, unique_id)
    svc = AggregatorService(make_config(tmp_path, fleet, mosquitto.port, f"agg-{unique_id}"))
    svc.start()
    try:
        peer.publish([dev.birth()])
        wait_for(lambda: svc.stats().stored == 1, what="birth stored")
        peer.publish([(f"edge/v1/{unique_id}/status", b"offline")], retain=True)
        wait_for(lambda: svc.stats().offline_events == 1, what="offline recorded")
        assert svc.stats().rejected == {}
    finally:
        svc.stop()
    store = open_store(str(tmp_path / "agg.db"))
    try:
        assert store.device_stats()[0]["online"] == 0
    finally:
        store.close()


def test_mqtt_311_works_as_well(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    fleet, (dev,) = fleet_with(tmp_path, unique_id)
    svc = AggregatorService(make_config(tmp_path, fleet, mosquitto.port, f"agg-{unique_id}", protocol="3.1.1"))
    svc.start()
    peer = Peer(mosquitto.port, MQTTProtocolVersion.MQTTv311)
    try:
        peer.watch_acks()
        peer.publish([dev.birth()], retain=True)
        peer.publish([dev.record() for _ in range(500)])  # more than the broker's 20 in flight
        wait_for(lambda: svc.stats().stored == 501, timeout=30, what="501 stored over MQTT 3.1.1")
        wait_for(lambda: peer.acks.get(unique_id) == (501, 1), what="ack 501")
    finally:
        peer.close()
        svc.stop()

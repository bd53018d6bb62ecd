"""R9-R12 (issue 10): signed receipts over *settled* seqs, against a real Mosquitto and SQLite.

The device is scripted (paho, SimDevice records sealed with its certified key; the lead will swap in the real
agent): it publishes, watches its ack topic, verifies every receipt with ``provisioning.chain.verify_receipt``
against the fleet root, and "deletes" up to the settled point, as the agent does.

- R9: the aggregator's store is replaced while the device has been running: the device re-publishes its birth
  record with its low-water mark and re-sends what it still holds; it is settled again, no operator action.
- R10: a record rejected for good (bad signature) no longer pins the receipt; the receipt reports it.
- R11: a record with an unknown key reaches a worker of a shared subscription before the birth record: held,
  then stored once the birth arrives, never rejected.
- R12: a device that signs two different records with one seq: the first is kept, the second stored as
  evidence, counted, and shown by ``edge-aggregator stats``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from aggregator import AggregatorConfig, AggregatorService, MqttSettings, StoreSettings, open_store
from aggregator.config import IdentitySettings, TrustSettings
from envelope import Receipt
from provisioning import load_crl
from provisioning.chain import InvalidReceipt, verify_receipt
from tests.support.mosquitto import Mosquitto
from tests.support.pki import Fleet, make_fleet
from tests.support.wait import wait_for
from tests.unit.test_agg_support import SimDevice

pytestmark = pytest.mark.integration


@dataclass
class ScriptedDevice:
    """A device on paho: publishes its records, keeps the latest valid receipt, counts invalid ones."""

    sim: SimDevice
    fleet: Fleet
    port: int
    receipts: list[Receipt] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._root = [x509.load_pem_x509_certificate(self.fleet.ca_cert.read_bytes())]
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", self.port)
        self.c.loop_start()
        wait_for(self.c.is_connected, what="scripted device connected")
        self.c.subscribe(f"{self.sim.prefix}/{self.sim.device_id}/ack", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            r = verify_receipt(bytes(msg.payload), self._root, [load_crl(self.fleet.crl)], datetime.now(timezone.utc),
                               self.sim.device_id)
        except InvalidReceipt as e:
            with self._lock:
                self.invalid.append(e.reason)
            return
        with self._lock:
            self.receipts.append(r)

    @property
    def settled(self) -> int:
        with self._lock:
            return max((r.settled for r in self.receipts), default=0)

    def rejected(self) -> dict[int, str]:
        with self._lock:
            return {s: why for r in self.receipts for s, why in r.rejected}

    def publish(self, records: Iterable[tuple[str, bytes]], retain: bool = False) -> None:
        infos = [self.c.publish(t, d, qos=1, retain=retain) for t, d in records]
        for info in infos:
            info.wait_for_publish(10)

    def birth(self, low_water: int) -> tuple[str, bytes]:
        return self.sim.record("status", payload={"state": "online", "low_water": low_water}, with_chain=True)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def world(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> Iterator[tuple[Fleet, ScriptedDevice]]:
    fleet = make_fleet(tmp_path, [f"d{unique_id}"], intermediate=True, aggregators=["agg-1", "agg-2"])
    dev = ScriptedDevice(SimDevice.from_files(fleet.devices[f"d{unique_id}"], prefix=f"r/{unique_id}"), fleet,
                         mosquitto.port)
    try:
        yield fleet, dev
    finally:
        dev.close()


def config(fleet: Fleet, port: int, db: Path, prefix: str, agg: str = "agg-1", group: str = "") -> AggregatorConfig:
    files = fleet.aggregators[agg]
    return AggregatorConfig(
        mqtt=MqttSettings(url=f"mqtt://127.0.0.1:{port}", client_id=f"{agg}-{prefix.replace('/', '-')}",
                          topic_prefix=prefix, shared_group=group),
        store=StoreSettings(url=str(db)),
        trust=TrustSettings(ca_files=(str(fleet.ca_cert),), crl_files=(str(fleet.crl),)),
        identity=IdentitySettings(key=files.key_uri, cert_file=str(files.cert)),
        ack_interval_ms=20,
    )


def test_r9_replaced_store_settles_the_device_again(tmp_path: Path, mosquitto: Mosquitto,
                                                     world: tuple[Fleet, ScriptedDevice]) -> None:
    fleet, dev = world
    prefix = dev.sim.prefix
    svc = AggregatorService(config(fleet, mosquitto.port, tmp_path / "old.db", prefix))
    svc.start()
    try:
        dev.publish([dev.birth(low_water=1)], retain=True)
        dev.publish([dev.sim.record() for _ in range(40)])
        wait_for(lambda: dev.settled == 41, timeout=20, what="settled 41 on the first store")
    finally:
        svc.stop()
    # The device deleted 1..41; it sealed 42..60 while the aggregator was away (its new birth is 61).
    held = [dev.sim.record() for _ in range(19)]
    svc = AggregatorService(config(fleet, mosquitto.port, tmp_path / "new.db", prefix))  # a fresh, empty store
    svc.start()
    try:
        # what the agent does on (re)connect: birth record with its low-water mark, then every row it holds
        dev.publish([dev.birth(low_water=42)], retain=True)
        dev.publish(held)
        wait_for(lambda: dev.settled == 61, timeout=20, what="settled again on the replaced store")
        assert not dev.invalid
        st = svc.stats()
        assert st.stored >= 20 and not st.rejected  # (+1: the old retained birth, delivered at subscribe)
    finally:
        svc.stop()


def test_r10_permanent_reject_does_not_pin_the_receipt(tmp_path: Path, mosquitto: Mosquitto,
                                                        world: tuple[Fleet, ScriptedDevice]) -> None:
    fleet, dev = world
    svc = AggregatorService(config(fleet, mosquitto.port, tmp_path / "agg.db", dev.sim.prefix))
    svc.start()
    try:
        dev.publish([dev.birth(low_water=1)], retain=True)  # seq 1
        records = [dev.sim.record() for _ in range(9)]  # seqs 2..10
        topic, data = records[3]  # seq 5: its signature broken (the bytes still parse, so its seq is known)
        records[3] = (topic, data[:-1] + bytes([data[-1] ^ 1]))
        dev.publish(records)
        wait_for(lambda: dev.settled == 10, timeout=20, what="settled past the rejected seq")
        assert dev.rejected() == {5: "bad_signature"}
        assert svc.stats().rejected == {"bad_signature": 1}
        store = open_store(str(tmp_path / "agg.db"))
        try:
            (row,) = [d for d in store.device_stats() if d["device_id"] == dev.sim.device_id]
        finally:
            store.close()
        assert row["contiguous_seq"] == 10 and row["settled_rejects"] == 1 and row["stored"] == 9
    finally:
        svc.stop()


def test_r11_unknown_key_before_birth_on_a_shared_subscription_is_held_then_stored(
        tmp_path: Path, mosquitto: Mosquitto, world: tuple[Fleet, ScriptedDevice]) -> None:
    fleet, dev = world
    prefix, db = dev.sim.prefix, tmp_path / "shared.db"
    workers = [AggregatorService(config(fleet, mosquitto.port, db, prefix, agg, group="aggs"))
               for agg in ("agg-1", "agg-2")]
    for w in workers:
        w.start()
    try:
        birth = dev.birth(low_water=1)  # seq 1, sealed now, published last
        early = [dev.sim.record() for _ in range(20)]  # seqs 2..21: no worker knows the key yet
        dev.publish(early)
        wait_for(lambda: sum(w.stats().held for w in workers) == 20, timeout=5,
                 what=f"20 records held, {[w.stats() for w in workers]}")
        assert all(w.stats().held > 0 for w in workers), "the shared subscription gave one worker everything"
        dev.publish([birth], retain=True)
        wait_for(lambda: sum(w.stats().stored for w in workers) == 21, timeout=20, what="held records stored")
        wait_for(lambda: dev.settled == 21, timeout=20, what="settled 21")
        assert sum(w.stats().released for w in workers) == 20
        assert not any(w.stats().rejected for w in workers)
        assert any(r.birth for r in dev.receipts)  # receipts asked for the birth record while records waited
    finally:
        for w in workers:
            w.stop()


def test_r12_equivocation_keeps_both_and_flags_it(tmp_path: Path, mosquitto: Mosquitto,
                                                   world: tuple[Fleet, ScriptedDevice]) -> None:
    fleet, dev = world
    db = tmp_path / "agg.db"
    svc = AggregatorService(config(fleet, mosquitto.port, db, dev.sim.prefix))
    svc.start()
    try:
        dev.publish([dev.birth(low_water=1)], retain=True)
        first = dev.sim.record(payload={"label": "normal", "score": 0.1})  # seq 2
        second = dev.sim.record(seq=2, payload={"label": "bearing", "score": 0.9})  # same seq, other bytes
        dev.publish([first, dev.sim.record()])
        wait_for(lambda: dev.settled == 3, timeout=20, what="settled 3")
        dev.publish([second, first])  # the equivocation, then an honest duplicate
        wait_for(lambda: svc.stats().equivocations == 1 and svc.stats().duplicates == 2, timeout=20,
                 what="equivocation counted")
    finally:
        svc.stop()
    store = open_store(str(db))
    try:
        (ev,) = store.equivocations()
        stored = [r for r in store.export() if r["seq"] == 2]
    finally:
        store.close()
    assert ev["seq"] == 2 and ev["record"] == second[1] and ev["first"] == first[1]
    assert len(stored) == 1 and stored[0]["record"] == first[1]
    out = subprocess.run([sys.executable, "-m", "aggregator", "stats", "--store", str(db)], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ), check=True).stdout
    header, row = out.splitlines()[0].split(), next(line for line in out.splitlines()
                                                 if line.startswith(dev.sim.device_id)).split()
    assert header[6] == "equivoc" and row[5] == "1"  # ("last seq" is two words in the header)

"""The generated Mosquitto config with real certificates: identity from the CN, ACL per device, CRL.

A spawned broker loads exactly what ``edge-provision broker-config`` wrote (files owned by ``mosquitto``,
which the broker drops to). Devices connect with certificates made by the fleet CA.
"""

from __future__ import annotations

import functools
import operator
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.mosquitto import Mosquitto
from tests.support.pki import DeviceFiles, Fleet, make_fleet
from tests.support.wait import free_port, port_open, wait_for

pytestmark = pytest.mark.integration

EP = [sys.executable, "-m", "provisioning.cli"]


@dataclass
class Conn:
    """A paho MQTT v5 client over mTLS and what it has seen."""

    client: mqtt.Client
    connected: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    connect_rc: object = None
    messages: list[mqtt.MQTTMessage] = field(default_factory=list)
    pubacks: dict[int, int] = field(default_factory=dict)
    subacks: list[object] = field(default_factory=list)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(port: int, ca: Path, ident: DeviceFiles, client_id: str | None = None) -> Conn:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or ident.device_id,
                         protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(ca), certfile=str(ident.cert), keyfile=str(ident.key))
    conn = Conn(client)

    def on_connect(c, u, flags, rc, props):
        conn.connect_rc = rc
        if not rc.is_failure:
            conn.connected.set()

    def on_disconnect(c, u, flags, rc, props):
        conn.closed.set()

    def on_publish(c, u, mid, rc, props):
        conn.pubacks[mid] = rc.value

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_publish = on_publish
    client.on_message = lambda c, u, m: conn.messages.append(m)
    client.on_subscribe = lambda c, u, mid, rcs, props: conn.subacks.append(rcs)
    try:
        client.connect("127.0.0.1", port, keepalive=30)
    except OSError:  # ssl.SSLError is an OSError: refused in the handshake
        conn.closed.set()
        return conn
    client.loop_start()
    return conn


def refused(port: int, ca: Path, ident: DeviceFiles) -> bool:
    """True when the broker refuses the TLS session (never reaches CONNACK success)."""
    conn = connect(port, ca, ident)
    try:
        wait_for(lambda: conn.connected.is_set() or conn.closed.is_set(), timeout=10, what="connect outcome")
        return not conn.connected.is_set()
    finally:
        conn.client.loop_stop()


@dataclass
class MtlsBroker:
    fleet: Fleet
    broker: Mosquitto
    tls_port: int
    tls_dir: Path

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca.pem"

    def refresh_crl(self) -> None:
        """What an operator does after `ca revoke`: rewrite the broker files, then SIGHUP."""
        run_broker_config(self.fleet, self.tls_dir, self.tls_port)
        self.broker.reload()


def run_broker_config(fleet: Fleet, out: Path, port: int) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [*EP, "broker-config", "--ca-dir", str(fleet.ca_dir), "--out", str(out), "--port", str(port),
         "--bind", "127.0.0.1", "--owner", "mosquitto", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return res


@pytest.fixture
def mtls(tmp_path: Path) -> Iterator[MtlsBroker]:
    fleet = make_fleet(tmp_path, devices=["dev-a", "dev-b"], aggregators=["agg-1"], intermediate=True)
    broker = Mosquitto()
    tls_dir = broker.workdir / "tls"
    tls_port = free_port()
    run_broker_config(fleet, tls_dir, tls_port)
    conf = (tls_dir / "edge-mtls.conf").read_text()
    broker.extra = conf
    broker.start()
    try:
        wait_for(lambda: _port_ready(tls_port), timeout=10, what="TLS listener")
        yield MtlsBroker(fleet, broker, tls_port, tls_dir)
    finally:
        broker.cleanup()


def _port_ready(port: int) -> bool:
    return port_open(port)


def test_generated_config_has_the_required_lines(mtls: MtlsBroker) -> None:
    conf = (mtls.tls_dir / "edge-mtls.conf").read_text()
    acl = (mtls.tls_dir / "edge.acl").read_text()
    for line in ("require_certificate true", "use_identity_as_username true", "crlfile ", "acl_file "):
        assert line in conf
    assert "pattern write edge/v1/%u/result/+" in acl and "pattern write edge/v1/%u/#" not in acl
    assert "pattern read edge/v1/%u/ack" in acl
    assert "user agg-1" in acl


def test_device_publishes_to_own_topic_and_aggregator_receives(mtls: MtlsBroker) -> None:
    agg = connect(mtls.tls_port, mtls.ca, mtls.fleet.aggregators["agg-1"])
    a = connect(mtls.tls_port, mtls.ca, mtls.fleet.devices["dev-a"])
    try:
        wait_for(agg.connected.is_set, what="aggregator connected")
        wait_for(a.connected.is_set, what="dev-a connected")
        agg.client.subscribe("edge/v1/+/result/+", qos=1)
        wait_for(lambda: agg.subacks, what="suback")
        info = a.client.publish("edge/v1/dev-a/result/vibration", b"hello", qos=1)
        wait_for(lambda: info.mid in a.pubacks, what="puback")
        assert a.pubacks[info.mid] == 0
        wait_for(lambda: agg.messages, what="message at the aggregator")
        assert agg.messages[0].topic == "edge/v1/dev-a/result/vibration"
        assert agg.messages[0].payload == b"hello"
    finally:
        a.stop()
        agg.stop()


def test_aggregator_shared_subscription_receives(mtls: MtlsBroker) -> None:
    agg = connect(mtls.tls_port, mtls.ca, mtls.fleet.aggregators["agg-1"])
    a = connect(mtls.tls_port, mtls.ca, mtls.fleet.devices["dev-a"])
    try:
        wait_for(agg.connected.is_set, what="aggregator connected")
        wait_for(a.connected.is_set, what="dev-a connected")
        agg.client.subscribe("$share/aggs/edge/v1/+/result/+", qos=1)
        wait_for(lambda: agg.subacks, what="suback")
        a.client.publish("edge/v1/dev-a/result/vibration", b"shared", qos=1)
        wait_for(lambda: agg.messages, what="message via the shared subscription")
        assert agg.messages[0].payload == b"shared"
    finally:
        a.stop()
        agg.stop()


def test_device_cannot_publish_under_another_device(mtls: MtlsBroker) -> None:
    agg = connect(mtls.tls_port, mtls.ca, mtls.fleet.aggregators["agg-1"])
    a = connect(mtls.tls_port, mtls.ca, mtls.fleet.devices["dev-a"])
    try:
        wait_for(agg.connected.is_set, what="aggregator connected")
        wait_for(a.connected.is_set, what="dev-a connected")
        agg.client.subscribe("edge/v1/#", qos=1)
        wait_for(lambda: agg.subacks, what="suback")
        bad = a.client.publish("edge/v1/dev-b/result/vibration", b"forged", qos=1)
        wait_for(lambda: bad.mid in a.pubacks, what="puback for the forged publish")
        assert a.pubacks[bad.mid] == 135  # MQTT v5 "Not authorized"
        # A marker on dev-a's own topic arrives after anything the broker would have routed before it.
        good = a.client.publish("edge/v1/dev-a/telemetry", b"marker", qos=1)
        wait_for(lambda: good.mid in a.pubacks, what="puback for the marker")
        wait_for(lambda: any(m.topic == "edge/v1/dev-a/telemetry" for m in agg.messages), what="marker")
        assert [m.topic for m in agg.messages] == ["edge/v1/dev-a/telemetry"]
    finally:
        a.stop()
        agg.stop()


def test_device_reads_only_its_own_ack_and_aggregator_writes_acks(mtls: MtlsBroker) -> None:
    agg = connect(mtls.tls_port, mtls.ca, mtls.fleet.aggregators["agg-1"])
    a = connect(mtls.tls_port, mtls.ca, mtls.fleet.devices["dev-a"])
    try:
        wait_for(agg.connected.is_set, what="aggregator connected")
        wait_for(a.connected.is_set, what="dev-a connected")
        a.client.subscribe("edge/v1/dev-a/ack", qos=1)
        a.client.subscribe("edge/v1/dev-b/ack", qos=1)
        wait_for(lambda: len(a.subacks) == 2, what="subacks")
        for dev in ("dev-b", "dev-a"):
            info = agg.client.publish(f"edge/v1/{dev}/ack", dev.encode(), qos=1)
            wait_for(partial(agg.pubacks.__contains__, info.mid), what="ack puback")
            assert agg.pubacks[info.mid] == 0
        wait_for(lambda: a.messages, what="dev-a's ack")
        assert [m.topic for m in a.messages] == ["edge/v1/dev-a/ack"]
    finally:
        a.stop()
        agg.stop()


def test_revoked_certificate_is_refused_at_connect(mtls: MtlsBroker) -> None:
    assert not refused(mtls.tls_port, mtls.ca, mtls.fleet.devices["dev-b"])
    mtls.fleet.revoke("dev-b")
    mtls.refresh_crl()
    wait_for(lambda: refused(mtls.tls_port, mtls.ca, mtls.fleet.devices["dev-b"]), timeout=15,
             what="revoked dev-b refused")
    assert not refused(mtls.tls_port, mtls.ca, mtls.fleet.devices["dev-a"])


def test_expired_certificate_is_refused_at_connect(mtls: MtlsBroker) -> None:
    now = datetime.now(timezone.utc)
    old = mtls.fleet.add_device("dev-old", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))
    fresh = mtls.fleet.add_device("dev-fresh")  # same CA, same path, only the dates differ
    assert refused(mtls.tls_port, mtls.ca, old)
    assert not refused(mtls.tls_port, mtls.ca, fresh)


def test_unknown_ca_is_refused(mtls: MtlsBroker, tmp_path: Path) -> None:
    # Same fleet name and device id, but a CA the broker does not trust.
    other = make_fleet(tmp_path / "other", devices=["dev-a"], name=mtls.fleet.name)
    assert refused(mtls.tls_port, mtls.ca, other.devices["dev-a"])
    assert not refused(mtls.tls_port, mtls.ca, mtls.fleet.devices["dev-a"])


def test_only_aggregator_identities_may_write_ack_topics(mtls: MtlsBroker) -> None:
    """A receipt makes a device delete data: a device identity publishing on an ack topic (another's or its own)
    or on the log is refused by the broker (MQTT v5 reason 135) and routed nowhere; the aggregator's goes through."""
    agg = connect(mtls.tls_port, mtls.ca, mtls.fleet.aggregators["agg-1"])
    a = connect(mtls.tls_port, mtls.ca, mtls.fleet.devices["dev-a"])
    try:
        wait_for(agg.connected.is_set, what="aggregator connected")
        wait_for(a.connected.is_set, what="dev-a connected")
        a.client.subscribe("edge/v1/dev-a/ack", qos=1)
        wait_for(lambda: a.subacks, what="suback")
        for topic in ("edge/v1/dev-a/ack", "edge/v1/dev-b/ack", "edge/v1/_log/checkpoint"):
            forger = connect(mtls.tls_port, mtls.ca, mtls.fleet.devices["dev-b"])
            try:
                wait_for(forger.connected.is_set, what="dev-b connected")
                bad = forger.client.publish(topic, b"forged receipt", qos=1)
                wait_for(functools.partial(operator.contains, forger.pubacks, bad.mid), what=f"puback for {topic}")
                assert forger.pubacks[bad.mid] == 135, topic  # MQTT v5 "Not authorized"
            finally:
                forger.stop()
        good = agg.client.publish("edge/v1/dev-a/ack", b"receipt", qos=1)
        wait_for(lambda: good.mid in agg.pubacks, what="aggregator puback")
        assert agg.pubacks[good.mid] == 0
        wait_for(lambda: a.messages, what="the aggregator's ack at the device")
        assert [m.payload for m in a.messages] == [b"receipt"]
    finally:
        a.stop()
        agg.stop()

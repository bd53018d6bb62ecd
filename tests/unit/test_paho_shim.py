"""Contract of agent.mqtt_io, the one module allowed to touch paho internals: every private name it uses
exists in the installed paho, the installed paho is one the pin covers and was tested, and the publisher
uses paho's public API only."""

from __future__ import annotations

import importlib.metadata
import re
import socket
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from packaging.specifiers import SpecifierSet
from paho.mqtt.enums import CallbackAPIVersion

from agent import mqtt_io
from agent.mqtt_io import PAHO_INTERNALS, TESTED_PAHO, BufferedSocket, LeanClient, wrap_socket
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.wait import wait_for

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


def test_installed_paho_is_tested_and_pinned() -> None:
    installed = importlib.metadata.version("paho-mqtt")
    assert installed in TESTED_PAHO, f"paho-mqtt {installed} is not in TESTED_PAHO {TESTED_PAHO}"
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = SpecifierSet(next(d for d in deps if d.startswith("paho-mqtt"))[len("paho-mqtt"):].split(";")[0])
    assert all(v in spec for v in TESTED_PAHO)
    major, minor = (int(x) for x in TESTED_PAHO[-1].split(".")[:2])
    assert f"{major}.{minor + 1}.0" not in spec, "the pin must not admit an untested minor release"


def test_every_private_name_the_shim_uses_exists() -> None:
    client = LeanClient(CallbackAPIVersion.VERSION2, client_id="contract", protocol=mqtt.MQTTv5)
    for name in PAHO_INTERNALS["class"]:
        assert callable(getattr(mqtt.Client, name, None)), f"paho lost Client.{name}"
    for name in PAHO_INTERNALS["instance"]:
        assert hasattr(client, name), f"paho lost the instance attribute {name}"
    source = Path(mqtt_io.__file__).read_text()
    used = set(re.findall(r"(?:client|self)\.(_[a-z][a-z_]*)", source)) - {"_sock_"}
    declared = set(PAHO_INTERNALS["class"]) | set(PAHO_INTERNALS["instance"])
    own = {"_error", "_in", "_in_pos", "_out", "_lean_mids", "_lean_topics", "_lean_ack"}  # the shim's own fields
    assert used - own <= declared, f"undeclared paho internals used: {sorted(used - own - declared)}"


def test_wrap_socket_installs_the_buffer_paho_then_uses() -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="contract")
    srv = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(srv.getsockname())
    b, _ = srv.accept()
    srv.close()
    try:
        installed = wrap_socket(client, a)
        assert client.socket() is installed
        assert isinstance(installed, BufferedSocket)
        wrapped: BufferedSocket = installed
        wrapped.send(b"hi")
        assert wrapped.buffered_out
        wrapped.flush()
        assert b.recv(2) == b"hi"
        b.sendall(b"xyz")
        assert wrapped.recv(1) == b"x" and wrapped.buffered_in and wrapped.recv(5) == b"yz"
        b.close()
        assert wrapped.recv(1) == b"" and wrapped.eof
    finally:
        a.close()


def test_the_publisher_uses_public_paho_only() -> None:
    source = (REPO / "agent" / "publisher.py").read_text()
    private = re.findall(r"client\._[a-z]\w*", source)
    assert not private, f"agent/publisher.py reaches into paho: {private}; move it to agent/mqtt_io.py"


def _drive(client: LeanClient, until: object, timeout: float = 10.0) -> None:
    """Run the client's loop the way the link does (external loop, flush once per turn) until ``until()``."""
    import select
    import time

    deadline = time.monotonic() + timeout
    while not until():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out driving the client"
        got = client.socket()
        assert isinstance(got, BufferedSocket)
        sock: BufferedSocket = got
        sock.flush()
        r, _, _ = select.select([sock], [], [], 0.0 if sock.buffered_in else 0.05)
        if r or sock.buffered_in:
            client.loop_read()
            while sock.buffered_in and client.socket() is got:
                client.loop_read()
        client.loop_write()
        client.loop_misc()


@pytest.mark.integration
@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_publish_record_reaches_subscribers_in_order_and_is_acked(mosquitto: Mosquitto, unique_id: str,
                                                                 protocol: int) -> None:
    """publish_record's packets are well formed (v5 and 3.1.1), keep order with paho's own publishes
    (a paho packet waiting makes it fall back), and their PUBACKs reach on_publish."""
    topic = f"t/{unique_id}/r"
    rec = Recorder(mosquitto.url, [f"t/{unique_id}/#"])
    acked: list[tuple[int, bool]] = []
    client = LeanClient(CallbackAPIVersion.VERSION2, client_id=f"lean-{unique_id}", protocol=protocol)
    client.on_publish = lambda c, u, mid, rc, props: acked.append((mid, not rc.is_failure))

    def on_socket_open(c: mqtt.Client, u: object, sock: object) -> None:
        wrap_socket(c, sock)

    client.on_socket_open = on_socket_open
    connected: list[bool] = []
    client.on_connect = lambda *a: connected.append(True)
    client.connect("127.0.0.1", mosquitto.port)
    try:
        _drive(client, lambda: connected)
        mids = []
        payloads = [bytes([i % 256]) * (i * 37 % 300 + 1) for i in range(300)] + [b"x" * 20000]  # 2-3 byte lengths
        for i, p in enumerate(payloads):
            if i == 150:
                client.publish(f"t/{unique_id}/paho", b"paho", qos=1)  # queued by paho, flushed by loop_write
            rc, mid = client.publish_record(topic, p, retain=(i == 3))
            assert rc == mqtt.MQTT_ERR_SUCCESS
            mids.append(mid)
        _drive(client, lambda: len(acked) >= len(payloads) + 1)
        assert {m for m, ok in acked if ok} >= set(mids) and all(ok for _, ok in acked)
        wait_for(lambda: rec.count() >= len(payloads) + 1, timeout=10, what="every message at the subscriber")
        got = rec.snapshot()
        assert [m.payload for m in got if m.topic == topic] == payloads
        assert [m.topic.rsplit("/", 1)[-1] for m in got].index("paho") == 150
        assert not client._lean_mids
    finally:
        client.disconnect()
        rec.client.loop_stop()
        rec.client.disconnect()

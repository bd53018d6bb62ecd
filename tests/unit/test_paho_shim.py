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
from packaging.specifiers import SpecifierSet
from paho.mqtt.enums import CallbackAPIVersion

from agent import mqtt_io
from agent.mqtt_io import PAHO_INTERNALS, TESTED_PAHO, BufferedSocket, LeanClient, wrap_socket

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
    own = {"_error", "_in", "_in_pos", "_out"}  # BufferedSocket's own fields
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

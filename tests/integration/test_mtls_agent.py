"""The agent end to end over mTLS with an identity provisioned by ``edge-provision``.

Device side exactly as a technician does it (``device init`` → ``ca sign`` → ``device install-cert``), the
broker runs the generated config, an aggregator identity subscribes over mTLS and checks every record with
the exported registry, and the birth record's certificate chain with ``verify_device_chain``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509

from envelope import open_record
from provisioning import load_crl, load_registry, verify_device_chain
from tests.integration.test_mtls_broker import Conn, connect, run_broker_config
from tests.support.agent_proc import AgentProcess, agent_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.pki import Fleet, make_fleet
from tests.support.wait import free_port, port_open, wait_for

pytestmark = pytest.mark.integration

EP = [sys.executable, "-m", "provisioning.cli"]


def ep(*args: str, expect: int = 0) -> dict:
    res = subprocess.run([*EP, *args, "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == expect and "Traceback" not in res.stderr, res.stderr
    return json.loads(res.stdout)


@pytest.fixture
def broker_and_fleet(tmp_path: Path) -> Iterator[tuple[Mosquitto, int, Path, Fleet]]:
    fleet = make_fleet(tmp_path, aggregators=["agg-e2e"], intermediate=True)
    broker = Mosquitto()
    tls_dir = broker.workdir / "tls"
    port = free_port()
    run_broker_config(fleet, tls_dir, port)
    broker.extra = (tls_dir / "edge-mtls.conf").read_text()
    broker.start()
    try:
        wait_for(lambda: port_open(port), what="TLS listener")
        yield broker, port, tls_dir, fleet
    finally:
        broker.cleanup()


def test_agent_runs_end_to_end_over_mtls_with_provisioned_identity(
    tmp_path: Path, broker_and_fleet: tuple[Mosquitto, int, Path, Fleet], unique_id: str
) -> None:
    broker, port, tls_dir, fleet = broker_and_fleet
    device = f"dev-{unique_id}"
    state = tmp_path / "state"
    init = ep("device", "init", "--state-dir", str(state), "--device-id", device,
              "--ca-cert", str(fleet.ca_cert))
    ep("ca", "sign", str(state / "device.csr"), "--ca-dir", str(fleet.ca_dir))
    ep("device", "install-cert", str(state / "device.crt"), "--state-dir", str(state))
    ep("fleet", "export-registry", "--ca-dir", str(fleet.ca_dir), "--out", str(fleet.registry))

    key = state / "keys" / "device.key"
    cert = state / "keys" / "device.crt"
    cfg = agent_config(tmp_path, device, f"mqtts://127.0.0.1:{port}", key_path=key, certificate=str(cert),
                       mqtt={"ca_file": str(tls_dir / "ca.pem"), "cert_file": str(cert), "key_file": str(key)})
    conf = write_config(tmp_path / "agent.toml", cfg)
    status = ep("device", "status", "--state-dir", str(state), "--config", str(conf))  # exit 0: no problem
    assert status["healthy"] and status["agent_config"]["ca_file"]  # the broker's ca.pem holds the fleet root

    agg: Conn = connect(port, tls_dir / "ca.pem", fleet.aggregators["agg-e2e"])
    wait_for(agg.connected.is_set, what="aggregator connected")
    agg.client.subscribe(f"edge/v1/{device}/#", qos=1)
    wait_for(lambda: agg.subacks, what="suback")
    agent = AgentProcess(conf).start()
    try:
        wait_for(lambda: sum("/result/" in m.topic for m in agg.messages) >= 20, timeout=60,
                 what=f"20 results over mTLS\n{agent.log()}\n{broker.log()}")
        assert agent.terminate() == 0, agent.log()
    finally:
        agent.stop()
        agg.stop()
    assert "Traceback" not in agent.log()

    registry = load_registry(fleet.registry)
    keys = registry.by_kid()
    records = [open_record(bytes(m.payload)) for m in list(agg.messages) if m.payload != b"offline"]
    assert records
    for r in records:
        assert r.device_id == device
        entry = keys[r.kid]
        assert entry.device_id == device and entry.kid.hex() == init["kid"]
        r.verify(entry.public_key())
    births = [r for r in records if r.kind == "status" and r.x5chain]
    assert births, "the birth record carries the device certificate chain"
    crl = load_crl(fleet.ca_dir / "crl.pem")
    root = x509.load_pem_x509_certificate(fleet.ca_cert.read_bytes())
    chain = births[0].x5chain
    assert verify_device_chain(chain[0], list(chain[1:]), [root], crl, datetime.now(timezone.utc)) == device

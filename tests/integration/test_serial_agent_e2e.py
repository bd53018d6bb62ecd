"""Simulator → firmware_bridge → ``edge-agent run`` → Mosquitto → verified records, with an unplug and a reset.

Both sides are real subprocesses: ``python -m firmware_bridge.simulator`` on a pty behind a by-id style
symlink (faults sent on its stdin) and the agent with ``[pipeline.source] type = "serial"``. Every record
that reaches the broker is verified with python-cwt against the device key; the machine condition the
simulator plays (imbalance) is what the model reports.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cwt
import pytest
from cryptography.hazmat.primitives import serialization

from envelope import open_record
from provisioning import load_file_signer
from tests.support.agent_proc import REPO, AgentProcess, agent_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    link = str(by_id / "usb-Simulated_MCU_E2E-if00")
    path_file = tmp_path / "sim.path"
    log = open(tmp_path / "sim.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge.simulator", "--link", link, "--path-file", str(path_file),
         "--fault", "imbalance", "--seed", "5", "--control-stdin"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, text=True, cwd=str(REPO),
    )
    try:
        wait_for(lambda: path_file.exists(), timeout=15, what="simulator pty")
        yield proc, link
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        log.close()


def send(proc: subprocess.Popen[str], command: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(command + "\n")
    proc.stdin.flush()


def test_serial_mcu_to_verified_records(tmp_path: Path, mosquitto: Mosquitto, unique_id: str,
                                        simulator: tuple[subprocess.Popen[str], str]) -> None:
    sim, link = simulator
    device = f"dev-{unique_id}"
    source = {"type": "serial", "port": link, "baudrate": 921600, "sensor_id": 0, "reopen_backoff_max_s": 0.5}
    conf = write_config(tmp_path / "agent.toml", agent_config(tmp_path, device, mosquitto.url, source=source))
    rec = Recorder(mosquitto.url, [f"edge/v1/{device}/#"])
    agent = AgentProcess(conf).start()
    try:
        wait_for(lambda: rec.count("/result/") >= 20, timeout=30, what="20 results")
        send(sim, "unplug 0.5")
        n = rec.count("/result/")
        wait_for(lambda: rec.count("/result/") >= n + 20, timeout=15, what="results after the unplug")
        send(sim, "reset")
        wait_for(lambda: "MCU reset detected" in agent.log(), timeout=10, what="reset logged by the agent")
        n = rec.count("/result/")
        wait_for(lambda: rec.count("/result/") >= n + 20, timeout=15, what="results after the reset")
        assert agent.terminate() == 0, agent.log()
    finally:
        agent.stop()
        rec.close()
    log = agent.log()
    assert "Traceback" not in log
    assert "opened serial port" in log

    signer = load_file_signer(tmp_path / "keys" / "device.key")
    pem = signer.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    key = cwt.COSEKey.from_pem(pem, alg="ESP256", kid=signer.kid)
    decoder = cwt.COSE.new()
    results = []
    for m in rec.snapshot():
        if m.topic.endswith("/status") and m.payload == b"offline":
            continue
        assert decoder.decode(m.payload, keys=[key]) is not None
        r = open_record(m.payload)
        assert r.device_id == device
        if r.kind == "result":
            results.append(r)
    assert len(results) >= 60
    assert all(r.stream == "vibration" for r in results)
    labels = [r.payload()["label"] for r in results]
    assert labels.count("imbalance") / len(labels) >= 0.9, labels

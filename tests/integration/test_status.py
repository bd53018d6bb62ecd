"""`edge-agent status` against a running agent, and the signed telemetry records on the broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.telemetry import FIELDS, PIPELINE_FIELDS
from envelope import open_record
from provisioning import load_file_signer
from tests.support.agent_proc import REPO, AgentProcess, agent_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "status", *args], capture_output=True, text=True,
                          cwd=str(REPO), timeout=60)


def get(doc: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        assert part in doc, f"missing {dotted} in {sorted(doc)}"
        doc = doc[part]
    return doc


def assert_every_field(telemetry: dict[str, Any]) -> None:
    for f in FIELDS:
        get(telemetry, f)
    assert telemetry["pipelines"], "one entry per pipeline"
    for p in telemetry["pipelines"].values():
        for f in PIPELINE_FIELDS:
            get(p, f)


def test_status_json_and_table_show_the_live_snapshot(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    device = f"dev-{unique_id}"
    cfg = agent_config(tmp_path, device, mosquitto.url, status={"interval_s": 0.5})
    conf = write_config(tmp_path / "agent.toml", cfg)
    agent = AgentProcess(conf).start()
    try:
        status_file = tmp_path / "status.json"
        wait_for(status_file.exists, timeout=30, what="status file next to the outbox")

        def fresh_with_results() -> dict[str, Any] | None:
            r = status("--config", str(conf), "--json")
            if r.returncode != 0:
                return None
            doc: dict[str, Any] = json.loads(r.stdout)
            return doc if doc["telemetry"]["outbox"]["committed"] > 100 else None
        doc = wait_for(fresh_with_results, timeout=30, what="a healthy status with committed records")
        assert doc is not None
        assert doc["device_id"] == device and doc["healthy"] and not doc["stale"] and doc["pid_alive"]
        assert_every_field(doc["telemetry"])
        t = doc["telemetry"]
        assert t["mqtt"]["connected"] is True
        assert t["host"]["rss_bytes"] > 0 and t["host"]["disk_free_bytes"] > 0
        assert t["pipelines"]["vibration"]["latency_us"]["p99"] >= t["pipelines"]["vibration"]["latency_us"]["p50"] > 0

        table = status("--config", str(conf))
        assert table.returncode == 0, table.stderr
        assert device in table.stdout and "healthy" in table.stdout
        for line in ("outbox.depth", "mqtt.reconnects", "host.temperatures_c", "pipelines.vibration.latency_us.p99"):
            assert line in table.stdout, table.stdout

        agent.kill9()
        stale = status("--file", str(status_file), "--json")
        assert stale.returncode == 1, "a dead agent reads as stale"
        assert json.loads(stale.stdout)["stale"] is True
        assert "STALE" in status("--file", str(status_file)).stdout
    finally:
        agent.stop()


def test_status_without_a_status_file_says_so(tmp_path: Path) -> None:
    r = status("--file", str(tmp_path / "missing.json"))
    assert r.returncode == 2
    assert "no status file" in r.stderr and "is the agent running" in r.stderr


def test_status_with_a_bad_config_names_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "agent.toml"
    conf.write_text('device_id = "dev-1"\n[status]\ninterval = 1\n')
    r = status("--config", str(conf))
    assert r.returncode == 2
    assert "status.interval" in r.stderr


def test_telemetry_records_verify_and_carry_every_field(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    device = f"dev-{unique_id}"
    cfg = agent_config(tmp_path, device, mosquitto.url, telemetry={"interval_s": 1.0})
    rec = Recorder(mosquitto.url, [f"edge/v1/{device}/telemetry"])
    agent = AgentProcess(write_config(tmp_path / "agent.toml", cfg)).start()
    try:
        wait_for(lambda: rec.count("/telemetry") >= 2, timeout=30, what="two telemetry records")
    finally:
        agent.stop()
        rec.close()
    public = load_file_signer(tmp_path / "keys" / "device.key").public_key()
    for m in rec.snapshot()[:2]:
        r = open_record(m.payload)
        r.verify(public)
        assert r.kind == "telemetry" and r.device_id == device and r.stream == "telemetry"
        payload = r.payload()
        assert_every_field(payload)
    last = open_record(rec.snapshot()[1].payload).payload()
    assert last["pipelines"]["vibration"]["records_per_s"] > 0
    assert last["outbox"]["healthy"] is True and last["outbox"]["last_error"] is None

"""The transparency log served by the aggregator's own web app (``[log]`` + ``[web]``), read by the real
``edge-aggregator audit`` over HTTP, as a third party would: clean on a real run, a failure once a stored
record's bytes are changed behind the aggregator's back."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from aggregator import AggregatorService, parse_config
from tests.support.mosquitto import Mosquitto
from tests.support.pki import make_fleet
from tests.support.sim_fleet import Publisher, SimAgent
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration
pytest.importorskip("starlette", reason="the web app needs the optional extra 'web'")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, check=False)


def _checkpoint_size(url: str) -> int:
    r = httpx.get(url + "/log/checkpoint", timeout=5)
    return int(r.text.splitlines()[1]) if r.status_code == 200 else 0


def test_the_served_log_audits_clean_and_a_changed_record_fails(tmp_path: Path, mosquitto: Mosquitto,
                                                                  unique_id: str) -> None:
    fleet = make_fleet(tmp_path / "pki", devices=[f"dev-{unique_id}"], aggregators=["agg-1"])
    made = _cli("provisioning", "--json", "log", "init", "--dir", str(tmp_path / "log"),
                "--origin", "test.fleet/log")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    db = tmp_path / "records.db"
    doc: dict[str, Any] = {
        "mqtt": {"url": mosquitto.url, "client_id": f"agg-{unique_id}", "topic_prefix": f"edge/v1/{unique_id}"},
        "store": {"url": str(db)},
        "trust": {"ca_files": [str(fleet.ca_cert)], "crl_files": [str(fleet.crl)]},
        "identity": fleet.identity(),
        "log": {"key_file": key["key_file"], "origin": "test.fleet/log", "checkpoint_interval_s": 0.1},
        "web": {"enabled": True, "port": 0},
    }
    svc = AggregatorService(parse_config(doc, str(tmp_path / "aggregator.toml")))
    svc.start()
    dev = SimAgent.from_files(fleet.devices[f"dev-{unique_id}"], prefix=f"edge/v1/{unique_id}")
    pub = Publisher(mosquitto.url, client_id=f"sim-{unique_id}")
    try:
        url = svc.web_url
        assert url is not None
        pub.send_all([dev.birth(), *(dev.result() for _ in range(300))])
        wait_for(lambda: _checkpoint_size(url) == 301, timeout=30, what="a checkpoint over all 301 records")
        audit = ["aggregator.cli", "audit", "--url", url + "/log", "--log-vkey", key["vkey"],
                 "--ca", str(fleet.ca_cert), "--crl", str(fleet.crl), "--state", str(tmp_path / "audit.json")]
        clean = _cli(*audit)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "301 entries" in clean.stdout, clean.stdout
        with sqlite3.connect(db) as conn:  # one byte of one stored record changed behind the aggregator's back
            (rowid, rec), = conn.execute("SELECT rowid, record FROM records WHERE log_index = 7").fetchall()
            conn.execute("UPDATE records SET record = ? WHERE rowid = ?",
                         (bytes(rec[:-1]) + bytes([rec[-1] ^ 1]), rowid))
        tampered = _cli(*audit)
        assert tampered.returncode == 1, tampered.stdout + tampered.stderr
        assert "record_invalid [index 7]" in tampered.stdout and "root_mismatch" in tampered.stdout, tampered.stdout
    finally:
        pub.close()
        svc.stop()

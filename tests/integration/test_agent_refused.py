"""Issue 12 item 1: a refused device is never silent. For every kind of refusal, against a real Mosquitto
(revoked certificate, a broker certificate from the wrong CA, a closed port), the agent logs the cause once
(not once per retry), counts it by cause, shows cause and since-when in ``edge-agent status``, and after
``mqtt.degraded_after_s`` without a connection its state is degraded and ``status`` exits 1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_mtls_broker import MtlsBroker, mtls  # noqa: F401 - the fixture
from tests.support.agent_proc import REPO, AgentProcess, agent_config, write_config
from tests.support.pki import make_fleet
from tests.support.wait import free_port, wait_for

pytestmark = pytest.mark.integration

DEGRADED_AFTER_S = 2.0


def status(conf: Path) -> tuple[int, dict[str, Any] | None]:
    r = subprocess.run([sys.executable, "-m", "agent", "status", "--config", str(conf), "--json"],
                       capture_output=True, text=True, cwd=str(REPO), timeout=60)
    try:
        return r.returncode, json.loads(r.stdout)
    except ValueError:
        return r.returncode, None


@pytest.mark.parametrize(("case", "cause"), [("revoked", "tls_alert"), ("wrong_ca", "tls_verify"),
                                             ("closed_port", "tcp_refused")])
def test_refused_connects_are_logged_counted_and_degrade(tmp_path: Path, mtls: MtlsBroker,  # noqa: F811
                                                         case: str, cause: str) -> None:
    fleet = mtls.fleet
    dev = fleet.devices["dev-b"]
    ca = mtls.ca
    port = mtls.tls_port
    if case == "revoked":
        fleet.revoke("dev-b")
        mtls.refresh_crl()
    elif case == "wrong_ca":
        ca = make_fleet(tmp_path / "other").ca_cert
    else:
        port = free_port()
    cfg = agent_config(tmp_path, "dev-b", f"mqtts://127.0.0.1:{port}", key_path=dev.key, certificate=str(dev.cert),
                       mqtt={"ca_file": str(ca), "cert_file": str(dev.cert), "key_file": str(dev.key),
                             "degraded_after_s": DEGRADED_AFTER_S, "reconnect_min_s": 0.1, "reconnect_max_s": 0.3},
                       status={"interval_s": 0.3})
    conf = write_config(tmp_path / "agent.toml", cfg)
    agent = AgentProcess(conf).start()
    try:
        def degraded() -> dict[str, Any] | None:
            rc, doc = status(conf)
            if doc is None or doc["telemetry"]["mqtt"]["state"] != "degraded":
                return None
            assert rc == 1, "a degraded agent makes `status` exit non-zero"
            return doc
        doc = wait_for(degraded, timeout=30, what=f"degraded state ({case})\n{agent.log()[-2000:]}")
        assert doc is not None
        mq = doc["telemetry"]["mqtt"]
        assert mq["refused_cause"] == cause, mq
        assert mq["refused_since"] is not None and mq["unconnected_s"] > DEGRADED_AFTER_S
        assert doc["state"] == "degraded" and any("no broker connection" in d for d in doc["degraded"])
        wait_for(lambda: (status(conf)[1] or {}).get("telemetry", {}).get("mqtt", {}).get(
            "connect_failures_by_cause", {}).get(cause, 0) >= 3, timeout=20, what="three refusals counted")
        table = subprocess.run([sys.executable, "-m", "agent", "status", "--config", str(conf)],
                               capture_output=True, text=True, cwd=str(REPO), timeout=60)
        assert table.returncode == 1 and "DEGRADED" in table.stdout and cause in table.stdout, table.stdout
        assert agent.terminate() == 0
    finally:
        agent.stop()
    log = agent.log()
    lines = [ln for ln in log.splitlines() if "cannot connect to broker" in ln]
    assert len(lines) == 1, "logged once per change of cause, not once per retry:\n" + "\n".join(lines[:5])
    assert f"({cause})" in lines[0]
    assert "Traceback" not in log

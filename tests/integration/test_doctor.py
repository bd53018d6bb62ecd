"""``edge-agent doctor`` against real failures: each one is provoked for real (a Mosquitto with the fleet's mTLS
config on a free port, a fleet CA, CRLs, ptys, the MCU simulator, SoftHSM2, a tmpfs) and must give the right
fail (or warn) line with its fix. Checks that cannot apply on this host (systemd) are judged from tables in
tests/unit/test_doctor_verdicts.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent.doctor import CheckResult, run_doctor
from firmware_bridge import SimConfig, Simulator
from tests.integration.test_mtls_broker import MtlsBroker, mtls, run_broker_config  # noqa: F401 - the fixture
from tests.support.agent_proc import MODEL, REPO, AgentProcess, agent_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.pki import make_fleet
from tests.support.wait import free_port, port_open, wait_for

pytestmark = pytest.mark.integration

TIMEOUT_S = 3.0


def check(conf: Path, **kw: Any) -> dict[str, CheckResult]:
    report = run_doctor(str(conf), timeout_s=kw.pop("timeout_s", TIMEOUT_S), **kw)
    return {r.id: r for r in report.results}


def cli(conf: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    r = subprocess.run([sys.executable, "-m", "agent", "doctor", "--config", str(conf), "--timeout", str(TIMEOUT_S),
                        *args], capture_output=True, text=True, cwd=str(REPO), timeout=120,
                       env={**os.environ, **(env or {})})
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout


def assert_outcome(res: dict[str, CheckResult], check_id: str, status: str, code: str, *in_fix: str) -> None:
    r = res[check_id]
    assert (r.status, r.code) == (status, code), f"{check_id}: {r}"
    for text in in_fix:
        assert text in r.fix, f"{check_id}: {text!r} not in fix {r.fix!r}"


def plain(tmp_path: Path, broker_url: str, device: str = "dev-doc", **over: Any) -> Path:
    cfg = agent_config(tmp_path, device, broker_url, **over)
    return write_config(tmp_path / "agent.toml", cfg)


# ----- a healthy device, and the CLI contract --------------------------------------------------------------

def test_a_healthy_device_passes_and_exits_0(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    conf = plain(tmp_path, mosquitto.url, f"dev-{unique_id}")
    rc, out = cli(conf, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] is True, out
    by = {c["id"]: c for c in doc["checks"]}
    for cid in ("config", "key", "broker.dns", "broker.tcp", "broker.connect", "broker.publish", "model.vibration",
                "outbox.disk"):
        assert by[cid]["status"] == "pass", by[cid]
    assert by["broker.tls"]["status"] == "skip" and by["serial"]["status"] == "skip"
    assert by["agent"]["status"] == "warn" and by["agent"]["code"] == "not_running"
    assert set(doc["counts"]) == {"pass", "warn", "fail", "skip"} and doc["counts"]["fail"] == 0
    assert all(set(c) == {"id", "title", "status", "code", "detail", "fix"} for c in doc["checks"])
    assert "PUBACK" in by["broker.publish"]["detail"]


def test_broker_down_fails_tcp_with_its_fix_and_exits_1(tmp_path: Path) -> None:
    port = free_port()
    conf = plain(tmp_path, f"mqtt://127.0.0.1:{port}")
    rc, out = cli(conf)
    assert rc == 1
    lines = out.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("FAIL") and "broker.tcp" in ln)
    assert "connection refused" in lines[i]
    assert lines[i + 1].strip().startswith(f"fix: nothing listens on 127.0.0.1:{port}")
    assert any(ln.startswith("SKIP") and "broker.publish" in ln and "broker.tcp failed" in ln for ln in lines)
    assert lines[-1].endswith("skip") and "1 fail" in lines[-1]


def test_an_unresolvable_broker_fails_dns(tmp_path: Path) -> None:
    res = check(plain(tmp_path, "mqtt://no-such-broker.invalid:1883"))
    assert_outcome(res, "broker.dns", "fail", "failed", "getent hosts no-such-broker.invalid")


def test_an_invalid_config_fails_first_and_skips_the_rest(tmp_path: Path) -> None:
    conf = tmp_path / "agent.toml"
    conf.write_text('device_id = "Bad_ID"\nkey_uri = "file:/k"\n[outbox]\npath = "/tmp/o.db"\n')
    rc, out = cli(conf, "--json")
    doc = json.loads(out)
    assert rc == 1
    first = doc["checks"][0]
    assert (first["id"], first["status"], first["code"]) == ("config", "fail", "invalid")
    assert "device_id" in first["fix"] and "check-config" in first["fix"]
    assert all(c["status"] == "skip" for c in doc["checks"][1:])
    missing = check(tmp_path / "nope.toml")
    assert_outcome(missing, "config", "fail", "unreadable", "examples/agent.toml")


# ----- key -------------------------------------------------------------------------------------------------

def test_a_key_readable_by_others_fails(tmp_path: Path, mosquitto: Mosquitto) -> None:
    conf = plain(tmp_path, mosquitto.url)
    key = tmp_path / "keys" / "device.key"
    os.chmod(key, 0o644)
    res = check(conf)
    assert_outcome(res, "key", "fail", "permissions", f"chmod 600 {key}")
    assert res["config"].status == "pass", "the key check reports the key file, not the config check"
    os.chmod(key, 0o600)
    key.unlink()
    assert_outcome(check(conf), "key", "fail", "missing", "edge-provision device init")


SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"


@pytest.fixture
def softhsm(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    if not os.path.exists(SOFTHSM) or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")
    root = tmp_path / "softhsm"
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    label = "doc-" + uuid.uuid4().hex[:8]
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", "123456", "--so-pin",
                    "654321"], check=True, capture_output=True, env={**os.environ, **env})
    # The key is generated inside the token by a child process, so this process never loads the module
    # with another SOFTHSM2_CONF (PKCS#11 modules read it once).
    uri = f"pkcs11:token={label};object=device-key?module-path={SOFTHSM}&pin-value=123456"
    subprocess.run([sys.executable, "-c", "import sys; from provisioning.signers import create_key; "
                    "create_key(sys.argv[1])", uri], check=True, capture_output=True, env={**os.environ, **env},
                   cwd=str(REPO))
    yield env, label


def test_a_pkcs11_key_in_softhsm_signs_and_a_wrong_pin_fails(tmp_path: Path, mosquitto: Mosquitto,
                                                              softhsm: tuple[dict[str, str], str]) -> None:
    env, label = softhsm
    good = f"pkcs11:token={label};object=device-key?module-path={SOFTHSM}&pin-value=123456"
    conf = plain(tmp_path, mosquitto.url, key_uri=good)
    rc, out = cli(conf, "--json", env=env)
    key = next(c for c in json.loads(out)["checks"] if c["id"] == "key")
    assert (key["status"], key["code"]) == ("pass", "ok") and "pkcs11 key signed a probe" in key["detail"], key
    assert rc == 0, out
    conf = plain(tmp_path, mosquitto.url, key_uri=good.replace("123456", "000000"))
    rc, out = cli(conf, "--json", env=env)
    key = next(c for c in json.loads(out)["checks"] if c["id"] == "key")
    assert rc == 1 and (key["status"], key["code"]) == ("fail", "unusable"), key
    assert "PIN" in key["detail"] and "key_uri" in key["fix"]


# ----- certificates and the mTLS broker --------------------------------------------------------------------

def mtls_conf(tmp_path: Path, m: MtlsBroker, dev: str, *, name: str = "agent.toml", device_id: str | None = None,
              ca: Path | None = None, crl: Path | None = None, key: Path | None = None, cert: Path | None = None,
              port: int | None = None) -> Path:
    d = m.fleet.devices[dev]
    key, cert = key or d.key, cert or d.cert
    cfg = agent_config(tmp_path, device_id or dev, f"mqtts://127.0.0.1:{port or m.tls_port}", key_path=key,
                       certificate=str(cert),
                       mqtt={"ca_file": str(ca or m.ca), "cert_file": str(cert), "key_file": str(key)},
                       receipts={"crl_file": str(crl)} if crl else {})
    return write_config(tmp_path / name, cfg)


def test_mtls_identity_passes_end_to_end(tmp_path: Path, mtls: MtlsBroker) -> None:  # noqa: F811
    res = check(mtls_conf(tmp_path, mtls, "dev-a", crl=mtls.fleet.crl))
    for cid in ("key", "certificate", "device_id", "broker.tls", "broker.connect", "broker.publish"):
        assert res[cid].status == "pass", res[cid]
    assert "TLS" in res["broker.tls"].detail and "dev-a" in res["broker.connect"].detail
    assert "not revoked" in res["certificate"].detail


def test_wrong_ca_fails_the_tls_handshake_and_the_chain(tmp_path: Path, mtls: MtlsBroker) -> None:  # noqa: F811
    other = make_fleet(tmp_path / "other").ca_cert
    res = check(mtls_conf(tmp_path, mtls, "dev-a", ca=other))
    assert_outcome(res, "broker.tls", "fail", "verify", "mqtt.ca_file", str(other))
    assert_outcome(res, "certificate", "fail", "untrusted", str(other), "edge-provision ca sign")
    assert res["broker.connect"].code == "blocked"


def test_a_revoked_certificate_fails_its_check_and_the_broker_refuses_it(tmp_path: Path,
                                                                         mtls: MtlsBroker) -> None:  # noqa: F811
    mtls.fleet.revoke("dev-b")
    mtls.refresh_crl()
    conf = mtls_conf(tmp_path, mtls, "dev-b", crl=mtls.fleet.crl)

    def refused() -> dict[str, CheckResult] | None:
        res = check(conf)
        return res if res["broker.tls"].status == "fail" else None
    res = wait_for(refused, timeout=20, interval=0.5, what="the broker to reload its CRL")
    assert res is not None
    assert_outcome(res, "certificate", "fail", "revoked", "re-enrol")
    assert "revoked" in res["certificate"].detail
    assert_outcome(res, "broker.tls", "fail", "alert", "revoked, expired or from another CA")


def test_an_expired_a_foreign_and_another_devices_certificate(tmp_path: Path, mtls: MtlsBroker) -> None:  # noqa: F811
    now = datetime.now(timezone.utc)
    old = mtls.fleet.add_device("dev-old", not_before=now - timedelta(days=40), not_after=now - timedelta(days=1))
    res = check(mtls_conf(tmp_path, mtls, "dev-old", name="old.toml"))
    assert_outcome(res, "certificate", "fail", "expired", "edge-provision device rotate")
    assert res["broker.tls"].status == "fail", "the broker refuses an expired certificate too"
    assert old.cert.exists()
    # dev-a's certificate with dev-b's key: the key check passes, the certificate is for another key
    res = check(mtls_conf(tmp_path, mtls, "dev-a", name="mixed.toml", key=mtls.fleet.devices["dev-b"].key,
                          cert=mtls.fleet.devices["dev-a"].cert))
    assert res["key"].status == "pass"
    assert_outcome(res, "certificate", "fail", "key_mismatch", "device install-cert")
    # the config names a device id the certificate is not for
    res = check(mtls_conf(tmp_path, mtls, "dev-a", name="other-id.toml", device_id="dev-zzz"))
    assert_outcome(res, "device_id", "fail", "mismatch", "dev-zzz", "dev-a")
    assert_outcome(res, "broker.publish", "fail", "denied", "edge/v1/dev-zzz/doctor", "dev-a")


def test_an_acl_without_the_probe_topic_denies_the_publish(tmp_path: Path) -> None:
    """A broker provisioned before the doctor existed: the fleet's mTLS config, an ACL without ``doctor``."""
    fleet = make_fleet(tmp_path, devices=["dev-acl"], intermediate=True)
    broker = Mosquitto()
    tls_dir = broker.workdir / "tls"
    port = free_port()
    run_broker_config(fleet, tls_dir, port)
    acl = tls_dir / "edge.acl"
    acl.write_text("".join(ln for ln in acl.read_text().splitlines(keepends=True) if "/doctor" not in ln))
    broker.extra = (tls_dir / "edge-mtls.conf").read_text()
    broker.start()
    try:
        wait_for(lambda: port_open(port), what="TLS listener")
        d = fleet.devices["dev-acl"]
        cfg = agent_config(tmp_path, "dev-acl", f"mqtts://127.0.0.1:{port}", key_path=d.key, certificate=str(d.cert),
                           mqtt={"ca_file": str(tls_dir / "ca.pem"), "cert_file": str(d.cert), "key_file": str(d.key)})
        conf = write_config(tmp_path / "agent.toml", cfg)
        res = check(conf)
        assert res["broker.connect"].status == "pass", res["broker.connect"]
        assert_outcome(res, "broker.publish", "fail", "denied", "edge/v1/dev-acl/doctor",
                       "edge-provision broker-config", "dev-acl")
        assert "Not authorized" in res["broker.publish"].detail
        rc, _ = cli(conf)
        assert rc == 1
        run_broker_config(fleet, tls_dir, port)  # today's broker-config grants the probe topic
        broker.reload()
        wait_for(lambda: check(conf)["broker.publish"].status == "pass", timeout=20, interval=0.5,
                 what="the regenerated ACL to allow the probe")
    finally:
        broker.cleanup()


# ----- serial port ---------------------------------------------------------------------------------------

def serial_conf(tmp_path: Path, broker_url: str, port: str, sensor_id: int = 0) -> Path:
    return plain(tmp_path, broker_url, pipeline=[{
        "stream": "vibration", "model": str(MODEL), "window": 128, "hop": 128,
        "source": {"type": "serial", "port": port, "sensor_id": sensor_id}}])


def test_a_missing_serial_port_fails(tmp_path: Path, mosquitto: Mosquitto) -> None:
    port = str(tmp_path / "by-id" / "usb-Missing_MCU-if00")
    res = check(serial_conf(tmp_path, mosquitto.url, port))
    assert_outcome(res, "serial.vibration", "fail", "missing", "/dev/serial/by-id/", "pipeline[0].source.port")


def test_a_port_without_an_mcu_gives_no_hello(tmp_path: Path, mosquitto: Mosquitto) -> None:
    master, slave = os.openpty()
    try:
        res = check(serial_conf(tmp_path, mosquitto.url, os.ttyname(slave)), timeout_s=1.0)
        assert_outcome(res, "serial.vibration", "fail", "no_hello", "pipeline[0].source.baudrate", "TX/RX")
        assert "nothing arrived" in res["serial.vibration"].detail
    finally:
        os.close(master)
        os.close(slave)


def test_the_simulated_mcu_says_hello_and_a_wrong_sensor_fails(tmp_path: Path, mosquitto: Mosquitto) -> None:
    link = str(tmp_path / "by-id" / "usb-Simulated_MCU-if00")
    (tmp_path / "by-id").mkdir()
    with Simulator(link, SimConfig(seed=7)):
        res = check(serial_conf(tmp_path, mosquitto.url, link))
        assert res["serial.vibration"].status == "pass", res["serial.vibration"]
        assert "HELLO from firmware" in res["serial.vibration"].detail
        res = check(serial_conf(tmp_path, mosquitto.url, link, sensor_id=5))
        assert_outcome(res, "serial.vibration", "fail", "no_sensor", "pipeline[0].source.sensor_id")


# ----- model ---------------------------------------------------------------------------------------------

def test_a_wrong_model_file_fails_its_digest(tmp_path: Path, mosquitto: Mosquitto) -> None:
    mdir = tmp_path / "models"
    mdir.mkdir()
    model = mdir / "vibration-int8.tflite"
    data = bytearray(MODEL.read_bytes())
    data[len(data) // 2] ^= 0xFF  # another file than the metadata describes (e.g. a half-copied update)
    model.write_bytes(bytes(data))
    shutil.copy(MODEL.with_suffix(".json"), mdir / "vibration-int8.json")
    conf = plain(tmp_path, mosquitto.url, pipeline=[{"stream": "vibration", "model": str(model), "window": 128,
                                                      "hop": 128, "source": {"type": "simulated"}}])
    res = check(conf)
    assert_outcome(res, "model.vibration", "fail", "digest", str(model), "same release")
    meta = json.loads((mdir / "vibration-int8.json").read_text())
    del meta["sha256"]
    (mdir / "vibration-int8.json").write_text(json.dumps(meta))
    assert_outcome(check(conf), "model.vibration", "warn", "no_digest", "sha256")
    model.unlink()
    assert_outcome(check(conf), "model.vibration", "fail", "missing", "pipeline[0].model")


# ----- outbox disk and wear ------------------------------------------------------------------------------

@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs (root only); skips with the reason when it cannot be mounted."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a full disk is provoked with a 16 MiB tmpfs, which needs root (run the tests as root)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0777", "tmpfs", str(mnt)], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): the full-disk case needs CAP_SYS_ADMIN")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_fails_and_a_small_one_warns(tmp_path: Path, mosquitto: Mosquitto, small_tmpfs: Path) -> None:
    conf = plain(tmp_path, mosquitto.url, outbox={"path": str(small_tmpfs / "outbox.db")})
    res = check(conf)
    assert_outcome(res, "outbox.disk", "warn", "low", "outbox.max_bytes")  # 16 MiB free, a 64 MiB cap
    with open(small_tmpfs / "filler", "wb") as f:  # fill it to the last byte
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    res = check(conf)
    assert_outcome(res, "outbox.disk", "fail", "full", str(small_tmpfs), "free space")
    assert "test write failed: No space left on device" in res["outbox.disk"].detail


def test_a_missing_outbox_directory_fails(tmp_path: Path, mosquitto: Mosquitto) -> None:
    conf = plain(tmp_path, mosquitto.url, outbox={"path": str(tmp_path / "nope" / "outbox.db")})
    assert_outcome(check(conf), "outbox.disk", "fail", "missing_dir", "install -d")


# ----- with the agent running ----------------------------------------------------------------------------

def test_a_running_agent_is_judged_from_its_session(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    conf = plain(tmp_path, mosquitto.url, f"dev-{unique_id}", status={"interval_s": 0.3},
                 doctor={"wear_budget_bytes_per_day": 1})
    agent = AgentProcess(conf).start()
    try:
        status = tmp_path / "status.json"

        def connected() -> bool:
            try:
                return bool(json.loads(status.read_text())["telemetry"]["mqtt"]["connected"])
            except (OSError, ValueError, KeyError):
                return False
        wait_for(connected, timeout=30, what=f"agent connected\n{agent.log()[-2000:]}")
        res = check(conf)
        for cid in ("broker.dns", "broker.tcp", "broker.tls", "broker.connect"):
            assert_outcome(res, cid, "pass", "agent_connected")
        assert_outcome(res, "broker.publish", "pass", "agent_ok")
        assert_outcome(res, "agent", "pass", "ok")
        assert "healthy" in res["agent"].detail
        # one byte a day: the agent's real writes are over any budget that small
        assert_outcome(res, "outbox.wear", "warn", "over_budget", "commit_linger_s")
        assert "the agent (pid" in res["outbox.wear"].detail
        assert agent.terminate() == 0
    finally:
        agent.stop()
    res = check(conf)
    assert_outcome(res, "agent", "warn", "not_running", "systemctl start")
    assert res["broker.publish"].code == "ok", "with the agent gone the probe runs again"


def test_systemd_is_skipped_with_a_reason_where_there_is_none(tmp_path: Path, mosquitto: Mosquitto) -> None:
    res = check(plain(tmp_path, mosquitto.url))
    r = res["systemd"]
    if os.path.isdir("/run/systemd/system"):
        assert r.status in ("pass", "warn", "fail") and r.code != "no_systemd"
    else:
        assert (r.status, r.code) == ("skip", "no_systemd") and "/run/systemd/system" in r.detail


def test_a_serial_port_held_by_the_running_agent_is_judged_by_its_results(tmp_path: Path, mosquitto: Mosquitto,
                                                                          unique_id: str) -> None:
    """The agent locks its port (as the doctor would): the doctor must not steal its bytes, and says whether
    results come from it."""
    (tmp_path / "by-id").mkdir()
    link = str(tmp_path / "by-id" / "usb-Simulated_MCU_Agent-if00")
    with Simulator(link, SimConfig(seed=11)):
        cfg = agent_config(tmp_path, f"dev-{unique_id}", mosquitto.url, status={"interval_s": 0.3},
                           pipeline=[{"stream": "vibration", "model": str(MODEL), "window": 128, "hop": 128,
                                      "source": {"type": "serial", "port": link}}])
        conf = write_config(tmp_path / "agent.toml", cfg)
        agent = AgentProcess(conf).start()
        try:
            status = tmp_path / "status.json"

            def results() -> int:
                try:
                    doc = json.loads(status.read_text())
                    return int(doc["telemetry"]["pipelines"]["vibration"]["results"])
                except (OSError, ValueError, KeyError):
                    return 0
            wait_for(lambda: results() > 0, timeout=30, what=f"results from the MCU\n{agent.log()[-2000:]}")
            res = check(conf)
            assert_outcome(res, "serial.vibration", "pass", "agent_has_port")
            assert "held by the running agent" in res["serial.vibration"].detail
            assert agent.terminate() == 0
        finally:
            agent.stop()

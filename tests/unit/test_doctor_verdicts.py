"""The doctor's pure verdicts: every outcome code of every check is produced from facts by a table below, so
every fix line is formatted at least once (a missing fact raises), and the catalog has no dead codes."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent.doctor.catalog import CHECKS, SPECS, CheckResult, verdict
from agent.doctor.verdicts import (
    MIN_FREE_BYTES,
    BrokerFacts,
    CertFacts,
    DiskFacts,
    SerialFacts,
    _usec,
    judge_agent,
    judge_broker,
    judge_broker_from_agent,
    judge_certificate,
    judge_clock,
    judge_device_id,
    judge_disk,
    judge_model,
    judge_serial,
    judge_systemd,
    judge_wear,
)

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
MiB = 1024 * 1024

CERT = CertFacts(path="/k/device.crt", loaded=True, cn="dev-1", not_before=NOW - timedelta(days=10),
                 not_after=NOW + timedelta(days=300), key_matches=True, ca="/etc/fleet-ca.pem", crl="/etc/crl.pem")
BROKER = BrokerFacts(host="broker.lan", port=8883, tls=True, protocol=5, timeout_s=5.0, client_id="dev-1-doctor",
                     username="dev-1", topic="edge/v1/dev-1/doctor", prefix="edge/v1", ca="/etc/fleet-ca.pem",
                     addrs=["10.0.0.2"], tls_version="TLSv1.3", connack=0, puback=0)
SERIAL = SerialFacts(stream="vib", key="pipeline[0].source.port", port="/dev/ttyACM0", baudrate=921600, sensor_id=0,
                     timeout_s=3.0, exists=True, hello_sensors=(0,), fw_version="1.2.3")
DISK = DiskFacts("/var/lib/edge-agent", True, free_bytes=10_000 * MiB, outbox_file_bytes=MiB, max_bytes=64 * MiB)
SYSTEMD = {"LoadState": "loaded", "ActiveState": "active", "SubState": "running", "Result": "success",
           "NRestarts": "0", "WatchdogUSec": "30s"}
STATUS = {"pid": 42, "healthy": True, "stale": False, "reasons": [], "degraded": [],
          "telemetry": {"outbox": {"committed": 10, "depth": 1}, "mqtt": {"state": "connected"}}}


def broker(**kw: object) -> list[CheckResult]:
    return judge_broker(replace(BROKER, **kw))  # type: ignore[arg-type]


def last(results: list[CheckResult]) -> CheckResult:
    """The first result that is not a pass (the one the case provokes), else the last one."""
    for r in results:
        if r.status != "pass":
            return r
    return results[-1]


def model(**kw: object) -> CheckResult:
    args: dict[str, object] = {"exists": True, "meta_error": None, "want": "ab" * 32, "got": "ab" * 32}
    args.update(kw)
    return judge_model("vib", "pipeline[0].model", "/m/v.tflite", "/m/v.json", **args)  # type: ignore[arg-type]


# (check, code, how to provoke it)
CASES: list[tuple[str, str, Callable[[], CheckResult]]] = [
    ("config", "ok", lambda: verdict("config", "ok", "valid")),
    ("config", "unreadable", lambda: verdict("config", "unreadable", "x", file="/a.toml", key="(file)", problem="p")),
    ("config", "invalid", lambda: verdict("config", "invalid", "x", file="/a.toml", key="mqtt.url", problem="p")),
    ("config", "environment", lambda: verdict("config", "environment", "x", file="/a.toml", key="k", problem="p")),
    ("key", "ok", lambda: verdict("key", "ok", "signed")),
    ("key", "missing", lambda: verdict("key", "missing", "no file", problem="p", path="/k")),
    ("key", "permissions", lambda: verdict("key", "permissions", "0644", path="/k")),
    ("key", "unusable", lambda: verdict("key", "unusable", "PIN", problem="PIN")),
    ("key", "bad_signature", lambda: verdict("key", "bad_signature", "bad")),
    ("certificate", "ok", lambda: judge_certificate(CERT, NOW)),
    ("certificate", "none", lambda: judge_certificate(None, NOW)),
    ("certificate", "unreadable", lambda: judge_certificate(CertFacts("/c", False, "not PEM"), NOW)),
    ("certificate", "key_mismatch", lambda: judge_certificate(replace(CERT, key_matches=False), NOW)),
    ("certificate", "untrusted", lambda: judge_certificate(replace(CERT, chain_reason="untrusted",
                                                                   chain_error="no path"), NOW)),
    ("certificate", "expired", lambda: judge_certificate(replace(CERT, not_after=NOW - timedelta(days=1)), NOW)),
    ("certificate", "not_yet_valid", lambda: judge_certificate(replace(CERT, not_before=NOW + timedelta(days=1)),
                                                               NOW)),
    ("certificate", "revoked", lambda: judge_certificate(replace(CERT, chain_reason="revoked",
                                                                 chain_error="serial 1a revoked"), NOW)),
    ("certificate", "stale_crl", lambda: judge_certificate(replace(CERT, chain_reason="stale_crl", chain_error="x",
                                                                   crl_next_update=NOW - timedelta(days=2)), NOW)),
    ("certificate", "bad_crl", lambda: judge_certificate(replace(CERT, chain_reason="bad_crl", chain_error="x"), NOW)),
    ("certificate", "no_ca", lambda: judge_certificate(replace(CERT, ca=None), NOW)),
    ("certificate", "expires_soon", lambda: judge_certificate(replace(CERT, not_after=NOW + timedelta(days=5)), NOW)),
    ("device_id", "ok", lambda: judge_device_id("dev-1", [CERT])),
    ("device_id", "none", lambda: judge_device_id("dev-1", [])),
    ("device_id", "mismatch", lambda: judge_device_id("dev-2", [CERT])),
    ("device_id", "bad_id", lambda: judge_device_id("dev-1", [replace(CERT, identity_error="CN and SAN disagree")])),
    ("clock", "ok", lambda: judge_clock(True, NOW)),
    ("clock", "unsynced", lambda: judge_clock(False, NOW)),
    ("clock", "unknown", lambda: judge_clock(None, NOW)),
    ("clock", "implausible", lambda: judge_clock(True, datetime(2000, 1, 1, tzinfo=timezone.utc))),
    ("broker.dns", "ok", lambda: broker()[0]),
    ("broker.dns", "agent_connected", lambda: judge_broker_from_agent(5, {}, 42, "dev-1", "edge/v1")[0]),
    ("broker.dns", "failed", lambda: last(broker(dns_error="Name or service not known"))),
    ("broker.tcp", "ok", lambda: broker()[1]),
    ("broker.tcp", "agent_connected", lambda: judge_broker_from_agent(5, {}, 42, "dev-1", "edge/v1")[1]),
    ("broker.tcp", "refused", lambda: last(broker(tcp_error=("refused", "connection refused")))),
    ("broker.tcp", "timeout", lambda: last(broker(tcp_error=("timeout", "no answer")))),
    ("broker.tcp", "error", lambda: last(broker(tcp_error=("error", "network unreachable")))),
    ("broker.tls", "ok", lambda: broker()[2]),
    ("broker.tls", "agent_connected", lambda: judge_broker_from_agent(5, {}, 42, "dev-1", "edge/v1")[2]),
    ("broker.tls", "plain", lambda: broker(tls=False)[2]),
    ("broker.tls", "verify", lambda: last(broker(tls_error=("verify", "unable to get local issuer certificate")))),
    ("broker.tls", "alert", lambda: last(broker(tls_error=("alert", "sslv3 alert certificate revoked")))),
    ("broker.tls", "client_cert", lambda: last(broker(tls_error=("client_cert", "PEM lib")))),
    ("broker.tls", "error", lambda: last(broker(tls_error=("error", "wrong version number")))),
    ("broker.connect", "ok", lambda: broker()[3]),
    ("broker.connect", "agent_connected", lambda: judge_broker_from_agent(5, {}, 42, "dev-1", "edge/v1")[3]),
    ("broker.connect", "refused", lambda: last(broker(connack=0x87))),
    ("broker.connect", "closed", lambda: last(broker(connect_error=("closed", "EOF")))),
    ("broker.connect", "timeout", lambda: last(broker(connect_error=("timeout", "no CONNACK")))),
    ("broker.publish", "ok", lambda: broker()[4]),
    ("broker.publish", "agent_ok", lambda: judge_broker_from_agent(5, {}, 42, "dev-1", "edge/v1")[4]),
    ("broker.publish", "denied", lambda: last(broker(puback=0x87))),
    ("broker.publish", "agent_denied", lambda: judge_broker_from_agent(5, {"refused PUBACK": 3}, 42, "dev-1",
                                                                       "edge/v1")[4]),
    ("broker.publish", "rejected", lambda: last(broker(puback=0x90))),
    ("broker.publish", "timeout", lambda: last(broker(publish_error=("timeout", "no PUBACK")))),
    ("broker.publish", "disconnected", lambda: last(broker(publish_error=("disconnected", "EOF")))),
    ("broker.publish", "unverifiable", lambda: last(broker(protocol=4))),
    ("serial", "ok", lambda: judge_serial(SERIAL, None)),
    ("serial", "agent_has_port", lambda: judge_serial(replace(SERIAL, open_error=("locked", "lock")), {"results": 9})),
    ("serial", "none", lambda: verdict("serial", "none", "no serial pipeline")),
    ("serial", "missing", lambda: judge_serial(replace(SERIAL, exists=False), None)),
    ("serial", "permission", lambda: judge_serial(replace(SERIAL, open_error=("permission", "EACCES")), None)),
    ("serial", "open_failed", lambda: judge_serial(replace(SERIAL, open_error=("locked", "lock")), None)),
    ("serial", "no_hello", lambda: judge_serial(replace(SERIAL, hello_sensors=None, bytes_seen=40), None)),
    ("serial", "no_sensor", lambda: judge_serial(replace(SERIAL, sensor_id=3), None)),
    ("serial", "agent_silent", lambda: judge_serial(replace(SERIAL, open_error=("locked", "lock")), {"results": 0})),
    ("model", "ok", lambda: model()),
    ("model", "missing", lambda: model(exists=False)),
    ("model", "metadata", lambda: model(meta_error="not JSON")),
    ("model", "digest", lambda: model(got="cd" * 32)),
    ("model", "no_digest", lambda: model(want=None)),
    ("outbox.disk", "ok", lambda: judge_disk(DISK)),
    ("outbox.disk", "missing_dir", lambda: judge_disk(replace(DISK, exists=False))),
    ("outbox.disk", "not_writable", lambda: judge_disk(replace(DISK, write_error=("denied", "read-only")))),
    ("outbox.disk", "full", lambda: judge_disk(replace(DISK, free_bytes=MIN_FREE_BYTES - 1))),
    ("outbox.disk", "low", lambda: judge_disk(replace(DISK, free_bytes=20 * MiB))),
    ("outbox.wear", "ok", lambda: judge_wear(100 * MiB, "the agent", 1 << 30)),
    ("outbox.wear", "unknown", lambda: judge_wear(None, "no figures", 1 << 30)),
    ("outbox.wear", "over_budget", lambda: judge_wear(2 << 30, "the agent", 1 << 30)),
    ("outbox.wear", "device_over_budget", lambda: judge_wear(2 << 30, "everything on mmcblk0", 1 << 30, own=False)),
    ("systemd", "ok", lambda: judge_systemd("edge-agent.service", SYSTEMD)),
    ("systemd", "no_systemd", lambda: judge_systemd("edge-agent.service", None, "no systemd")),
    ("systemd", "not_found", lambda: judge_systemd("x.service", {**SYSTEMD, "LoadState": "not-found",
                                                                 "ActiveState": "inactive"})),
    ("systemd", "failed", lambda: judge_systemd("x.service", {**SYSTEMD, "ActiveState": "failed",
                                                              "Result": "watchdog"})),
    ("systemd", "inactive", lambda: judge_systemd("x.service", {**SYSTEMD, "ActiveState": "inactive",
                                                                "SubState": "dead"})),
    ("systemd", "restarting", lambda: judge_systemd("x.service", {**SYSTEMD, "ActiveState": "activating",
                                                                  "SubState": "auto-restart", "NRestarts": "7"})),
    ("systemd", "no_watchdog", lambda: judge_systemd("x.service", {**SYSTEMD, "WatchdogUSec": "0"})),
    ("agent", "ok", lambda: judge_agent(STATUS, "", "edge-agent.service")),
    ("agent", "not_running", lambda: judge_agent(None, "no status file", "edge-agent.service")),
    ("agent", "unhealthy", lambda: judge_agent({**STATUS, "healthy": False, "reasons": ["committer stalled"]}, "",
                                               "edge-agent.service")),
    ("agent", "degraded", lambda: judge_agent({**STATUS, "degraded": ["no broker connection for 300s"]}, "",
                                              "edge-agent.service")),
]


@pytest.mark.parametrize(("check", "code", "make"), CASES, ids=[f"{c}:{k}" for c, k, _ in CASES])
def test_each_outcome(check: str, code: str, make: Callable[[], CheckResult]) -> None:
    r = make()
    assert r.id == check or r.id.startswith(check + "."), r
    assert r.code == code, r
    assert r.status == SPECS[check].outcomes[code][0]
    assert r.detail
    if r.status in ("warn", "fail"):
        assert r.fix and "{" not in r.fix, r.fix
        assert "\n" not in r.fix, "the fix is one line"


def test_the_table_covers_every_outcome_of_the_catalog() -> None:
    covered = {(c, k) for c, k, _ in CASES}
    every = {(spec.id, code) for spec in CHECKS for code in spec.outcomes}
    assert every == covered, f"untested: {sorted(every - covered)}; unknown: {sorted(covered - every)}"


def test_a_failing_broker_step_skips_the_steps_after_it() -> None:
    res = broker(tcp_error=("refused", "connection refused"))
    assert [r.status for r in res] == ["pass", "fail", "skip", "skip", "skip"]
    assert all("broker.tcp failed" in r.detail for r in res[2:])
    assert "nothing listens on broker.lan:8883" in res[1].fix


def test_a_tls13_alert_reported_at_connect_is_a_tls_failure() -> None:
    res = broker(tls_error=("alert", "tlsv13 alert certificate required"))
    assert (res[2].id, res[2].status, res[2].code) == ("broker.tls", "fail", "alert")


def test_denied_publish_names_the_acl_fix() -> None:
    r = last(broker(puback=0x87))
    assert r.status == "fail" and "edge/v1/dev-1/doctor" in r.fix and "broker-config" in r.fix


def test_no_matching_subscribers_is_a_successful_publish() -> None:
    assert broker(puback=0x10)[4].status == "pass"


def test_connack_hints_per_reason() -> None:
    assert 'mqtt.protocol = "3.1.1"' in last(broker(connack=0x84)).fix
    assert "mqtt.password_file" in last(broker(connack=0x86)).fix
    assert "see the broker log" in last(broker(connack=0x99)).fix


def test_disk_low_suggests_a_cap_that_fits() -> None:
    r = judge_disk(replace(DISK, free_bytes=40 * MiB, outbox_file_bytes=2 * MiB, max_bytes=64 * MiB))
    assert r.code == "low"
    suggested = int(r.facts["suggest"])
    assert 64 * 1024 <= suggested < 40 * MiB


def test_disk_write_error_wins_over_free_space() -> None:
    assert judge_disk(replace(DISK, write_error=("full", "ENOSPC"))).code == "full"


@pytest.mark.parametrize(("text", "usec"), [("30s", 30_000_000), ("1min 30s", 90_000_000), ("500ms", 500_000),
                                            ("0", 0), ("", 0), ("infinity", 0), ("15000000", 15_000_000),
                                            ("2h", 7_200_000_000), ("garbage", 0)])
def test_watchdog_usec_parsing(text: str, usec: int) -> None:
    assert _usec(text) == usec


def test_a_stale_status_is_not_running() -> None:
    r = judge_agent({**STATUS, "stale": True, "age_s": 400.0, "pid_alive": False}, "", "u.service")
    assert r.code == "not_running" and "pid 42 gone" in r.detail


def test_certificate_expiry_is_checked_before_the_chain() -> None:
    """An expired certificate also fails the chain check; the verdict names the expiry (the real fix)."""
    r = judge_certificate(replace(CERT, not_after=NOW - timedelta(days=1), chain_reason="expired",
                                  chain_error="x"), NOW)
    assert r.code == "expired" and "rotate" in r.fix


# ----- docs/doctor.md --------------------------------------------------------------------------------------

def test_docs_list_every_check_outcome_and_fix_exactly() -> None:
    doc = (REPO / "docs" / "doctor.md").read_text()
    rows = re.findall(r"^\| `([a-z_.]+)` \| `([a-z_]+)` \| (pass|warn|fail|skip) \| (.*) \|$", doc, re.MULTILINE)
    documented = {(c, k): (s, fix.strip()) for c, k, s, fix in rows}
    expected = {(spec.id, code): (status, fix or "-")
                for spec in CHECKS for code, (status, fix) in spec.outcomes.items()}
    missing = sorted(set(expected) - set(documented))
    extra = sorted(set(documented) - set(expected))
    assert not missing and not extra, f"missing in docs: {missing}; not in the code: {extra}"
    wrong = {k: (documented[k], v) for k, v in expected.items() if documented[k] != (v[0], v[1].replace("|", "\\|"))}
    assert not wrong, f"docs disagree with agent/doctor/catalog.py: {wrong}"
    for spec in CHECKS:
        assert f"### `{spec.id}`" in doc, f"docs/doctor.md has no section for {spec.id}"
    assert "`blocked`" in doc and "`probe_error`" in doc

"""Pure judgements: facts a probe gathered in, ``CheckResult``s out (no I/O, time passed in).

Each ``judge_*`` maps one kind of facts onto the outcome codes of ``agent.doctor.catalog``; the probes in
``agent.doctor.probes`` only gather. That keeps every verdict testable from a table, and the probes free of
decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from agent.doctor.catalog import SPECS, CheckResult, verdict
from agent.doctor.mqtt_wire import CONNACK_HINTS, reason_name

__all__ = [
    "BrokerFacts", "CertFacts", "DiskFacts", "SerialFacts", "human_bytes", "judge_agent", "judge_broker",
    "judge_broker_from_agent",
    "judge_certificate", "judge_clock", "judge_device_id", "judge_disk", "judge_model", "judge_serial",
    "judge_systemd", "judge_wear", "skipped",
]

EXPIRY_WARN_DAYS = 30
MIN_FREE_BYTES = 4 * 1024 * 1024  # below this a group commit with its WAL may not fit: the outbox stops
WAL_HEADROOM_BYTES = 8 * 1024 * 1024  # journal_size_limit (4 MiB) and checkpoint slack beside the database
# No agent release predates this: a clock before it is wrong, and TLS refuses every certificate.
RELEASED = datetime(2025, 1, 1, tzinfo=timezone.utc)


def human_bytes(n: float) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def skipped(check: str, why: str, *, suffix: str = "") -> CheckResult:
    """A check not run because another failed (or it needs something absent): status skip, code ``blocked``."""
    spec = SPECS[check]
    return CheckResult(id=f"{check}.{suffix}" if suffix else check, title=spec.title, status="skip", code="blocked",
                       detail=f"not checked: {why}")


# ----- certificate and identity -------------------------------------------------------------------------

@dataclass(frozen=True)
class CertFacts:
    """What the probe read from a certificate chain and how ``provisioning.chain`` judged it."""

    path: str
    loaded: bool
    load_error: str = ""
    cn: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    key_matches: bool | None = None  # None: the key could not be opened (the key check says why)
    ca: str | None = None  # the fleet CA file the chain was checked against (None: none configured)
    crl: str | None = None
    chain_reason: str | None = None  # provisioning's reason: untrusted, expired, revoked, stale_crl, bad_id...
    chain_error: str = ""
    crl_next_update: datetime | None = None
    identity_error: str = ""  # CN/SAN/role problem (leaf_identity)


def judge_certificate(f: CertFacts | None, now: datetime) -> CheckResult:
    if f is None:
        return verdict("certificate", "none", "no certificate configured (certificate, mqtt.cert_file): plain "
                                              "MQTT and no x5chain in the birth record")
    facts: dict[str, Any] = {"path": f.path, "ca": f.ca or "(none)", "crl": f.crl or "(none)"}
    if not f.loaded:
        return verdict("certificate", "unreadable", f"{f.path}: {f.load_error}", **facts)
    assert f.not_after is not None and f.not_before is not None
    facts.update(not_after=f.not_after.date().isoformat(), not_before=f.not_before.isoformat())
    if now < f.not_before:
        return verdict("certificate", "not_yet_valid", f"valid from {f.not_before.isoformat()}, the clock says "
                                                       f"{now.isoformat()}", **facts)
    if now > f.not_after:
        return verdict("certificate", "expired", f"expired {f.not_after.isoformat()}", **facts)
    if f.key_matches is False:
        return verdict("certificate", "key_mismatch", f"{f.path} certifies another public key than key_uri's",
                       **facts)
    if f.chain_reason is not None:
        code = {"untrusted": "untrusted", "revoked": "revoked", "stale_crl": "stale_crl", "expired": "expired",
                "bad_crl": "bad_crl"}.get(f.chain_reason)
        if code == "stale_crl" and f.crl_next_update is not None:
            facts["next_update"] = f.crl_next_update.isoformat()
        if code is not None:
            return verdict("certificate", code, f.chain_error, problem=f.chain_error, **facts)
    if f.ca is None:
        return verdict("certificate", "no_ca", f"{f.cn}: no fleet CA configured, the chain is not checked", **facts)
    days = (f.not_after - now).days
    if days < EXPIRY_WARN_DAYS:
        return verdict("certificate", "expires_soon", f"{f.cn}: expires {f.not_after.isoformat()}", days=days,
                       **facts)
    crl_note = f", not revoked per {f.crl}" if f.crl else " (no receipts.crl_file: revocation not checked here)"
    return verdict("certificate", "ok", f"{f.cn}: chains to {f.ca}, valid until {f.not_after.date().isoformat()} "
                                        f"({days} days){crl_note}", **facts)


def judge_device_id(device_id: str, certs: Sequence[CertFacts]) -> CheckResult:
    loaded = [c for c in certs if c.loaded]
    if not certs:
        return verdict("device_id", "none", "no certificate configured")
    if not loaded:
        return skipped("device_id", "the certificate cannot be read")
    for c in loaded:
        if c.identity_error:
            return verdict("device_id", "bad_id", f"{c.path}: {c.identity_error}", path=c.path,
                           problem=c.identity_error)
        if c.cn != device_id:
            return verdict("device_id", "mismatch", f"device_id {device_id}, {c.path} CN {c.cn}", path=c.path,
                           device_id=device_id, cn=c.cn)
    return verdict("device_id", "ok", f"{device_id} = CN of {', '.join(sorted({c.path for c in loaded}))}")


# ----- clock -------------------------------------------------------------------------------------------

def judge_clock(synced: bool | None, now: datetime) -> CheckResult:
    if now < RELEASED:
        return verdict("clock", "implausible", f"system time {now.isoformat()}", now=now.isoformat())
    if synced is None:
        return verdict("clock", "unknown", "adjtimex gave no answer")
    if not synced:
        return verdict("clock", "unsynced", f"the kernel reports the clock unsynchronised (now {now.isoformat()})")
    return verdict("clock", "ok", "the kernel reports the clock synchronised (NTP or better)")


# ----- broker -------------------------------------------------------------------------------------------

@dataclass
class BrokerFacts:
    """What the broker probe saw, step by step; a step's error stops the steps after it."""

    host: str
    port: int
    tls: bool
    protocol: int  # 4 (3.1.1) or 5
    timeout_s: float
    client_id: str
    username: str  # what the ACL sees: the certificate CN with mTLS, else mqtt.username or "(anonymous)"
    topic: str
    prefix: str
    ca: str = "(system CAs)"
    addrs: list[str] = field(default_factory=list)
    dns_error: str | None = None
    tcp_error: tuple[str, str] | None = None  # (refused|timeout|error, detail)
    tls_error: tuple[str, str] | None = None  # (verify|alert|client_cert|error, detail)
    tls_version: str | None = None
    connect_error: tuple[str, str] | None = None  # (closed|timeout, detail)
    connack: int | None = None
    publish_error: tuple[str, str] | None = None  # (timeout|disconnected, detail)
    puback: int | None = None
    early: bytes = b""  # bytes the broker sent before our CONNECT (fed to the packet reader)


def judge_broker(f: BrokerFacts) -> list[CheckResult]:
    """broker.dns, .tcp, .tls, .connect, .publish; after the first failure the rest are skipped."""
    facts: dict[str, Any] = {"host": f.host, "port": f.port, "timeout": f"{f.timeout_s:g}", "ca": f.ca,
                             "client_id": f.client_id, "username": f.username, "topic": f.topic, "prefix": f.prefix}
    out: list[CheckResult] = []
    order = ("broker.dns", "broker.tcp", "broker.tls", "broker.connect", "broker.publish")

    def stop(failed: CheckResult) -> list[CheckResult]:
        out.append(failed)
        out.extend(skipped(c, f"{failed.id} failed") for c in order[len(out):])
        return out

    if f.dns_error is not None:
        return stop(verdict("broker.dns", "failed", f"{f.host}: {f.dns_error}", problem=f.dns_error, **facts))
    out.append(verdict("broker.dns", "ok", f"{f.host} → {', '.join(f.addrs)}"))
    if f.tcp_error is not None:
        cause, detail = f.tcp_error
        return stop(verdict("broker.tcp", cause, f"{f.host}:{f.port}: {detail}", problem=detail, **facts))
    out.append(verdict("broker.tcp", "ok", f"{f.host}:{f.port} accepts connections"))
    if not f.tls:
        out.append(verdict("broker.tls", "plain", f"mqtt://{f.host}:{f.port}: plain MQTT, no TLS"))
    elif f.tls_error is not None:
        cause, detail = f.tls_error
        return stop(verdict("broker.tls", cause, detail, problem=detail, **facts))
    else:
        out.append(verdict("broker.tls", "ok", f"{f.tls_version or 'TLS'} with the device certificate, broker "
                                               f"verified against {f.ca}"))
    if f.connect_error is not None:
        cause, detail = f.connect_error
        return stop(verdict("broker.connect", cause, detail, **facts))
    assert f.connack is not None
    if f.connack != 0:
        name = reason_name(f.connack)
        return stop(verdict("broker.connect", "refused", f"CONNACK {name} (0x{f.connack:02x})", reason=name,
                            code_hex=f"0x{f.connack:02x}", hint=CONNACK_HINTS.get(f.connack, "see the broker log"),
                            **facts))
    out.append(verdict("broker.connect", "ok", f"MQTT {'5' if f.protocol == 5 else '3.1.1'} session accepted as "
                                               f"{f.username} (client id {f.client_id})"))
    if f.publish_error is not None:
        cause, detail = f.publish_error
        out.append(verdict("broker.publish", cause, detail, **facts))
        return out
    assert f.puback is not None
    if f.protocol == 4:
        out.append(verdict("broker.publish", "unverifiable", f"PUBACK on {f.topic}, but MQTT 3.1.1 acknowledges "
                                                             "refused publishes too", **facts))
    elif f.puback in (0x00, 0x10):
        out.append(verdict("broker.publish", "ok", f"PUBACK {reason_name(f.puback)} on {f.topic}"))
    elif f.puback == 0x87:
        out.append(verdict("broker.publish", "denied", f"PUBACK Not authorized (0x87) on {f.topic}", **facts))
    else:
        name = reason_name(f.puback)
        out.append(verdict("broker.publish", "rejected", f"PUBACK {name} (0x{f.puback:02x}) on {f.topic}",
                           reason=name, code_hex=f"0x{f.puback:02x}", **facts))
    return out


def judge_broker_from_agent(published: int, rejected: Mapping[str, int], pid: int, username: str,
                            prefix: str) -> list[CheckResult]:
    """The running agent is connected: its session proves dns, tcp, tls and connect; its PUBACK refusals say
    whether it may publish. No probe: on a broker that forces the client id to the CN, a probe's connection
    would take the agent's session over."""
    why = f"the running agent (pid {pid}) is connected to the broker (no probe, so its session is not taken over)"
    out = [verdict(c, "agent_connected", why) for c in ("broker.dns", "broker.tcp", "broker.tls", "broker.connect")]
    if rejected:
        reasons = ", ".join(f"{k} x{v}" for k, v in sorted(rejected.items()))
        out.append(verdict("broker.publish", "agent_denied", f"PUBACK refusals: {reasons}", reasons=reasons,
                           username=username, prefix=prefix))
    else:
        out.append(verdict("broker.publish", "agent_ok", f"the agent published {published} records with no refusal"))
    return out


# ----- serial -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SerialFacts:
    """One serial pipeline's port, as the probe found it."""

    stream: str
    key: str  # pipeline[i].source.port
    port: str
    baudrate: int
    sensor_id: int
    timeout_s: float
    exists: bool
    open_error: tuple[str, str] | None = None  # (permission|locked|error, detail)
    hello_sensors: tuple[int, ...] | None = None  # sensor ids of the HELLO received, None: no HELLO
    fw_version: str = ""
    bytes_seen: int = 0
    frame_errors: int = 0
    uid: int = 0


def judge_serial(f: SerialFacts, agent: Mapping[str, Any] | None) -> CheckResult:
    """``agent``: the running agent's telemetry for this stream when it holds the port, else None."""
    key_baud = f.key.rsplit(".", 1)[0] + ".baudrate"
    facts: dict[str, Any] = {"port": f.port, "key": f.key, "key_baud": key_baud, "baudrate": f.baudrate,
                             "timeout": f"{f.timeout_s:g}", "uid": f.uid}
    if not f.exists:
        return verdict("serial", "missing", f"{f.port}: no such device", suffix=f.stream, **facts)
    if f.open_error is not None:
        kind, detail = f.open_error
        if kind == "permission":
            return verdict("serial", "permission", f"{f.port}: {detail}", suffix=f.stream, **facts)
        if kind == "locked" and agent is not None:
            results = int(agent.get("results", 0))
            if results > 0:
                return verdict("serial", "agent_has_port", f"{f.port} is held by the running agent: {results} "
                                                           f"results, {agent.get('frame_errors', 0)} frame errors",
                               suffix=f.stream)
            return verdict("serial", "agent_silent", f"{f.port} is held by the running agent, 0 results",
                           suffix=f.stream, **facts)
        return verdict("serial", "open_failed", f"{f.port}: {detail}", suffix=f.stream, problem=detail, **facts)
    if f.hello_sensors is None:
        garbage = (f" ({f.bytes_seen} bytes arrived, {f.frame_errors} corrupt frames: a wrong baud rate?)"
                   if f.bytes_seen else " (nothing arrived)")
        return verdict("serial", "no_hello", f"{f.port}: no HELLO in {f.timeout_s:g}s{garbage}", suffix=f.stream,
                       garbage=garbage, **facts)
    if f.sensor_id not in f.hello_sensors:
        return verdict("serial", "no_sensor", f"{f.port}: HELLO announces sensors {list(f.hello_sensors)}, the "
                                              f"config reads sensor {f.sensor_id}", suffix=f.stream,
                       sensors=list(f.hello_sensors), sensor_id=f.sensor_id,
                       key_sensor=f.key.rsplit(".", 1)[0] + ".sensor_id")
    return verdict("serial", "ok", f"{f.port}: HELLO from firmware {f.fw_version}, sensors {list(f.hello_sensors)}",
                   suffix=f.stream)


# ----- model --------------------------------------------------------------------------------------------

def judge_model(stream: str, key: str, path: str, meta_path: str, *, exists: bool, meta_error: str | None,
                want: str | None, got: str | None) -> CheckResult:
    facts = {"path": path, "meta": meta_path, "key": key}
    if not exists:
        return verdict("model", "missing", f"{path} does not exist", suffix=stream, **facts)
    if meta_error is not None:
        return verdict("model", "metadata", meta_error, suffix=stream, problem=meta_error, **facts)
    if want is None:
        return verdict("model", "no_digest", f"{meta_path} has no sha256; {path} is sha256 {(got or '')[:16]}",
                       suffix=stream, **facts)
    if got != want:
        return verdict("model", "digest", f"{path}: sha256 {(got or '')[:16]}…, {meta_path} says {want[:16]}…",
                       suffix=stream, got=(got or "")[:16], want=want[:16], **facts)
    return verdict("model", "ok", f"{path}: sha256 {want[:16]}… as {meta_path} says", suffix=stream)


# ----- outbox disk and wear -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DiskFacts:
    directory: str
    exists: bool
    free_bytes: int = 0
    outbox_file_bytes: int = 0  # database + WAL + shm now
    max_bytes: int = 0  # [outbox] max_bytes
    write_error: tuple[str, str] | None = None  # (full|denied|error, detail) of a real write probe
    uid: int = 0


def judge_disk(f: DiskFacts) -> CheckResult:
    facts: dict[str, Any] = {"dir": f.directory, "uid": f.uid, "free": human_bytes(f.free_bytes),
                             "max": human_bytes(f.max_bytes)}
    if not f.exists:
        return verdict("outbox.disk", "missing_dir", f"{f.directory} does not exist", **facts)
    if f.write_error is not None:
        kind, detail = f.write_error
        if kind == "full":
            return verdict("outbox.disk", "full", f"{f.directory}: {detail} ({human_bytes(f.free_bytes)} free)",
                           **facts)
        return verdict("outbox.disk", "not_writable", f"{f.directory}: {detail}", problem=detail, **facts)
    if f.free_bytes < MIN_FREE_BYTES:
        return verdict("outbox.disk", "full", f"{f.directory}: {human_bytes(f.free_bytes)} free, below the "
                                              f"{human_bytes(MIN_FREE_BYTES)} a commit may need", **facts)
    growth = max(0, f.max_bytes - f.outbox_file_bytes) + WAL_HEADROOM_BYTES
    if f.free_bytes < growth:
        suggest = max(64 * 1024, f.outbox_file_bytes + f.free_bytes - WAL_HEADROOM_BYTES - MIN_FREE_BYTES)
        return verdict("outbox.disk", "low", f"{f.directory}: {human_bytes(f.free_bytes)} free, the outbox may "
                                             f"still grow by {human_bytes(growth)}", suggest=str(suggest), **facts)
    return verdict("outbox.disk", "ok", f"{f.directory}: {human_bytes(f.free_bytes)} free for an outbox of at most "
                                        f"{human_bytes(f.max_bytes)}")


def judge_wear(rate_bytes_per_day: float | None, source: str, budget_bytes_per_day: int, *,
               own: bool = True) -> CheckResult:
    """``source`` names what was measured: the running agent's own writes (``own``), or everything written to
    the outbox's block device."""
    if rate_bytes_per_day is None:
        return verdict("outbox.wear", "unknown", f"no write figures: {source}")
    facts = {"rate": human_bytes(rate_bytes_per_day), "budget": human_bytes(budget_bytes_per_day), "source": source}
    share = 100.0 * rate_bytes_per_day / budget_bytes_per_day
    if rate_bytes_per_day > budget_bytes_per_day:
        code = "over_budget" if own else "device_over_budget"
        return verdict("outbox.wear", code, f"{source}: {human_bytes(rate_bytes_per_day)}/day, {share:.0f}% of the "
                                            "budget", **facts)
    return verdict("outbox.wear", "ok", f"{source}: {human_bytes(rate_bytes_per_day)}/day, {share:.1f}% of the "
                                        f"{human_bytes(budget_bytes_per_day)}/day budget")


# ----- systemd and the agent itself ---------------------------------------------------------------------

def judge_systemd(unit: str, props: Mapping[str, str] | None, why_none: str = "") -> CheckResult:
    """``props``: ``systemctl show`` properties (LoadState, ActiveState, SubState, Result, NRestarts,
    WatchdogUSec), or None without systemd."""
    if props is None:
        return verdict("systemd", "no_systemd", why_none or "not running under systemd")
    facts = {"unit": unit, "result": props.get("Result", "?"), "state": props.get("ActiveState", "?"),
             "restarts": props.get("NRestarts", "0")}
    load, active, sub = props.get("LoadState", ""), props.get("ActiveState", ""), props.get("SubState", "")
    if load == "not-found":
        return verdict("systemd", "not_found", f"{unit}: not installed", **facts)
    if active == "failed":
        return verdict("systemd", "failed", f"{unit}: failed ({props.get('Result', '?')})", **facts)
    if active == "activating" and sub == "auto-restart":
        return verdict("systemd", "restarting", f"{unit}: in a restart loop ({facts['restarts']} restarts)", **facts)
    if active != "active":
        return verdict("systemd", "inactive", f"{unit}: {active} ({sub})", **facts)
    if _int(props.get("NRestarts", "0")) > 0:
        return verdict("systemd", "restarting", f"{unit}: active, {facts['restarts']} restarts so far", **facts)
    wd = _usec(props.get("WatchdogUSec", "0"))
    if not wd:
        return verdict("systemd", "no_watchdog", f"{unit}: active ({sub}), no watchdog", **facts)
    return verdict("systemd", "ok", f"{unit}: active ({sub}), watchdog {wd / 1e6:g}s")


def _int(v: str) -> int:
    try:
        return int(v)
    except ValueError:
        return 0


def _usec(v: str) -> int:
    """``WatchdogUSec`` as systemd prints it: ``30s``, ``1min 30s``, ``500ms``, ``0`` or a plain number."""
    v = v.strip()
    if not v or v in ("0", "infinity"):
        return 0
    if v.isdigit():
        return int(v)
    units = {"us": 1, "ms": 1000, "s": 1_000_000, "min": 60_000_000, "h": 3_600_000_000}
    total = 0
    for part in v.split():
        num = "".join(ch for ch in part if ch.isdigit() or ch == ".")
        unit = part[len(num):]
        if not num or unit not in units:
            return 0
        total += int(float(num) * units[unit])
    return total


def judge_agent(doc: Mapping[str, Any] | None, problem: str, unit: str) -> CheckResult:
    """``doc``: the status document (``edge-agent status --json``), or None with ``problem`` saying why."""
    if doc is None or doc.get("stale"):
        why = problem or (f"status file {doc.get('age_s')} s old, pid {doc.get('pid')} "
                          f"{'alive' if doc.get('pid_alive') else 'gone'}" if doc else "no status")
        return verdict("agent", "not_running", why, problem=why, unit=unit)
    if not doc.get("healthy"):
        reasons = "; ".join(doc.get("reasons", [])) or "unhealthy"
        return verdict("agent", "unhealthy", f"pid {doc.get('pid')}: {reasons}", reasons=reasons, unit=unit)
    if doc.get("degraded"):
        reasons = "; ".join(doc.get("degraded", []))
        return verdict("agent", "degraded", f"pid {doc.get('pid')}: {reasons}", reasons=reasons, unit=unit)
    tel = doc.get("telemetry", {})
    ob = tel.get("outbox", {})
    return verdict("agent", "ok", f"pid {doc.get('pid')} healthy, {ob.get('committed', 0)} committed, outbox "
                                  f"{ob.get('depth', 0)} rows, mqtt {tel.get('mqtt', {}).get('state', '?')}")

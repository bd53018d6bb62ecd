"""Every check ``edge-agent doctor`` runs, each outcome's code and the one-line fix a technician follows.

One table, so the code, the output and docs/doctor.md cannot disagree (a test compares the docs with it).
A check ends in one of four states: ``pass``; ``warn`` (delivery works today but will not for long, or
cannot be verified); ``fail`` (this stops the device from delivering); ``skip`` (does not apply here, or a
check it depends on failed). Fix templates are ``str.format`` strings over the facts the verdict names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CHECKS", "SPECS", "STATUSES", "CheckResult", "CheckSpec", "Status", "verdict"]

Status = Literal["pass", "warn", "fail", "skip"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail", "skip")


@dataclass(frozen=True)
class CheckSpec:
    """A check: its id, what it looks at, and for each outcome code (status, fix template)."""

    id: str
    title: str
    outcomes: dict[str, tuple[Status, str]]


@dataclass(frozen=True)
class CheckResult:
    """One line of the report. ``id`` may carry a suffix (``model.vibration``) for per-pipeline checks."""

    id: str
    title: str
    status: Status
    code: str
    detail: str
    fix: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    def doc(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status, "code": self.code,
                "detail": self.detail, "fix": self.fix}


_SYSTEMCTL = "`journalctl -u {unit} -n 50` says why"

CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("config", "config file valid", {
        "ok": ("pass", ""),
        "unreadable": ("fail", "create or repair {file} (see examples/agent.toml)"),
        "invalid": ("fail", "edit {key} in {file}; `edge-agent check-config {file}` lists every problem"),
        "environment": ("fail", "make {key} in {file} point at a file that exists and the agent can read"),
    }),
    CheckSpec("key", "device key signs and verifies", {
        "ok": ("pass", ""),
        "missing": ("fail", "run first-boot provisioning (`edge-provision device init`) or fix key_uri"),
        "permissions": ("fail", "`chown edge-agent: {path} && chmod 600 {path}` (the agent refuses a key others "
                                "can read)"),
        "unusable": ("fail", "check key_uri (token label, object, PIN source, module path) with "
                             "`edge-provision device status`"),
        "bad_signature": ("fail", "the key store returns signatures that do not verify: replace the key "
                                  "(`edge-provision device rotate`, `ca sign`, `device install-cert`)"),
    }),
    CheckSpec("certificate", "certificate chain, expiry and revocation", {
        "ok": ("pass", ""),
        "none": ("skip", ""),
        "unreadable": ("fail", "install the device certificate chain (PEM, leaf first) at {path} "
                               "(`edge-provision device install-cert`)"),
        "key_mismatch": ("fail", "{path} was issued for another key: install this key's certificate "
                                 "(`edge-provision device install-cert`), or point key_uri at its key"),
        "untrusted": ("fail", "the certificate does not chain to the fleet CA in {ca}: have this device's CSR "
                              "signed by that CA (`edge-provision ca sign`) or set receipts.ca_file to the fleet CA"),
        "expired": ("fail", "the certificate expired on {not_after}: renew it (`edge-provision device rotate`, "
                            "then `ca sign` and `device install-cert`)"),
        "not_yet_valid": ("fail", "the certificate is valid only from {not_before}: set the clock "
                                  "(`timedatectl set-ntp true`) or wait"),
        "revoked": ("fail", "re-enrol the device with a new key and certificate "
                            "(`edge-provision device rotate`, `ca sign`, `device install-cert`): a revoked device "
                            "cannot connect"),
        "stale_crl": ("fail", "the CRL {crl} expired on {next_update}: install the fleet's current CRL "
                              "(`edge-provision ca crl` on the CA host); receipts cannot be verified until then"),
        "bad_crl": ("fail", "install the fleet's CRL at {crl}, or remove receipts.crl_file"),
        "no_ca": ("warn", "set receipts.ca_file (or mqtt.ca_file) to the fleet CA so the chain (and receipts) can "
                          "be checked"),
        "expires_soon": ("warn", "the certificate expires on {not_after} ({days} days): renew it now "
                                 "(`edge-provision device rotate`, `ca sign`, `device install-cert`)"),
    }),
    CheckSpec("device_id", "device id is the certificate CN", {
        "ok": ("pass", ""),
        "none": ("skip", ""),
        "mismatch": ("fail", "the config says {device_id} but {path} is for {cn}: the broker takes the id from the "
                             "CN, so every publish is refused; fix device_id / device_id_file or install this "
                             "device's certificate"),
        "bad_id": ("fail", "{path} is not a device certificate of this fleet: have it re-issued with "
                           "`edge-provision ca sign`"),
    }),
    CheckSpec("clock", "system clock synchronised", {
        "ok": ("pass", ""),
        "unsynced": ("warn", "enable time sync (`timedatectl set-ntp true`, or chrony); records are marked "
                             "'clock unsynced' and certificate times cannot be trusted"),
        "unknown": ("warn", "the kernel did not say whether the clock is synchronised: check `timedatectl`"),
        "implausible": ("fail", "the clock says {now}, before this agent was released: set it "
                                "(`timedatectl set-ntp true` or `date -s`); TLS refuses every certificate until then"),
    }),
    CheckSpec("broker.dns", "broker host name resolves", {
        "ok": ("pass", ""),
        "agent_connected": ("pass", ""),
        "failed": ("fail", "check the host in mqtt.url and DNS (`getent hosts {host}`, /etc/resolv.conf)"),
    }),
    CheckSpec("broker.tcp", "broker port answers", {
        "ok": ("pass", ""),
        "agent_connected": ("pass", ""),
        "refused": ("fail", "nothing listens on {host}:{port}: start the broker (`systemctl status mosquitto`) or "
                            "fix the port in mqtt.url"),
        "timeout": ("fail", "{host}:{port} does not answer within {timeout}s: a firewall, a wrong address or the "
                            "network is down (`ping {host}`)"),
        "error": ("fail", "check the network and the port in mqtt.url"),
    }),
    CheckSpec("broker.tls", "TLS handshake with the device certificate", {
        "ok": ("pass", ""),
        "agent_connected": ("pass", ""),
        "plain": ("skip", ""),
        "verify": ("fail", "set mqtt.ca_file (now {ca}) to the CA that signed the broker (broker-config's "
                           "ca.pem), and use the host name in its certificate in mqtt.url"),
        "alert": ("fail", "the broker refused the device certificate: it is revoked, expired or from another CA "
                          "(see the certificate check, and the broker's cafile/crlfile)"),
        "client_cert": ("fail", "check mqtt.cert_file and mqtt.key_file (PEM, a matching pair, readable "
                                "by the agent)"),
        "error": ("fail", "check that {host}:{port} is a TLS listener (mqtts://) and read the broker log"),
    }),
    CheckSpec("broker.connect", "MQTT session accepted", {
        "ok": ("pass", ""),
        "agent_connected": ("pass", ""),
        "refused": ("fail", "the broker refused the session: {reason} ({code_hex}); {hint}"),
        "closed": ("fail", "the broker closed the connection before CONNACK: check the broker log for {client_id}"),
        "timeout": ("fail", "no CONNACK within {timeout}s: is {host}:{port} an MQTT listener?"),
    }),
    CheckSpec("broker.publish", "may publish its own topics", {
        "ok": ("pass", ""),
        "agent_ok": ("pass", ""),
        "denied": ("fail", "the broker ACL does not let {username} write {topic}: regenerate it with `edge-provision "
                           "broker-config` (it grants `pattern write {prefix}/%u/...`) and SIGHUP mosquitto; the "
                           "username is the certificate CN"),
        "agent_denied": ("fail", "the broker refuses the agent's publishes ({reasons}): fix the ACL for {username} "
                                 "under {prefix}/ (`edge-provision broker-config`), then SIGHUP mosquitto"),
        "rejected": ("fail", "the broker refused the publish: {reason} ({code_hex}); check topic_prefix and the "
                             "broker's limits"),
        "timeout": ("fail", "no PUBACK within {timeout}s: check the broker log"),
        "disconnected": ("fail", "the broker closed the session on publish (an MQTT 3.1.1 ACL refusal does this): "
                                 "fix the ACL for {username} under {prefix}/"),
        "unverifiable": ("warn", "MQTT 3.1.1 acknowledges refused publishes as success: set mqtt.protocol = \"5\" "
                                 "to have refusals reported"),
    }),
    CheckSpec("serial", "serial port present and MCU says HELLO", {
        "ok": ("pass", ""),
        "agent_has_port": ("pass", ""),
        "none": ("skip", ""),
        "missing": ("fail", "{port} does not exist: check the cable and `ls -l /dev/serial/by-id/`; "
                            "{key} must name the port"),
        "permission": ("fail", "uid {uid} may not open {port}: add the service user to the port's group "
                               "(`usermod -aG dialout edge-agent`)"),
        "open_failed": ("fail", "is another program using {port} (`fuser -v {port}`)?"),
        "no_hello": ("fail", "no HELLO within {timeout}s at {baudrate} baud{garbage}: check {key_baud}, the "
                             "TX/RX wiring and that the firmware speaks docs/serial-protocol.md"),
        "no_sensor": ("fail", "the MCU announces sensors {sensors}, not {sensor_id}: set {key_sensor} to one of them "
                              "or flash the firmware that has it"),
        "agent_silent": ("fail", "the running agent has the port open but no result came from it: check the MCU "
                                 "and {key_baud}"),
    }),
    CheckSpec("model", "model file is the one its metadata describes", {
        "ok": ("pass", ""),
        "missing": ("fail", "install the model at {path} (or fix {key})"),
        "metadata": ("fail", "fix or reinstall {meta} (it ships with the model)"),
        "digest": ("fail", "{path} is not the model {meta} describes (sha256 {got} != {want}): install both files "
                           "from the same release"),
        "no_digest": ("warn", "add \"sha256\" to {meta} (the training tool writes it) so a wrong model file is "
                              "caught before it runs"),
    }),
    CheckSpec("outbox.disk", "outbox disk space", {
        "ok": ("pass", ""),
        "missing_dir": ("fail", "create {dir} owned by the service user (`install -d -o edge-agent {dir}`)"),
        "not_writable": ("fail", "`chown edge-agent: {dir}` (uid {uid} cannot write there), or remount "
                                 "the file system read-write"),
        "full": ("fail", "the file system of {dir} is full ({free} free): free space, or move outbox.path; the "
                         "agent cannot commit a record until then"),
        "low": ("warn", "the outbox may grow to {max} but only {free} are free: lower outbox.max_bytes to "
                        "{suggest} or free space, so it evicts before the disk fills"),
    }),
    CheckSpec("outbox.wear", "storage wear budget", {
        "ok": ("pass", ""),
        "unknown": ("skip", ""),
        "over_budget": ("warn", "the agent writes {rate}/day, over the budget of {budget}/day: raise "
                                "outbox.commit_linger_s (fewer, larger commits), keep [status] path on tmpfs, or use "
                                "storage rated for more (doctor.wear_budget_bytes_per_day)"),
        "device_over_budget": ("warn", "this host writes {rate}/day to that disk, over the budget of {budget}/day: "
                                       "find the writers (`iotop -ao`), put logs on tmpfs (journald "
                                       "Storage=volatile), or use storage rated for more "
                                       "(doctor.wear_budget_bytes_per_day)"),
    }),
    CheckSpec("systemd", "systemd unit and watchdog", {
        "ok": ("pass", ""),
        "no_systemd": ("skip", ""),
        "not_found": ("fail", "install and enable the unit: `systemctl enable --now {unit}` (docs/install.md)"),
        "failed": ("fail", "{unit} failed ({result}): " + _SYSTEMCTL + ", then `systemctl restart {unit}`"),
        "inactive": ("fail", "{unit} is {state}: `systemctl enable --now {unit}`"),
        "restarting": ("warn", "{unit} restarted {restarts} times: " + _SYSTEMCTL),
        "no_watchdog": ("warn", "{unit} has no WatchdogSec=: a hung agent is never restarted; use the packaged "
                                "unit (systemd/edge-agent.service)"),
    }),
    CheckSpec("agent", "agent running and healthy", {
        "ok": ("pass", ""),
        "not_running": ("warn", "start it (`systemctl start {unit}`); the checks above are its preconditions"),
        "unhealthy": ("fail", "`edge-agent status` and `journalctl -u {unit}` show what stalled"),
        "degraded": ("warn", "`edge-agent status` shows since when; the fix follows from the reason"),
    }),
)

SPECS: dict[str, CheckSpec] = {c.id: c for c in CHECKS}


def verdict(check: str, code: str, detail: str, *, suffix: str = "", **facts: Any) -> CheckResult:
    """The result of ``check`` ending in ``code``, with its fix filled in from ``facts`` (pure).

    A fact the template names but the caller did not pass raises ``KeyError``: the verdict tests run every
    code, so a fix line can never print a placeholder.
    """
    spec = SPECS[check]
    status, fix = spec.outcomes[code]
    return CheckResult(id=f"{check}.{suffix}" if suffix else check, title=spec.title, status=status, code=code,
                       detail=detail, fix=fix.format_map({**facts, "detail": detail}) if fix else "", facts=facts)

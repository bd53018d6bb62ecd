"""Runs every check in order and collects the report (``edge-agent doctor``).

Order follows what a device needs to deliver: a config, a key, a certificate for that key and this device,
a plausible clock, the broker (name, port, TLS, session, publish permission), its inputs (serial MCU,
model), room in the outbox, the service manager, and the running agent. A check that needs something an
earlier check found broken is reported as skipped, never as a second failure of the same cause.

When the agent is running and connected, the broker is judged from the agent's own session (its status
file) instead of a probe: a broker that forces the client id to the certificate CN would otherwise hand
the agent's session to the probe and back, and the fleet would see the device drop out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from agent.doctor.catalog import CHECKS, CheckResult, verdict
from agent.doctor.verdicts import (
    judge_agent,
    judge_broker,
    judge_broker_from_agent,
    judge_certificate,
    judge_clock,
    judge_device_id,
    judge_disk,
    judge_serial,
    judge_systemd,
    judge_wear,
    skipped,
)
from agent.settings import AgentConfig, SerialSourceConfig

__all__ = ["Report", "run_doctor"]

log = logging.getLogger(__name__)

REPORT_FORMAT = 1
# Config keys whose files a later check looks at itself (with a sharper verdict than "does not exist").
_COVERED = re.compile(r"^(key_uri|certificate|outbox\.path|mqtt\.(ca_file|cert_file|key_file)"
                      r"|receipts\.(ca_file|crl_file)|pipeline\[\d+\]\.(model|metadata))$")


@dataclass
class Report:
    config: str
    device_id: str | None
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return not any(r.status == "fail" for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "warn": 0, "fail": 0, "skip": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def doc(self) -> dict[str, Any]:
        return {"format": REPORT_FORMAT, "config": self.config, "device_id": self.device_id, "ok": self.ok,
                "counts": self.counts(), "checks": [r.doc() for r in self.results]}


def _load(path: str) -> tuple[AgentConfig | None, CheckResult]:
    from agent.config import check_environment, load_config  # noqa: PLC0415
    from agent.errors import ConfigError  # noqa: PLC0415

    try:
        cfg = load_config(path, check_files=False)
    except ConfigError as e:
        key, msg = e.problems[0]
        more = f" (+{len(e.problems) - 1} more)" if len(e.problems) > 1 else ""
        code = "unreadable" if key in ("(file)", "(syntax)") else "invalid"
        return None, verdict("config", code, f"{path}: {key}: {msg}{more}", file=path, key=key, problem=msg)
    note = ""
    try:
        check_environment(cfg)
    except ConfigError as e:
        own = [(k, m) for k, m in e.problems if not _COVERED.match(k)]
        if own:
            key, msg = own[0]
            more = f" (+{len(own) - 1} more)" if len(own) > 1 else ""
            return cfg, verdict("config", "environment", f"{path}: {key}: {msg}{more}", file=path, key=key,
                                problem=msg)
        note = f"; {len(e.problems)} file problem(s) reported by the checks below"
    return cfg, verdict("config", "ok", f"{path}: valid (device {cfg.device_id}, {len(cfg.pipelines)} pipeline(s), "
                                        f"delivery {cfg.outbox.delivery}, broker {cfg.mqtt.url}){note}")


def _guard(check: str, fn: Callable[[], list[CheckResult]]) -> list[CheckResult]:
    """A probe that raises must not hide the checks after it: its check fails with the exception."""
    try:
        return fn()
    except Exception as e:
        log.debug("probe %s raised", check, exc_info=True)
        return [CheckResult(id=check, title=check, status="fail", code="probe_error",
                            detail=f"the probe raised {type(e).__name__}: {e}",
                            fix="run `edge-agent doctor` again with --verbose and report the traceback as a bug")]


def run_doctor(config_path: str, *, timeout_s: float | None = None, unit: str | None = None,
               now: datetime | None = None) -> Report:
    """Every check against the config at ``config_path``."""
    from agent.clock import kernel_synced  # noqa: PLC0415
    from agent.doctor import probes  # noqa: PLC0415

    cfg, first = _load(config_path)
    results = [first]
    if cfg is None:
        results += [skipped(c.id, "the config cannot be loaded") for c in CHECKS if c.id != "config"]
        return Report(config_path, None, results)
    now = now or datetime.now(timezone.utc)
    timeout = timeout_s if timeout_s is not None else cfg.doctor.probe_timeout_s
    unit = unit or cfg.doctor.unit
    public: list[Any] = [None]

    def key() -> list[CheckResult]:
        r, public[0] = probes.probe_key(cfg)
        return [r]

    results += _guard("key", key)
    certs: list[Any] = []

    def certificate() -> list[CheckResult]:
        certs.extend(probes.probe_certificates(cfg, public[0], now))
        if not certs:
            return [judge_certificate(None, now)]
        out = []
        for c in certs:
            r = judge_certificate(c, now)
            if len(certs) > 1:
                suffix = "mqtt" if c.path == cfg.mqtt.cert_file else "birth"
                r = CheckResult(f"{r.id}.{suffix}", r.title, r.status, r.code, r.detail, r.fix, r.facts)
            out.append(r)
        return out

    results += _guard("certificate", certificate)
    results += _guard("device_id", lambda: [judge_device_id(cfg.device_id, certs)])
    results += _guard("clock", lambda: [judge_clock(kernel_synced(), now)])
    status_doc, status_problem = probes.read_status_doc(cfg)
    live = status_doc if status_doc is not None and not status_doc.get("stale") else None
    tel: dict[str, Any] = (live or {}).get("telemetry", {})

    def broker() -> list[CheckResult]:
        mq = tel.get("mqtt", {})
        if live is not None and mq.get("connected"):
            refused = int(mq.get("publish_rejected", 0))  # status carries the count (metrics: by reason)
            return judge_broker_from_agent(int(mq.get("published", 0)), {"refused PUBACK": refused} if refused else {},
                                           int(live.get("pid", 0)), probes.broker_username(cfg.mqtt, certs),
                                           cfg.mqtt.topic_prefix)
        return judge_broker(probes.probe_broker(cfg, certs, timeout))

    results += _guard("broker", broker)

    def serial() -> list[CheckResult]:
        out = []
        for i, pc in enumerate(cfg.pipelines):
            if isinstance(pc.source, SerialSourceConfig):
                agent_pipe = tel.get("pipelines", {}).get(pc.stream) if live is not None else None
                out.append(judge_serial(probes.probe_serial(i, pc, timeout), agent_pipe))
        return out or [verdict("serial", "none", "no pipeline reads a serial port")]

    results += _guard("serial", serial)
    results += _guard("model", lambda: [probes.probe_model(i, pc) for i, pc in enumerate(cfg.pipelines)])
    results += _guard("outbox.disk", lambda: [judge_disk(probes.probe_disk(cfg))])

    def wear() -> list[CheckResult]:
        rate, source, own = probes.probe_wear(cfg, live)
        return [judge_wear(rate, source, cfg.doctor.wear_budget_bytes_per_day, own=own)]

    results += _guard("outbox.wear", wear)

    def systemd() -> list[CheckResult]:
        props, why = probes.probe_systemd(unit, timeout)
        return [judge_systemd(unit, props, why)]

    results += _guard("systemd", systemd)
    results += _guard("agent", lambda: [judge_agent(status_doc, status_problem, unit)])
    return Report(config_path, cfg.device_id, results)

"""``edge-agent doctor``: the report as text for a technician or JSON for tools; exit 0 when nothing fails."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from agent.doctor.runner import Report, run_doctor

__all__ = ["add_doctor_parser", "cmd_doctor", "render_text"]

DEFAULT_CONFIG = "/etc/edge-agent/agent.toml"
EXIT_OK = 0
EXIT_FAILED = 1


def render_text(report: Report) -> str:
    """One line per check (status, id, what was found); a second line ``fix:`` under every warn and fail."""
    width = max([len(r.id) for r in report.results] + [10])
    lines = [f"edge-agent doctor: {report.config}" + (f" (device {report.device_id})" if report.device_id else "")]
    for r in report.results:
        lines.append(f"{r.status.upper():4}  {r.id.ljust(width)}  {r.detail}")
        if r.fix and r.status in ("warn", "fail"):
            lines.append(f"{'':4}  {'':{width}}  fix: {r.fix}")
    c = report.counts()
    lines.append(f"{c['pass']} pass, {c['warn']} warn, {c['fail']} fail, {c['skip']} skip")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run_doctor(args.config, timeout_s=args.timeout, unit=args.unit)
    text = json.dumps(report.doc(), indent=2) if args.json else render_text(report)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `edge-agent doctor | head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK if report.ok else EXIT_FAILED


def add_doctor_parser(sub: Any) -> None:
    """Register ``edge-agent doctor`` (called by ``agent.cli``)."""
    p = sub.add_parser("doctor", help="check everything this device needs to deliver, with a fix for each problem "
                                      "(exit 1 if a check fails)",
                       description="Checks config, key, certificate, clock, broker (DNS, TCP, TLS, MQTT session, "
                                   "publish permission), serial MCU, models, outbox disk and wear, systemd unit and "
                                   "the running agent. Each line is pass, warn, fail or skip; every warn and fail "
                                   "says how to fix it (docs/doctor.md).")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"agent TOML config (default {DEFAULT_CONFIG})")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="deadline of each network step and of the serial HELLO (default [doctor] probe_timeout_s)")
    p.add_argument("--unit", default=None, help="systemd unit to check (default [doctor] unit, edge-agent.service)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what the probes do (stderr)")
    p.set_defaults(func=cmd_doctor)

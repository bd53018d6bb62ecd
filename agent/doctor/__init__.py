"""``edge-agent doctor``: one check per thing that can stop a device from delivering, each with a fix.

``catalog`` lists every check, its outcome codes and fix lines (docs/doctor.md is tested against it);
``verdicts`` judges facts (pure); ``probes`` gathers them (I/O: files, key store, sockets, serial port,
systemctl); ``mqtt_wire`` encodes the few MQTT packets the broker probe sends; ``runner`` runs them in
order; ``cli`` prints the report.
"""

from __future__ import annotations

from agent.doctor.catalog import CHECKS, CheckResult, CheckSpec, Status
from agent.doctor.cli import add_doctor_parser
from agent.doctor.runner import Report, run_doctor

__all__ = ["CHECKS", "CheckResult", "CheckSpec", "Report", "Status", "add_doctor_parser", "run_doctor"]

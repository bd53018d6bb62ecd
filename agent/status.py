"""``edge-agent status``: the live snapshot of a running agent, for a technician at the device.

How the CLI reaches the running agent: the agent rewrites one JSON file (``[status] path``, default
``status.json`` next to the outbox; the packaged config puts it in ``/run/edge-agent/``, a tmpfs, so it
does not wear the SD card) every ``[status] interval_s`` seconds, atomically (temp file in the same
directory, then ``os.replace``), and ``status`` reads it. No socket, no port, nothing to authenticate:
whoever may read the agent's state directory may read its status, and a hung or dead agent shows up as a
stale file (its age and whether its PID is alive are part of the output). The file is not fsynced: it is
rewritten in seconds and a reader never sees a partial file, which is all that matters for it.

The document holds exactly the telemetry payload (``agent.telemetry``) plus the health verdict the
watchdog uses, so what the technician sees is what the fleet sees.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "StatusWriter", "add_status_parser", "read_status", "render_table", "write_status"]

FORMAT = 1
DEFAULT_CONFIG = "/etc/edge-agent/agent.toml"
EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_NO_STATUS = 2
STALE_AFTER_INTERVALS = 3


def write_status(path: str, doc: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``doc`` as JSON atomically (readers see the old or the new file, never half).

    Not fsynced: the file is rewritten every few seconds, normally on tmpfs (/run).
    """
    from provisioning import atomic_write  # noqa: PLC0415 - keeps `edge-agent status` light

    data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    atomic_write(path, data, mode=0o644, durable=False)


def read_status(path: str, now: float | None = None) -> dict[str, Any]:
    """The status document with ``age_s``, ``stale`` and ``pid_alive`` added. Raises OSError / ValueError."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: expected an edge-agent status document (format {FORMAT}), "
                         f"got {str(doc)[:60]!r}")
    now = time.time() if now is None else now
    age = max(0.0, now - float(doc.get("written_at", 0)))
    doc["age_s"] = round(age, 1)
    doc["pid_alive"] = _pid_alive(int(doc.get("pid", 0)))
    doc["stale"] = age > STALE_AFTER_INTERVALS * float(doc.get("interval_s", 5.0)) + 1 or not doc["pid_alive"]
    return doc


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by the service user
        return True
    return True


class StatusWriter:
    """Thread that rewrites the status file every ``interval_s`` from ``build()``."""

    def __init__(self, path: str, interval_s: float, build: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.interval_s = interval_s
        self.build = build
        self.writes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def write_once(self) -> bool:
        try:
            doc = self.build()
            write_status(self.path, doc)
        except OSError as e:
            self.failures += 1
            if self.failures in (1, 10) or self.failures % 100 == 0:
                log.warning("cannot write status file %s (%d failures): %s", self.path, self.failures, e)
            return False
        except Exception:
            self.failures += 1
            log.exception("building the status document failed")
            return False
        if self.failures and self.writes == 0:
            log.info("status file %s written", self.path)
        self.writes += 1
        return True

    def _run(self) -> None:
        while True:
            self.write_once()
            if self._stop.wait(self.interval_s):
                return


# ----- the CLI ------------------------------------------------------------------------------------------

def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict) and value:
        for k in value:
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), value[k])
    elif isinstance(value, dict):
        yield prefix, "(none)"
    elif isinstance(value, list):
        yield prefix, " ".join(str(v) for v in value)
    elif value is None:
        yield prefix, "-"
    elif isinstance(value, bool):
        yield prefix, "yes" if value else "no"
    elif isinstance(value, int) and ("bytes" in prefix.rsplit(".", 1)[-1]) and value >= 0:
        yield prefix, f"{value} ({_human(value)})"
    else:
        yield prefix, str(value)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def render_table(doc: Mapping[str, Any]) -> str:
    """Two columns, one line per field, grouped by section (what a technician reads on a console)."""
    verdict = "STALE (agent not running or hung)" if doc.get("stale") else (
        ("DEGRADED: " + "; ".join(doc.get("degraded", [])) if doc.get("degraded") else "healthy")
        if doc.get("healthy") else "UNHEALTHY: " + "; ".join(doc.get("reasons", [])))
    head = [
        ("device", str(doc.get("device_id"))),
        ("state", verdict),
        ("agent", f"{doc.get('agent')} pid {doc.get('pid')} ({'running' if doc.get('pid_alive') else 'not running'})"),
        ("updated", f"{doc.get('age_s')} s ago"),
    ]
    rows = head + _update_rows(doc.get("telemetry", {}).get("updates") or {}) + \
        list(_flatten("", doc.get("telemetry", {})))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _update_rows(u: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One line per model id (running, pending, refused, reverted) and the repository's condition."""
    if not u.get("enabled"):
        return []
    cond = str(u.get("state"))
    if u.get("cause"):
        cond += f" ({u['cause']}) since {u.get('since')}"
    rows = [("updates", f"{cond}; last check {u.get('last_check') or 'never'}")]
    for mid, m in (u.get("models") or {}).items():
        text = f"v{m.get('running')} running ({str(m.get('sha256'))[:12]}), floor {m.get('floor')}"
        p = m.get("pending")
        if p:
            text += f"; v{p.get('version')} pending ({p.get('state')})"
        for what in ("refused", "reverted"):
            for v, why in (m.get(what) or {}).items():
                text += f"; v{v} {what}: {why}"
        rows.append((f"model {mid}", text))
    return rows


def _status_path(args: argparse.Namespace) -> str:
    if args.file:
        return str(args.file)
    from agent.config import load_config  # noqa: PLC0415

    return load_config(args.config, check_files=False).status.path


def cmd_status(args: argparse.Namespace) -> int:
    from agent.errors import ConfigError  # noqa: PLC0415

    try:
        path = _status_path(args)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return EXIT_NO_STATUS
    try:
        doc = read_status(path)
    except FileNotFoundError:
        print(f"edge-agent status: no status file at {path}: is the agent running? "
              "(systemctl status edge-agent)", file=sys.stderr)
        return EXIT_NO_STATUS
    except PermissionError:
        print(f"edge-agent status: cannot read {path} as uid {os.geteuid()}: run as root or as the "
              "edge-agent user", file=sys.stderr)
        return EXIT_NO_STATUS
    except (OSError, ValueError) as e:
        print(f"edge-agent status: unreadable status file {path}: {e}", file=sys.stderr)
        return EXIT_NO_STATUS
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(render_table(doc))
    ok = doc.get("healthy") and not doc.get("stale") and not doc.get("degraded")
    return EXIT_OK if ok else EXIT_UNHEALTHY


def add_status_parser(sub: Any) -> None:
    """Register ``edge-agent status`` (called by ``agent.cli``)."""
    p = sub.add_parser("status", help="show the live status of the running agent "
                                      "(exit 1 if unhealthy, degraded or stale)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"agent TOML config (default {DEFAULT_CONFIG})")
    p.add_argument("--file", default=None, help="read this status file instead of the config's [status] path")
    p.add_argument("--json", action="store_true", help="print the whole document as JSON")
    p.set_defaults(func=cmd_status)

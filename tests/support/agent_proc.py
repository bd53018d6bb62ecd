"""Run the real agent (``python -m agent run``) as a subprocess with a config written for the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "vibration-int8.tflite"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def to_toml(cfg: dict[str, Any]) -> str:
    """Write the agent config shapes (top-level keys, tables, [[pipeline]] with [pipeline.source]) as TOML."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in cfg.items()
             if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict))]
    for k, v in cfg.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines.append(f"\n[[{k}]]")
                lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in item.items() if not isinstance(vv, dict)]
                for kk, vv in item.items():
                    if isinstance(vv, dict):
                        lines.append(f"[{k}.{kk}]")
                        lines += [f"{k2} = {_toml_value(v2)}" for k2, v2 in vv.items()]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def agent_config(workdir: Path, device_id: str, broker_url: str, *, source: dict[str, Any] | None = None,
                 delivery: str = "broker", key_path: Path | None = None, **overrides: Any) -> dict[str, Any]:
    """A complete agent config dict for tests; creates the device key (0600) when it does not exist."""
    from provisioning import create_file_key

    key = key_path or workdir / "keys" / "device.key"
    if not key.exists():
        create_file_key(key)
    cfg: dict[str, Any] = {
        "device_id": device_id,
        "key_uri": f"file:{key}",
        "log_level": "INFO",
        "pipeline": [{
            "stream": "vibration",
            "model": str(MODEL),
            "window": 128,
            "hop": 128,
            "source": source or {"type": "simulated", "fault": "cycle", "cycle_s": 30.0, "realtime": False},
        }],
        "outbox": {"path": str(workdir / "outbox.db"), "delivery": delivery, "resend_after_s": 5.0},
        "mqtt": {"url": broker_url, "keepalive_s": 10, "reconnect_min_s": 0.1, "reconnect_max_s": 1.0},
        "telemetry": {"interval_s": 60.0},
    }
    for key_name, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key_name), dict):
            cfg[key_name] = {**cfg[key_name], **value}
        else:
            cfg[key_name] = value
    return cfg


@dataclass
class AgentProcess:
    """A running ``edge-agent run``; stderr goes to a log file the test can read."""

    config_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.config_path.with_suffix(".log")

    def start(self) -> AgentProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        self._log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(self.config_path)],
                                     stdout=log, stderr=log, env=env, cwd=str(REPO))
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"agent did not stop within {timeout}s of SIGTERM\n{self.log()}") from None
        return int(self.proc.returncode)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(to_toml(cfg))
    return path

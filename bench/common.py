"""Shared pieces of the benchmarks: result rows, medians, a private broker, agent configs, child processes.

Every benchmark module exposes ``run(quick: bool) -> list[dict]``; a row is a dict with the keys ``id``,
``name``, ``value``, ``unit``, ``baseline``, ``ratio``, ``goal`` (see ``row``) and optionally ``passed``
(bool) and ``note``. Measurements that start the agent run it in a child process (``python -m agent run``
or ``run_child``), so one benchmark's threads, imports and heap never colour the next one's figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VIBRATION_MODEL = REPO / "models" / "vibration-int8.tflite"
MOBILENET_MODEL = REPO / "models" / "bench-mobilenetv2-int8.tflite"

if str(REPO) not in sys.path:  # `python bench/run_all.py` as well as `python -m bench`
    sys.path.insert(0, str(REPO))


def row(id: str, name: str, value: float | None, unit: str, *, baseline: str = "—", ratio: float | None = None,
        goal: str = "report", passed: bool | None = None, note: str = "") -> dict[str, Any]:
    """One line of the results table. ``passed`` None means "no goal" (report only)."""
    return {"id": id, "name": name, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio,
            "goal": goal, "passed": passed, "note": note}


def median(values: Iterable[float]) -> float:
    """Median of the runs (the figure every row quotes)."""
    vals = list(values)
    return float(statistics.median(vals)) if vals else float("nan")


def spread(values: Iterable[float]) -> str:
    """``min–max over n runs``, for the notes column."""
    vals = list(values)
    if not vals:
        return ""
    return f"{len(vals)} runs, {fmt(min(vals))}–{fmt(max(vals))}"


def fmt(x: float | None) -> str:
    """A figure for the table: thousands separators, 3 significant digits for small values."""
    if x is None:
        return "—"
    if x != x:  # NaN
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


@contextmanager
def broker() -> Iterator[Any]:
    """A private Mosquitto on a free loopback port (tests/support/mosquitto.py), cleaned up afterwards."""
    from tests.support.mosquitto import Mosquitto

    b = Mosquitto().start()
    try:
        yield b
    finally:
        b.cleanup()


def write_agent_config(workdir: Path, broker_url: str, *, source: dict[str, Any], delivery: str = "broker",
                       model: Path = VIBRATION_MODEL, window: int = 128, device_id: str = "bench-device",
                       **overrides: Any) -> Path:
    """A complete agent TOML in ``workdir`` (creates the device key); returns its path."""
    from tests.support.agent_proc import agent_config, write_config

    cfg = agent_config(workdir, device_id, broker_url, source=source, delivery=delivery, **overrides)
    cfg["pipeline"][0]["model"] = str(model)
    cfg["pipeline"][0]["window"] = window
    cfg["pipeline"][0]["hop"] = window
    return write_config(workdir / "agent.toml", cfg)


def run_child(module: str, name: str, args: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    """Run ``child_<name>(**args)`` of ``bench.<module>`` in a fresh interpreter; return its JSON result."""
    cmd = [sys.executable, "-m", f"bench.{module}", "--child", name, json.dumps(args)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, cwd=str(REPO), env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {module}.{name} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    last = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not last:
        raise RuntimeError(f"bench child {module}.{name} printed no result:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(last[-1])
    return result


def child_main(namespace: dict[str, Any]) -> None:
    """``python -m bench.<module> --child NAME JSON``: call ``child_NAME(**JSON)``, print its JSON."""
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        func = namespace[f"child_{sys.argv[2]}"]
        print(json.dumps(func(**json.loads(sys.argv[3]))), flush=True)
    else:
        quick = "--quick" in sys.argv
        from bench.run_all import print_table

        print_table(namespace["run"](quick))


def tempdir(prefix: str) -> Path:
    """A fresh directory under the system temp dir (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))


def proc_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), from /proc."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def standalone_main(run: Any, description: str) -> None:
    """``python -m bench.<module> [--quick] [--json]``: run one module and print the runner's table."""
    import argparse

    from bench.run_all import print_table

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="short loops")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    a = p.parse_args()
    rows = run(a.quick)
    if a.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print_table(rows)

"""B3, B4, B5, B7: what the agent costs the device when it is not racing: memory, idle CPU, start-up, disk.

B3 - RSS of ``python -m agent run`` (private Mosquitto, simulated source in real time at 50 records/s,
delivery ``broker``) sampled every second; the figure is the median RSS of the last 10 s, the growth the
slope of a least-squares line through the samples after the first third of the run, in MB per hour. The
full run uses a 120 s steady period (``--long``: 600 s, the issue's 10 minutes; ``--quick``: 20 s): a fit
over minutes cannot resolve 1 MB/h against allocator noise, so the long run is the one to quote for growth.
Baseline: a bare ``python -c`` that imports what the agent imports (no model loaded, no threads).

B4 - CPU of an agent with no sensor data: a replay source reading a FIFO whose writer is open but silent
(the pipeline thread blocks in ``read``), MQTT connected, telemetry and status timers running. CPU seconds
of the whole process over 60 s (quick 10 s) after a 3 s settle, as % of one core.

B5 - cold start: from ``Popen(python -m agent run)`` to the first signed record (the retained birth record)
arriving at a subscriber on the broker; the first result record is in the note. Warm page cache, a fresh
outbox, a new device id per run.

B7 - bytes the agent process causes to be written (``write_bytes`` of ``/proc/<pid>/io``) per record at
50 records/s, against the mean record size (MQTT payload bytes as received). Same runs as B3.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import REPO, broker, child_main, fmt, median, row, run_child, spread, tempdir, write_agent_config

RATE = 50.0  # records/s for B3 and B7 (simulated source: 6400 Hz, windows of 128)
B3_GOAL_MB = 70.0
B3_GOAL_GROWTH = 1.0
B4_GOAL = 0.5
B5_GOAL = 1.5
B7_GOAL = 3.0

AGENT_IMPORTS = ("import agent.cli, agent.config, agent.service, agent.sources.simulated, agent.sources.replay, "
                 "ai_edge_litert.interpreter, numpy, paho.mqtt.client, cryptography, cbor2, psutil, ssl, sqlite3")


class Subscriber:
    """A paho client on its own thread counting messages per topic suffix with arrival times."""

    def __init__(self, url_port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.first: dict[str, float] = {}
        self.count = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._sub = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-sub-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._sub.set()
        self.client.connect("127.0.0.1", url_port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        if not self._sub.wait(10):
            raise RuntimeError("subscriber: no SUBACK within 10 s")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        kind = msg.topic.split("/")[3] if msg.topic.count("/") >= 3 else msg.topic
        now = time.monotonic()
        with self._lock:
            self.first.setdefault(kind, now)
            if kind == "result":
                self.count += 1
                self.bytes += len(msg.payload)

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.count, self.bytes

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _realtime_source(rate: float) -> dict[str, Any]:
    return {"type": "simulated", "fault": "cycle", "cycle_s": 5.0, "realtime": True, "rate_hz": rate * 128,
            "block_samples": 128}


def _agent_proc(cfg_path: Path) -> Any:
    from tests.support.agent_proc import AgentProcess

    return AgentProcess(cfg_path).start()


def _io_write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/io has no write_bytes")


def _slope_per_hour(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over ts (seconds), per hour."""
    n = len(ts)
    if n < 3:
        return float("nan")
    mt, my = sum(ts) / n, sum(ys) / n
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / den * 3600 if den else float("nan")


# ----- B3 + B7: one steady run -------------------------------------------------------------------------------
def steady_run(seconds: float) -> dict[str, Any]:
    """Agent at RATE records/s for ``seconds``: RSS samples and disk bytes per record."""
    import psutil

    work = tempdir("steady")
    try:
        with broker() as b:
            dev = "bench-" + uuid.uuid4().hex[:8]
            cfg = write_agent_config(work, b.url, source=_realtime_source(RATE), device_id=dev,
                                     telemetry={"interval_s": 60.0})
            sub = Subscriber(b.port, f"edge/v1/{dev}/#")
            agent = _agent_proc(cfg)
            try:
                proc = psutil.Process(agent.proc.pid)
                deadline = time.monotonic() + 15
                while sub.snapshot()[0] < 10:
                    if time.monotonic() > deadline or not agent.alive():
                        raise RuntimeError(f"agent published nothing:\n{agent.log()[-2000:]}")
                    time.sleep(0.05)
                time.sleep(2.0)  # past start-up allocations
                n0, b0 = sub.snapshot()
                w0, t0 = _io_write_bytes(proc.pid), time.monotonic()
                ts, rss = [], []
                while (now := time.monotonic()) - t0 < seconds:
                    ts.append(now - t0)
                    rss.append(proc.memory_info().rss / 2**20)
                    time.sleep(1.0)
                n1, b1 = sub.snapshot()
                w1, t1 = _io_write_bytes(proc.pid), time.monotonic()
            finally:
                agent.terminate()
                agent.stop()
                sub.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    records = max(1, n1 - n0)
    tail = [r for t, r in zip(ts, rss, strict=True) if t >= ts[-1] - 10]
    fit_from = len(ts) // 3
    return {
        "rss_mb": median(tail), "growth_mb_h": _slope_per_hour(ts[fit_from:], rss[fit_from:]),
        "rate": records / (t1 - t0), "write_per_record": (w1 - w0) / records, "record_bytes": (b1 - b0) / records,
        "seconds": t1 - t0,
    }


def bare_rss_mb() -> float:
    """RSS of a bare interpreter after the agent's imports (the B3 baseline)."""
    code = AGENT_IMPORTS + "; import psutil as p; print(p.Process().memory_info().rss)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    return int(out.stdout.strip().splitlines()[-1]) / 2**20


def b3_b7(quick: bool, long: bool = False) -> list[dict[str, Any]]:
    seconds = 20.0 if quick else (600.0 if long else 120.0)
    runs = [steady_run(seconds) for _ in range(1 if (quick or long) else 2)]
    bare = median(bare_rss_mb() for _ in range(3))
    rss = median(r["rss_mb"] for r in runs)
    growth = median(r["growth_mb_h"] for r in runs)
    wpr = median(r["write_per_record"] for r in runs)
    size = median(r["record_bytes"] for r in runs)
    rate = median(r["rate"] for r in runs)
    steady = f"{seconds:.0f} s steady at {fmt(rate)} records/s"
    return [
        row("B3", "agent RSS under steady load", rss, "MB", baseline=f"bare python + imports {fmt(bare)} MB",
            ratio=rss / bare, goal=f"≤ {B3_GOAL_MB:.0f} MB", passed=rss <= B3_GOAL_MB, note=steady),
        row("B3g", "RSS growth (linear fit)", growth, "MB/h", goal=f"< {B3_GOAL_GROWTH:.0f} MB/h",
            passed=growth < B3_GOAL_GROWTH,
            note=steady + ("" if long else "; short fits are noisy, `--long` runs the 10 min version")),
        row("B7", "bytes written to disk per record", wpr, "B/record", baseline=f"record {fmt(size)} B",
            ratio=wpr / size if size else None, goal=f"≤ {B7_GOAL:.0f} × record", passed=wpr <= B7_GOAL * size,
            note=f"/proc/<pid>/io write_bytes; {steady}"),
    ]


# ----- B4 ----------------------------------------------------------------------------------------------------
def child_idle(settle: float, seconds: float) -> dict[str, Any]:
    """An agent whose only source is a silent FIFO; this process's CPU over ``seconds``."""
    from agent.config import load_config
    from agent.service import Agent
    from bench.common import proc_cpu_seconds

    logging.basicConfig(level=logging.WARNING)
    work = tempdir("idle")
    fifo = work / "sensor.csv"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer that never writes a sample
    os.write(fd, b"x,y,z\n")
    try:
        with broker() as b:
            cfg_path = write_agent_config(
                work, b.url, source={"type": "replay", "path": str(fifo), "rate_hz": 1000.0, "realtime": True})
            agent = Agent(load_config(str(cfg_path), check_files=False))
            agent.start()
            try:
                assert agent.link is not None
                deadline = time.monotonic() + 10
                while not agent.link.connected:
                    if time.monotonic() > deadline:
                        raise RuntimeError("agent did not connect within 10 s")
                    time.sleep(0.02)
                time.sleep(settle)
                c0, t0 = proc_cpu_seconds(), time.monotonic()
                time.sleep(seconds)
                c1, t1 = proc_cpu_seconds(), time.monotonic()
                results = sum(r.stats.results for r in agent.pipelines)
            finally:
                threading.Thread(target=agent.stop, daemon=True).start()  # the pipeline is blocked in read()
                time.sleep(0.5)
    finally:
        os.close(fd)
        shutil.rmtree(work, ignore_errors=True)
    return {"cpu_pct": (c1 - c0) / (t1 - t0) * 100, "results": results}


def b4(quick: bool) -> list[dict[str, Any]]:
    seconds = 10.0 if quick else 60.0
    res = run_child("bench_resources", "idle", {"settle": 3.0, "seconds": seconds})
    return [row("B4", "idle CPU, no sensor data", res["cpu_pct"], "% of a core", goal=f"≤ {B4_GOAL} %",
                passed=res["cpu_pct"] <= B4_GOAL, note=f"{seconds:.0f} s window; {res['results']} results (expect 0)")]


# ----- B5 ----------------------------------------------------------------------------------------------------
def cold_start(b: Any, work: Path) -> tuple[float, float]:
    """Seconds from Popen to the birth record and to the first result record at a subscriber."""
    dev = "bench-" + uuid.uuid4().hex[:8]
    run_dir = work / dev
    run_dir.mkdir()
    cfg = write_agent_config(run_dir, b.url, source=_realtime_source(RATE), device_id=dev)
    sub = Subscriber(b.port, f"edge/v1/{dev}/#")
    try:
        t0 = time.monotonic()
        agent = _agent_proc(cfg)
        try:
            deadline = t0 + 20
            while "result" not in sub.first or "status" not in sub.first:
                if time.monotonic() > deadline or not agent.alive():
                    raise RuntimeError(f"no records within 20 s:\n{agent.log()[-2000:]}")
                time.sleep(0.002)
        finally:
            agent.terminate()
            agent.stop()
    finally:
        sub.close()
    return sub.first["status"] - t0, sub.first["result"] - t0


def b5(quick: bool) -> list[dict[str, Any]]:
    work = tempdir("cold")
    try:
        with broker() as b:
            runs = [cold_start(b, work) for _ in range(3 if quick else 7)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    birth = [r[0] for r in runs]
    first = median(r[1] for r in runs)
    value = median(birth)
    return [row("B5", "cold start to first signed record published", value, "s", goal=f"≤ {B5_GOAL} s",
                passed=value <= B5_GOAL,
                note=f"birth record; {spread(birth)}; first result record {fmt(first)} s "
                     "(20 ms window + commit linger)")]


def run(quick: bool, long: bool = False) -> list[dict[str, Any]]:
    """B3, B4, B5 and B7 rows."""
    return b5(quick) + b4(quick) + b3_b7(quick, long)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--json":
        print(json.dumps(run("--quick" in sys.argv, "--long" in sys.argv)))
    else:
        child_main(globals())

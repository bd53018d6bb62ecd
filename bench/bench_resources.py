"""B3, B4, B5, B7: what the agent costs the device when it is not racing: memory, idle CPU, start-up, disk.

B3 - RSS (and PSS, USS from ``/proc/<pid>/smaps_rollup``) of ``python -m agent run`` (private Mosquitto,
delivery ``broker``, 50 records/s) sampled every second; the figure is the median of the last 10 s. The
device case: a ``serial`` source reading the firmware_bridge MCU simulator on a pty (6,400 Hz, 128-sample
frames). B3s is round 1's B3, the agent's own simulated source (its signal model imports ``numpy.random``).
The full run uses a 90 s steady period (``--long``: 600 s; ``--quick``: 20 s). B3g quotes the last recorded
soak (``python -m bench --soak 3600 --write``, bench/soak.py): fits over minutes measure warm-up.
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
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from bench.common import REPO, broker, child_main, fmt, median, row, run_child, spread, tempdir, write_agent_config

RATE = 50.0  # records/s for B3 and B7 (simulated source: 6400 Hz, windows of 128)
B3_GOAL_MB = 70.0
B3_GOAL_GROWTH = 1.0
B4_GOAL = 0.1
B5_GOAL = 1.5
B7_GOAL = 2.0

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
@contextmanager
def _mcu(work: Path, rate: float) -> Iterator[str]:
    """The firmware_bridge MCU simulator on a pty at ``rate`` Hz (128-sample frames); yields the port path."""
    link = work / "by-id" / "usb-Simulated_MCU_bench-if00"
    link.parent.mkdir()
    path_file = work / "sim.path"
    log = open(work / "sim.log", "wb")  # noqa: SIM115 - closed below
    block = os.environ.get("BENCH_MCU_BLOCK", "128")  # 64 makes the windower see jitter: see docs/benchmarks.md
    proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge.simulator", "--link", str(link), "--path-file",
                             str(path_file), "--rate", str(rate), "--block", block, "--fault", "imbalance",
                             "--seed", "5"],
                            stdout=subprocess.DEVNULL, stderr=log, cwd=str(REPO))
    try:
        deadline = time.monotonic() + 15
        while not path_file.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"MCU simulator did not start:\n{(work / 'sim.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield str(link)
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


def steady_run(seconds: float, source: str = "serial") -> dict[str, Any]:
    """Agent at RATE records/s for ``seconds``: RSS (and PSS, USS) samples and disk bytes per record.

    ``source="serial"``: the device case, samples from the MCU simulator over a pty (``[pipeline.source]
    type = "serial"``); ``"simulated"``: the agent's own signal model (round 1's B3; it imports
    ``numpy.random``, ≈ 6 MB of RSS a device never maps).
    """
    import psutil

    from bench.soak import smaps_rollup

    work = tempdir("steady")
    try:
        with broker() as b, (_mcu(work, RATE * 128) if source == "serial" else nullcontext("")) as port:
            dev = "bench-" + uuid.uuid4().hex[:8]
            src = ({"type": "serial", "port": port, "baudrate": 921600, "sensor_id": 0} if source == "serial"
                   else _realtime_source(RATE))
            cfg = write_agent_config(work, b.url, source=src, device_id=dev, telemetry={"interval_s": 60.0})
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
                ts, rss, pss, uss = [], [], [], []
                while (now := time.monotonic()) - t0 < seconds:
                    m = smaps_rollup(proc.pid)
                    ts.append(now - t0)
                    rss.append(m["rss"])
                    pss.append(m["pss"])
                    uss.append(m["uss"])
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
    tail = [i for i, t in enumerate(ts) if t >= ts[-1] - 10]
    fit_from = len(ts) // 3
    return {
        "rss_mb": median(rss[i] for i in tail), "pss_mb": median(pss[i] for i in tail),
        "uss_mb": median(uss[i] for i in tail), "growth_mb_h": _slope_per_hour(ts[fit_from:], rss[fit_from:]),
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
    seconds = 20.0 if quick else (600.0 if long else 90.0)
    serial = steady_run(seconds, "serial")
    simulated = steady_run(min(seconds, 20.0 if quick else 45.0), "simulated")
    bare = median(bare_rss_mb() for _ in range(3))
    rss, pss, uss = serial["rss_mb"], serial["pss_mb"], serial["uss_mb"]
    wpr, size = serial["write_per_record"], serial["record_bytes"]
    steady = f"{seconds:.0f} s steady at {fmt(serial['rate'])} records/s"
    rows = [
        row("B3", "agent RSS under steady load (serial source, the device case)", rss, "MB",
            baseline=f"bare python + imports {fmt(bare)} MB", ratio=rss / bare, goal=f"≤ {B3_GOAL_MB:.0f} MB",
            passed=rss <= B3_GOAL_MB,
            note=f"{steady}, MCU simulator on a pty; PSS {fmt(pss)} MB, USS {fmt(uss)} MB"),
        row("B3p", "agent PSS under steady load (serial source)", pss, "MB", goal=f"≤ {B3_GOAL_MB:.0f} MB",
            passed=pss <= B3_GOAL_MB, note="what memory pressure sees: shared library pages split among mappers"),
        row("B3s", "agent RSS, simulated source (round 1's B3)", simulated["rss_mb"], "MB",
            baseline=f"bare python + imports {fmt(bare)} MB", ratio=simulated["rss_mb"] / bare, goal="report",
            note=f"{simulated['seconds']:.0f} s; PSS {fmt(simulated['pss_mb'])} MB, USS {fmt(simulated['uss_mb'])} "
                 "MB; the signal model imports numpy.random, which a device never maps"),
    ]
    from bench import soak

    rec = soak.recorded()
    if rec is not None:
        rows.append(row("B3g", "RSS growth over the soak (linear fit, last 5/6)", rec["rss_mb_h"], "MB/h",
                        goal=f"< {B3_GOAL_GROWTH:.0f} MB/h", passed=rec["rss_mb_h"] < B3_GOAL_GROWTH,
                        note=f"`python -m bench --soak {rec['seconds']}` of {rec['when']} UTC (aggregator delivery, "
                             f"receipts): PSS {rec['pss_mb_h']:+.2f}, USS {rec['uss_mb_h']:+.2f} MB/h; RSS "
                             f"{fmt(rec['rss'])} MB"))
    else:
        rows.append(row("B3g", "RSS growth (linear fit, short run)", serial["growth_mb_h"], "MB/h",
                        goal=f"< {B3_GOAL_GROWTH:.0f} MB/h", passed=serial["growth_mb_h"] < B3_GOAL_GROWTH,
                        note=steady + "; no soak recorded: `python -m bench --soak 3600 --write` gives the figure"))
    rows.append(row("B7", "bytes written to disk per record", wpr, "B/record", baseline=f"record {fmt(size)} B",
                    ratio=wpr / size if size else None, goal=f"≤ {B7_GOAL:.0f} × record", passed=wpr <= B7_GOAL * size,
                    note=f"/proc/<pid>/io write_bytes; {steady}; commit linger 1 s"))
    return rows


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

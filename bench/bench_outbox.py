"""B6: how fast the outbox drains once the broker comes back after an outage.

``python -m agent run`` (simulated source in real time at 500 records/s, delivery ``broker``) publishes to a
private Mosquitto; the broker is stopped for 60 s (quick: 15 s) while the agent keeps committing, then
started again on the same port. The figure is the backlog (rows committed before the restart) divided by
the time from the first backlog row being deleted (first PUBACK after the reconnect, so the reconnect
back-off is not counted) to the last one being deleted, observed by polling the outbox file read-only.
New records keep arriving at 500/s during the drain, as on a real device.

Baseline: the raw SQLite read rate of the same rows on the same file during the outage: the publisher's
own query (``SELECT seq, topic, payload, retain ... WHERE seq > ? ORDER BY seq LIMIT 500``) in a loop.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import broker, child_main, fmt, median, row, spread, tempdir, write_agent_config

RATE = 500.0
B6_GOAL = 20000.0


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=5.0)


def raw_read_rate(path: Path) -> float:
    """Rows/s of the publisher's paging query over every row in the outbox."""
    db = _ro(path)
    try:
        n, cursor, t0 = 0, 0, time.perf_counter()
        while True:
            rows = db.execute("SELECT seq, topic, payload, retain FROM records WHERE seq > ? ORDER BY seq LIMIT 500",
                              (cursor,)).fetchall()
            if not rows:
                break
            n += len(rows)
            cursor = rows[-1][0]
        return n / (time.perf_counter() - t0) if n else float("nan")
    finally:
        db.close()


def drain_run(outage_s: float) -> dict[str, Any]:
    """One outage and drain; backlog, drain rate and the raw read rate of the backlog."""
    from tests.support.agent_proc import AgentProcess

    work = tempdir("drain")
    try:
        with broker() as b:
            dev = "bench-" + uuid.uuid4().hex[:8]
            cfg = write_agent_config(
                work, b.url, device_id=dev,
                source={"type": "simulated", "fault": "cycle", "cycle_s": 5.0, "realtime": True,
                        "rate_hz": RATE * 128, "block_samples": 128},
                mqtt={"url": b.url, "keepalive_s": 10, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5})
            db_path = work / "outbox.db"
            agent = AgentProcess(cfg).start()
            try:
                deadline = time.monotonic() + 20
                while not db_path.exists() or _last_seq(db_path) < 100:
                    if time.monotonic() > deadline or not agent.alive():
                        raise RuntimeError(f"agent did not start committing:\n{agent.log()[-2000:]}")
                    time.sleep(0.1)
                b.stop()
                time.sleep(outage_s)
                raw = raw_read_rate(db_path)
                backlog_last = _last_seq(db_path)
                backlog_first = _first_seq(db_path)
                if backlog_first is None:
                    raise RuntimeError("no backlog built up during the outage")
                b.start()
                watcher = _BacklogWatcher(b.port, f"edge/v1/{dev}/result/#", backlog_first, backlog_last)
                try:
                    if not watcher.done.wait(120):
                        raise RuntimeError(f"backlog did not drain:\n{agent.log()[-2000:]}")
                finally:
                    watcher.close()
            finally:
                agent.terminate()
                agent.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"backlog": backlog_last - backlog_first + 1, "rate": watcher.rate(), "raw": raw,
            "seen": watcher.count}


class _BacklogWatcher:
    """Subscribes right after the broker restarts; times the backlog's records as they arrive."""

    def __init__(self, port: int, topic: str, first: int, last: int) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.first, self.last = first, last
        self.count = 0
        self.t_first = self.t_last = 0.0
        self.done = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"bench-drain-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        from envelope import open_record

        seq = open_record(bytes(msg.payload)).seq
        if not self.first <= seq <= self.last:
            return
        now = time.monotonic()
        if not self.count:
            self.t_first = now
        self.count += 1
        self.t_last = now
        if seq == self.last:
            self.done.set()

    def rate(self) -> float:
        """Backlog records/s over the ones seen (a subscriber that joined late still measures the rate)."""
        return (self.count - 1) / (self.t_last - self.t_first) if self.count > 1 and self.t_last > self.t_first else 0.0

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _last_seq(path: Path) -> int:
    db = _ro(path)
    try:
        r = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return int(r[0]) if r else 0
    except sqlite3.OperationalError:  # schema not there yet
        return 0
    finally:
        db.close()


def _first_seq(path: Path) -> int | None:
    db = _ro(path)
    try:
        r = db.execute("SELECT MIN(seq) FROM records").fetchone()
        return int(r[0]) if r and r[0] is not None else None
    finally:
        db.close()


def run(quick: bool) -> list[dict[str, Any]]:
    """The B6 row."""
    outage = 15.0 if quick else 60.0
    runs = [drain_run(outage) for _ in range(1 if quick else 3)]
    rates = [r["rate"] for r in runs]
    value = median(rates)
    raw = median(r["raw"] for r in runs)
    backlog = median(r["backlog"] for r in runs)
    return [row("B6", f"outbox drain after a {outage:.0f} s outage", value, "records/s",
                baseline=f"raw SQLite read {fmt(raw)} rows/s", ratio=value / raw, goal=f"≥ {B6_GOAL:,.0f} records/s",
                passed=value >= B6_GOAL,
                note=f"backlog {fmt(backlog)} records, new ones still arriving at {RATE:.0f}/s; {spread(rates)}")]


if __name__ == "__main__":
    sys.setrecursionlimit(10000)
    child_main(globals())

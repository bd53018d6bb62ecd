"""Shared parts of the fault-injection suite: a fleet device, the aggregator as a real process, queries on
the aggregator's SQLite store and on the agent's outbox, and the figures each test prints.

Everything here is real: `edge-aggregator run` and `edge-agent run` subprocesses, Mosquitto, SQLite files
read through read-only connections while the writers run.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.agent_proc import REPO, AgentProcess, agent_config, write_config
from tests.support.pki import Fleet, make_fleet

AGGREGATOR = Path(sys.executable).parent / "edge-aggregator"
RATE_500_PER_S = {"type": "simulated", "realtime": True, "rate_hz": 64000.0, "block_samples": 128,
                  "fault": "cycle", "cycle_s": 30.0}  # window 128, hop 128: 500 results per second


def ro(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def outbox_rows(db: Path) -> set[int]:
    """Seqs still waiting in the agent's outbox."""
    if not db.exists():
        return set()
    conn = ro(db)
    try:
        return {int(r[0]) for r in conn.execute("SELECT seq FROM records")}
    except sqlite3.OperationalError:
        return set()
    finally:
        conn.close()


def outbox_meta(db: Path, key: str) -> int:
    """A counter of the agent's outbox (last_seq, acked_seq, epoch, evicted_records...)."""
    if not db.exists():
        return 0
    conn = ro(db)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@dataclass
class Device:
    """A device of a throwaway fleet: certified key (the aggregator trusts it through the registry)."""

    device_id: str
    fleet: Fleet
    workdir: Path

    @property
    def outbox(self) -> Path:
        return self.workdir / "outbox.db"

    def config(self, broker_url: str, **overrides: Any) -> Path:
        files = self.fleet.devices[self.device_id]
        base: dict[str, Any] = {"source": RATE_500_PER_S, "delivery": "aggregator", "key_path": files.key,
                                "certificate": str(files.cert),
                                "receipts": {"ca_file": str(self.fleet.ca_cert), "crl_file": str(self.fleet.crl)}}
        base.update(overrides)
        cfg = agent_config(self.workdir, self.device_id, broker_url, **base)
        return write_config(self.workdir / "agent.toml", cfg)

    def agent(self, conf: Path) -> AgentProcess:
        return AgentProcess(conf)


def make_device(tmp_path: Path, device_id: str) -> Device:
    fleet = make_fleet(tmp_path, devices=[device_id], aggregators=[f"agg-{device_id}"])
    workdir = tmp_path / "device"
    workdir.mkdir()
    return Device(device_id, fleet, workdir)


@dataclass
class AggregatorProcess:
    """`edge-aggregator run --config` on a config written for the test; SQLite store in ``workdir``."""

    workdir: Path
    broker_url: str
    fleet: Fleet
    client_id: str
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: Any = field(default=None, repr=False)

    @property
    def db(self) -> Path:
        return self.workdir / "agg.db"

    @property
    def log_path(self) -> Path:
        return self.workdir / "aggregator.log"

    def write_config(self) -> Path:
        conf = self.workdir / "aggregator.toml"
        conf.write_text(
            "[aggregator]\nack_interval_ms = 50\nlog_level = \"INFO\"\n"
            f"[mqtt]\nurl = \"{self.broker_url}\"\nclient_id = \"{self.client_id}\"\nkeepalive_s = 5\n"
            f"[store]\nurl = \"{self.db}\"\n"
            f"[trust]\nca_files = [\"{self.fleet.ca_cert}\"]\ncrl_files = [\"{self.fleet.crl}\"]\n"
            f"registry_files = [\"{self.fleet.registry}\"]\n"
            + ("[identity]\n" + "".join(f"{k} = \"{v}\"\n" for k, v in self.fleet.identity().items())
               if self.fleet.aggregators else ""))
        return conf

    def start(self) -> AggregatorProcess:
        conf = self.write_config()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(AGGREGATOR), "run", "--config", str(conf)], stdout=self._log,
                                     stderr=self._log, cwd=str(REPO), env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.starts += 1
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log:
            self._log.close()
            self._log = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    # ----- what the store holds --------------------------------------------------------------------------
    def contiguous(self, device_id: str) -> int:
        if not self.db.exists():
            return 0
        conn = ro(self.db)
        try:
            row = conn.execute("SELECT contiguous_seq FROM devices WHERE device_id = ?", (device_id,)).fetchone()
            return int(row[0]) if row else 0
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    def stored(self, device_id: str) -> StoreFigures:
        conn = ro(self.db)
        try:
            seqs = [int(r[0]) for r in conn.execute(
                "SELECT seq FROM records WHERE device_id = ? ORDER BY rowid", (device_id,))]
            gaps = [(int(a), int(b), str(r)) for a, b, r in conn.execute(
                "SELECT first_seq, last_seq, reason FROM gaps WHERE device_id = ? ORDER BY first_seq", (device_id,))]
            dev = conn.execute("SELECT duplicates, reorders FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        finally:
            conn.close()
        return StoreFigures(seqs, gaps, int(dev[0]) if dev else 0, int(dev[1]) if dev else 0)


@dataclass
class StoreFigures:
    """Seqs in store order (rowid), policy gaps, and the aggregator's own duplicate/reorder counters."""

    seqs: list[int]
    gaps: list[tuple[int, int, str]]
    duplicates_received: int
    reorders: int

    def lost(self, last_seq: int) -> list[int]:
        """Seqs 1..last_seq neither stored nor named by a gap record."""
        have = set(self.seqs)
        return [s for s in range(1, last_seq + 1)
                if s not in have and not any(a <= s <= b for a, b, _ in self.gaps)]

    @property
    def duplicates_stored(self) -> int:
        return len(self.seqs) - len(set(self.seqs))

    @property
    def out_of_order(self) -> int:
        """Records stored after a record with a higher seq."""
        count, top = 0, 0
        for s in self.seqs:
            if s < top:
                count += 1
            top = max(top, s)
        return count


def report(test: str, **figures: Any) -> None:
    """Print the figures (pytest -s shows them) and append them to $EDGE_RELIABILITY_FIGURES if set."""
    line = " ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[{test}] {line}")
    target = os.environ.get("EDGE_RELIABILITY_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": test, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                **figures}) + "\n")

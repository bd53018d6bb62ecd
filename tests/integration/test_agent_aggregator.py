"""Agent → Mosquitto → aggregator, all real processes: every record stored once, acks flow back, and the
agent's outbox empties in `aggregator` delivery mode. The aggregator learns the device's key from the
birth record's certificate chain, verified to the fleet CA."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agent_proc import REPO, AgentProcess, agent_config, to_toml, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.pki import make_fleet
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def outbox_state(db: Path) -> tuple[int, int, int]:
    """(rows waiting, last committed seq, acked seq) of the agent's outbox."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        depth = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        return int(depth), int(meta.get("last_seq", 0)), int(meta.get("acked_seq", 0))
    finally:
        conn.close()


def stored_seqs(db: Path, device: str) -> list[int]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return [int(s) for (s,) in conn.execute("SELECT seq FROM records WHERE device_id = ? ORDER BY seq",
                                                 (device,))]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def test_agent_to_aggregator_stored_once_acked_outbox_empties(tmp_path: Path, mosquitto: Mosquitto,
                                                              unique_id: str) -> None:
    device = f"dev-{unique_id}"
    fleet = make_fleet(tmp_path / "pki", devices=[device], aggregators=[f"agg-{unique_id}"])
    files = fleet.devices[device]
    agg_db = tmp_path / "records.db"
    agg_conf = tmp_path / "aggregator.toml"
    agg_conf.write_text(to_toml({
        "mqtt": {"url": mosquitto.url, "client_id": f"agg-{unique_id}"},
        "store": {"url": str(agg_db)},
        "trust": {"ca_files": [str(fleet.ca_cert)], "crl_files": [str(fleet.crl)]},
        "identity": fleet.identity(),
    }))
    agg_log = open(tmp_path / "aggregator.log", "wb")  # noqa: SIM115
    agg = subprocess.Popen([sys.executable, "-m", "aggregator", "run", "--config", str(agg_conf)],
                           stdout=agg_log, stderr=agg_log, cwd=str(REPO))
    cfg = agent_config(tmp_path / "agent", device, mosquitto.url, delivery="aggregator", key_path=files.key,
                       certificate=str(files.cert),
                       receipts={"ca_file": str(fleet.ca_cert), "crl_file": str(fleet.crl)},
                       source={"type": "simulated", "fault": "cycle", "cycle_s": 5.0, "realtime": False})
    (tmp_path / "agent").mkdir(exist_ok=True)
    agent = AgentProcess(write_config(tmp_path / "agent" / "agent.toml", cfg))
    try:
        wait_for(lambda: (tmp_path / "aggregator.log").read_text().count("aggregator started") > 0
                 or agg.poll() is not None, timeout=30, what="aggregator start")
        assert agg.poll() is None, (tmp_path / "aggregator.log").read_text()
        agent.start()
        wait_for(lambda: len(stored_seqs(agg_db, device)) >= 2000, timeout=90, what="2000 stored records")
        assert agent.terminate() == 0, agent.log()
        _, last, _ = outbox_state(tmp_path / "agent" / "outbox.db")
        # Start it again: it publishes what it committed but had not sent when stopped (kept, not lost), reads
        # the retained receipt and empties its outbox.
        agent = AgentProcess(write_config(tmp_path / "agent" / "agent.toml", {
            **cfg, "pipeline": [{**cfg["pipeline"][0], "source": {"type": "simulated", "fault": "normal",
                                                                  "realtime": True, "rate_hz": 1000.0}}]}))
        agent.start()
        wait_for(lambda: len(stored_seqs(agg_db, device)) >= last, timeout=60, what="every first-run record stored")
        wait_for(lambda: outbox_state(tmp_path / "agent" / "outbox.db")[2] > last, timeout=30,
                 what="acks beyond the first run's last seq")
        assert agent.terminate() == 0, agent.log()
        final_depth, final_last, final_acked = outbox_state(tmp_path / "agent" / "outbox.db")
    finally:
        agent.stop()
        agg.terminate()
        try:
            agg.wait(20)
        finally:
            agg.kill() if agg.poll() is None else None
            agg_log.close()
    seqs = stored_seqs(agg_db, device)
    assert seqs == list(range(1, seqs[-1] + 1)), "every seq stored exactly once, no gaps"
    assert seqs[-1] >= final_acked
    assert final_depth <= final_last - final_acked, "acknowledged rows left the outbox"
    assert final_acked >= last
    assert "Traceback" not in (tmp_path / "aggregator.log").read_text()

"""kill -9 of the agent while it publishes, then a restart: no seq reused, nothing committed is lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from envelope import open_record
from tests.support.agent_proc import AgentProcess, agent_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def committed_last_seq(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


@pytest.mark.parametrize("delivery", ["broker", "aggregator"])
def test_kill9_then_restart_loses_nothing_and_reuses_no_seq(tmp_path: Path, mosquitto: Mosquitto, unique_id: str,
                                                           delivery: str) -> None:
    device = f"dev-{unique_id}"
    cfg = agent_config(tmp_path, device, mosquitto.url, delivery=delivery)
    conf = write_config(tmp_path / "agent.toml", cfg)
    rec = Recorder(mosquitto.url, [f"edge/v1/{device}/#"])
    agent = AgentProcess(conf).start()
    try:
        wait_for(lambda: rec.count("/result/") >= 300, timeout=60, what="300 results before the kill")
        agent.kill9()
        last_before = committed_last_seq(tmp_path / "outbox.db")
        assert last_before >= 300

        agent = AgentProcess(conf).start()

        def all_before_received_and_new_epoch() -> bool:
            seen = {open_record(m.payload).seq for m in rec.snapshot() if m.payload != b"offline"}
            return seen >= set(range(1, last_before + 1)) and max(seen) > last_before + 50
        wait_for(all_before_received_and_new_epoch, timeout=60, what="every committed seq after restart")
        assert agent.terminate() == 0, agent.log()
    finally:
        agent.stop()
        rec.close()

    by_seq: dict[int, bytes] = {}
    epochs: dict[int, int] = {}
    for m in rec.snapshot():
        if m.payload == b"offline":
            continue
        r = open_record(m.payload)
        if r.seq in by_seq:
            assert by_seq[r.seq] == m.payload, f"seq {r.seq} was reused for different content"
        by_seq[r.seq] = m.payload
        epochs[r.seq] = r.epoch
    seqs = sorted(by_seq)
    assert seqs == list(range(1, seqs[-1] + 1))
    assert all(epochs[s] == 1 for s in range(1, last_before + 1))
    after = [s for s in seqs if s > last_before]
    assert after and all(epochs[s] == 2 for s in after), "the epoch increased by one at the restart"
    assert open_record(by_seq[last_before + 1]).kind == "status", "the restart begins with a birth record"

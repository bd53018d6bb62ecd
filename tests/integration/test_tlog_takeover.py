"""The log across a worker's death, and a device that catches a tampered store (issue 11, DESIGN §9).

Real everything: Mosquitto, PostgreSQL, two ``edge-aggregator run`` workers on one shared subscription with
the same log key, and the real ``edge-agent run`` witnessing the log (``[receipts] log_vkey``).

1. The worker that integrates the log is killed with SIGKILL: the other takes the advisory lock and signs
   the next checkpoint within 2 x ``checkpoint_interval_s``; no index is assigned twice; every checkpoint
   kept is consistent with the one before; the device keeps verifying receipts across the takeover.
2. The store then alters the device's records as they are written (a trigger flips a byte): the log commits
   to bytes the device never signed, the next receipt's inclusion proof fails on the device, which deletes
   nothing, keeps the evidence and reports "log inconsistent" in its status and telemetry.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent.status import read_status
from aggregator import open_store
from aggregator.tlog import TileCache
from envelope import NoteSigner, open_receipt
from envelope.merkle import consistency_proof, leaf_hash, verify_consistency
from envelope.note import open_checkpoint
from provisioning import create_file_key
from tests.integration.test_agg_badinput import AggregatorProcess, write_config
from tests.integration.test_agg_store import PG_URL, drop_schema
from tests.reliability.harness import Device, outbox_rows
from tests.support.mosquitto import Mosquitto
from tests.support.pki import make_fleet
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INTERVAL_S = 1.0
RATE_100_PER_S = {"type": "simulated", "realtime": True, "rate_hz": 12800.0, "block_samples": 128,
                  "fault": "cycle", "cycle_s": 30.0}


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = "tlog_takeover_" + uuid.uuid4().hex[:10]
    try:
        yield schema
    finally:
        drop_schema(schema)


def sql(schema: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        try:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description is not None else []
        except psycopg.errors.UndefinedTable:
            return []


def status(device: Device) -> dict:
    try:
        return read_status(str(device.workdir / "status.json"))
    except Exception:
        return {}


def log_block(device: Device) -> dict:
    return status(device).get("telemetry", {}).get("receipts", {})


def test_takeover_and_a_tampered_store(tmp_path: Path, mosquitto: Mosquitto, unique_id: str,
                                       pg_schema: str) -> None:
    dev_id = f"dev-{unique_id}"
    fleet = make_fleet(tmp_path / "fleet", devices=[dev_id], aggregators=["agg-1", "agg-2"])
    key = create_file_key(tmp_path / "log" / "log.key", "ed25519")
    signer = NoteSigner("test-fleet/log", key.private_key)  # type: ignore[arg-type]
    workers: dict[str, AggregatorProcess] = {}
    for name in ("agg-1", "agg-2"):
        conf = write_config(tmp_path / f"{name}.toml", port=mosquitto.port, client_id=f"{name}-{unique_id}",
                            store=PG_URL, schema=pg_schema, ca=fleet.ca_cert, crl=fleet.crl, group="g",
                            identity=fleet.identity(name))
        with conf.open("a") as f:
            f.write(f'\n[log]\nkey_file = "{tmp_path / "log" / "log.key"}"\norigin = "test-fleet/log"\n'
                    f"checkpoint_interval_s = {INTERVAL_S}\n")
        workers[f"{name}-{unique_id}"] = AggregatorProcess(conf, tmp_path / f"{name}.log").start()
    workdir = tmp_path / "device"
    workdir.mkdir()
    device = Device(dev_id, fleet, workdir)
    agent = device.agent(device.config(mosquitto.url, source=RATE_100_PER_S, receipts={
        "ca_file": str(fleet.ca_cert), "crl_file": str(fleet.crl), "log_vkey": signer.vkey},
        status={"interval_s": 0.2})).start()
    try:
        def verified_size() -> int:
            b = log_block(device)
            return int(b.get("log_size") or 0) if b.get("log_state") == "ok" else 0

        wait_for(lambda: verified_size() > 200, timeout=90, interval=0.2,
                 what=f"the device verifying log proofs\n{agent.log()[-3000:]}")

        # ---- 1. kill -9 of the integrator ----------------------------------------------------------------
        issuer = sql(pg_schema, "SELECT issuer FROM log_checkpoints ORDER BY size DESC LIMIT 1")[0][0]
        killed_at = time.time()
        workers[issuer].kill()
        survivor = next(n for n in workers if n != issuer)
        first_after = wait_for(lambda: sql(pg_schema, "SELECT issuer, issued_ms FROM log_checkpoints WHERE "
                                                      "issued_ms > %s ORDER BY size LIMIT 1",
                                           (int(killed_at * 1000),)),
                               timeout=30, interval=0.05, what="a checkpoint after the kill")[0]
        takeover_s = first_after[1] / 1000 - killed_at
        print(f"takeover: first checkpoint by the survivor {takeover_s:.3f}s after the kill")
        assert first_after[0] == survivor and takeover_s <= 2 * INTERVAL_S, (first_after, takeover_s)
        size_at_kill = verified_size()
        workers[issuer].start()  # its supervisor restarts it (it drains its own MQTT session); it does not lead
        wait_for(lambda: verified_size() > size_at_kill + 200, timeout=60, interval=0.2,
                 what="the device verifying receipts after the takeover")
        indices = sql(pg_schema, "SELECT count(*), count(DISTINCT log_index), min(log_index), max(log_index) "
                                 "FROM records WHERE log_index IS NOT NULL")[0]
        assert indices[0] == indices[1] == indices[3] + 1 and indices[2] == 0, indices  # each index once
        assert sql(pg_schema, "SELECT count(*) FROM records WHERE log_index IS NULL AND received_ms < %s",
                   (int(time.time() * 1000) - 5000,)) == [(0,)]
        issuers = {r[0] for r in sql(pg_schema, "SELECT DISTINCT issuer FROM log_checkpoints")}
        assert issuers == set(workers), issuers
        store = open_store(PG_URL, schema=pg_schema, create=False)
        try:
            tiles = TileCache(store.log_tile)
            kept = [open_checkpoint(n, [signer.verifier], origin="test-fleet/log")[0]
                    for (n,) in sql(pg_schema, "SELECT note FROM log_checkpoints ORDER BY size")]
            for a, b in itertools.pairwise(kept):
                verify_consistency(a.size, b.size, consistency_proof(a.size, b.size, tiles.node), a.root, b.root)
            entries = store.log_entries(0, kept[-1].size)
            assert all(tiles.node(0, e.index) == leaf_hash(e.record) for e in entries[-300:])
        finally:
            store.close()
        assert log_block(device)["log_state"] == "ok" and not status(device).get("degraded")

        # ---- 2. the store alters the device's records --------------------------------------------------------
        sql(pg_schema, "CREATE TABLE tampered (seq BIGINT)")
        sql(pg_schema, f"""CREATE FUNCTION "{pg_schema}".tamper() RETURNS trigger AS $$ BEGIN
                NEW.record := set_byte(NEW.record, length(NEW.record) - 1,
                                       get_byte(NEW.record, length(NEW.record) - 1) # 1);
                INSERT INTO "{pg_schema}".tampered VALUES (NEW.seq);
                RETURN NEW; END $$ LANGUAGE plpgsql""")
        sql(pg_schema, f'CREATE TRIGGER tamper BEFORE INSERT ON records FOR EACH ROW WHEN '
                       f"(NEW.device_id = '{dev_id}') EXECUTE FUNCTION \"{pg_schema}\".tamper()")
        wait_for(lambda: log_block(device).get("log_state") == "inconsistent", timeout=60, interval=0.2,
                 what=f"the device reporting the log inconsistent\n{agent.log()[-3000:]}")
        doc = status(device)
        assert any("log inconsistent" in d for d in doc["degraded"]), doc["degraded"]
        assert doc["telemetry"]["receipts"]["invalid"].get("log_inconsistent", 0) >= 1
        evidence = sorted((workdir / "log-evidence").glob("log-evidence-*.json"))
        ev = json.loads(evidence[0].read_text())
        assert ev["reason"] == "log_inclusion", ev
        assert open_checkpoint(ev["previous_checkpoint"], [signer.verifier])[0].size > 0
        assert open_checkpoint(ev["receipt_checkpoint"], [signer.verifier])[0].size > 0
        refused = open_receipt(base64.b64decode(ev["receipt_cose_b64"]))[0]
        tampered = {q for (q,) in sql(pg_schema, "SELECT seq FROM tampered")}
        assert refused.settled in tampered  # the receipt proved an altered record ...
        assert refused.settled in outbox_rows(device.outbox)  # ... and the device kept its original
    finally:
        agent.stop()
        for w in workers.values():
            w.kill()

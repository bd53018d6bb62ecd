"""``edge-aggregator audit`` against a real aggregator's log, served by the project's tile routes.

A real ``AggregatorService`` with ``[log]`` takes records from devices over a real Mosquitto, stores them and
integrates them into its log; ``aggregator.tlog.http.routes`` serve that store's checkpoint, tiles and bundles
under uvicorn. The auditor reads them over HTTP with nothing but the log's verifier key and the fleet CA.
Then the store is tampered with (a record byte changed, a row deleted), on SQLite and on PostgreSQL, and the
audit must fail.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aggregator import AggregatorService, TrustStore, Verifier, open_store
from aggregator.cli import main
from aggregator.config import LogSettings
from aggregator.trust import load_certificates
from envelope import NoteSigner
from provisioning import create_file_key, load_file_signer
from tests.integration.test_agg_service import make_config
from tests.integration.test_agg_store import PG_URL, pg_schema  # noqa: F401 - fixture
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for
from tests.unit.test_agg_support import fleet_with

http = pytest.importorskip("aggregator.tlog.http", reason="the log's tile routes (aggregator.tlog.http) need "
                           "Starlette (extra 'web')")
webserver = pytest.importorskip("tests.support.webserver", reason="uvicorn (extra 'web') serves the tiles")

pytestmark = pytest.mark.integration

ORIGIN = "test-fleet/log"


def _log(tmp_path: Path) -> tuple[LogSettings, str, Path]:
    key_path = tmp_path / "log" / "log.key"
    key = create_file_key(key_path, "ed25519")
    vkey = NoteSigner(ORIGIN, key.private_key).vkey  # type: ignore[arg-type]
    return LogSettings(key_file=str(key_path), origin=ORIGIN, checkpoint_interval_s=0.1), vkey, key_path


def _serve(url: str, schema: str | None = None):
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/log", routes=http.routes(open_store(url, schema=schema, create=False)))])
    return webserver.serving(app)


def _run_audit(capsys, base: str, vkey: str, fleet, *extra: str) -> tuple[int, dict]:
    rc = main(["audit", "--url", f"{base}/log", "--log-vkey", vkey, "--ca", str(fleet.ca_cert), "--json",
               "--jobs", "1", *extra])
    return rc, json.loads(capsys.readouterr().out)


def test_audit_of_a_running_aggregators_log(tmp_path: Path, mosquitto: Mosquitto, unique_id: str, capsys) -> None:
    fleet, (a, b) = fleet_with(tmp_path, f"{unique_id}-a", f"{unique_id}-b")
    settings, vkey, key_path = _log(tmp_path)
    cfg = make_config(tmp_path, fleet, mosquitto.port, f"agg-{unique_id}")
    cfg = type(cfg)(**{**cfg.__dict__, "log": settings})
    sent = [a.birth(), b.birth()] + [(a if k % 3 else b).record(stream="vib" if k % 2 else "temp")
                                     for k in range(300)]
    a.seq += 2
    sent.append(a.gap(a.seq - 1, a.seq))  # two of dev-a's seqs evicted by its outbox, announced
    b.seq += 1
    sent.append(b.record("telemetry"))  # one of dev-b's seqs never arrives
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", mosquitto.port)
    pub.loop_start()
    svc = AggregatorService(cfg)
    svc.start()
    store = open_store(cfg.store.url, create=False)
    try:
        for info in [pub.publish(t, d, qos=1) for t, d in sent]:
            info.wait_for_publish(10)
        cp = wait_for(lambda: (c := store.log_latest_checkpoint()) is not None and c.size == len(sent) and c,
                      timeout=30, what=f"a checkpoint of {len(sent)} entries")
        assert cp
        day = datetime.now(timezone.utc).date().isoformat()
        ledgers = tmp_path / "ledgers"
        assert main(["ledger", "--store", cfg.store.url, "--period", day, "--out", str(ledgers), "--log-key",
                     str(key_path), "--origin", ORIGIN]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["bound"] and summary["log_size"] == len(sent)
        state = tmp_path / "audit-state.json"
        with _serve(cfg.store.url) as base:
            rc, report = _run_audit(capsys, base, vkey, fleet, "--state", str(state), "--ledger", str(ledgers))
            assert rc == 0, report["findings"][:5]
            assert (report["size"], report["records"], report["devices"], report["ledgers_checked"]) == \
                (len(sent), len(sent), 2, 1)
            more = [a.record() for _ in range(20)]  # the log grows while the aggregator runs
            for info in [pub.publish(t, d, qos=1) for t, d in more]:
                info.wait_for_publish(10)
            total = len(sent) + len(more)
            wait_for(lambda: (c := store.log_latest_checkpoint()) is not None and c.size == total, timeout=30,
                     what=f"a checkpoint of {total} entries")
            rc, report = _run_audit(capsys, base, vkey, fleet, "--state", str(state), "--ledger", str(ledgers),
                                    "--jobs", "2")
            assert rc == 0 and report["size"] == total, report["findings"][:5]  # consistent with the first
        doc = json.loads(Path(summary["json"]).read_text())
        missing = {e["device_id"]: e["missing"] for e in doc["entries"]}
        assert missing == {a.device_id: {"evicted": 2, "rejected": 0, "lost": 0},
                           b.device_id: {"evicted": 0, "rejected": 0, "lost": 1}}
    finally:
        store.close()
        svc.stop()
        pub.disconnect()
        pub.loop_stop()
    # the store is changed behind the log's back: a record byte, then a deleted row
    with sqlite3.connect(cfg.store.url) as db:
        (rec,) = db.execute("SELECT record FROM records WHERE log_index = 7").fetchone()
        db.execute("UPDATE records SET record = ? WHERE log_index = 7", (rec[:-3] + bytes([rec[-3] ^ 1]) + rec[-2:],))
    with _serve(cfg.store.url) as base:
        rc, report = _run_audit(capsys, base, vkey, fleet, "--state", str(state))
    assert rc == 1 and {"tile_mismatch", "record_invalid", "root_mismatch"} <= set(report["counts"]), report
    assert any(f.get("index") == 7 for f in report["findings"] if f["kind"] == "record_invalid")
    with sqlite3.connect(cfg.store.url) as db:
        db.execute("DELETE FROM records WHERE log_index = 100")
    with _serve(cfg.store.url) as base:
        rc, report = _run_audit(capsys, base, vkey, fleet, "--state", str(state))
    assert rc == 1 and "bundle_unavailable" in report["counts"], report


@pytest.mark.parametrize("tamper", ["change", "delete"])
def test_a_tampered_postgresql_store_fails_the_audit(tmp_path: Path, pg_schema: str, capsys,  # noqa: F811
                                                      tamper: str) -> None:
    import psycopg

    from aggregator.tlog import LogIntegrator

    fleet, (a, b) = fleet_with(tmp_path, "dev-a", "dev-b")
    settings, vkey, key_path = _log(tmp_path)
    verifier = Verifier(TrustStore(load_certificates(fleet.ca_cert)))
    now = int(time.time() * 1000)
    sent = [a.birth(), b.birth()] + [(a if k % 2 else b).record() for k in range(600)]  # three bundles
    store = open_store(PG_URL, schema=pg_schema)
    try:
        store.commit_batch([verifier.verify(t, d, now) for t, d in sent])
        signer = NoteSigner(ORIGIN, load_file_signer(key_path).private_key)  # type: ignore[arg-type]
        assert LogIntegrator(signer, settings, "w1").tick(store, now, force=True) is not None
    finally:
        store.close()
    with _serve(PG_URL, pg_schema) as base:
        rc, report = _run_audit(capsys, base, vkey, fleet)
        assert rc == 0, report["findings"][:5]
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{pg_schema}"')
            if tamper == "change":
                row = conn.execute("SELECT record FROM records WHERE log_index = 300").fetchone()
                assert row is not None
                rec = row[0]
                conn.execute("UPDATE records SET record = %s WHERE log_index = 300",
                             (bytes(rec[:-1]) + bytes([rec[-1] ^ 1]),))
            else:
                conn.execute("DELETE FROM records WHERE log_index = 300")
        rc, report = _run_audit(capsys, base, vkey, fleet)
    assert rc == 1
    want = {"tile_mismatch", "record_invalid", "root_mismatch"} if tamper == "change" else {"bundle_unavailable"}
    assert want <= set(report["counts"]), report

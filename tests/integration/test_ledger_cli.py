"""``edge-aggregator ledger`` against real stores (SQLite, PostgreSQL): files written, note signed, proofs good."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from aggregator import TrustStore, Verifier, open_store
from aggregator.cli import main
from aggregator.ledger import Period, check_document
from aggregator.trust import load_certificates
from envelope import NoteSigner
from envelope.note import NoteVerifier, open_note
from provisioning import write_private_key
from tests.integration.test_agg_store import pg_schema, store_url  # noqa: F401 - fixtures
from tests.unit.test_agg_support import fleet_with

pytestmark = pytest.mark.integration


def _log_key(tmp_path: Path) -> tuple[Path, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "log.key"
    write_private_key(path, key)
    return path, NoteSigner("test.fleet/log", key).vkey


def test_ledger_command_writes_a_signed_ledger(store_url, tmp_path: Path, capsys) -> None:  # noqa: F811
    fleet, (a, b) = fleet_with(tmp_path, "dev-a", "dev-b")
    verifier = Verifier(TrustStore(load_certificates(fleet.ca_cert)))
    now = int(time.time() * 1000)
    sent = [a.birth(), b.birth()] + [a.record() for _ in range(5)] + [a.record("telemetry")]
    b.seq += 2  # two seqs of dev-b never arrive
    sent += [b.record(stream="temp") for _ in range(3)]
    store = open_store(store_url[0], schema=store_url[1])
    try:
        store.commit_batch([verifier.verify(t, d, now) for t, d in sent])
    finally:
        store.close()
    key, vkey = _log_key(tmp_path)
    day = datetime.now(timezone.utc).date().isoformat()
    out = tmp_path / "ledgers"
    args = ["ledger", "--store", store_url[0], "--period", day, "--out", str(out), "--log-key", str(key),
            "--origin", "test.fleet/log"]
    if store_url[1]:
        args += ["--schema", store_url[1]]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["entries"] == 2 and summary["log_size"] == len(sent)
    doc = json.loads(Path(summary["json"]).read_text())
    fields, entries = check_document(doc)
    assert fields.period == Period.parse(day) and fields.log_root is None
    open_note(Path(summary["note"]).read_text(), [NoteVerifier.from_vkey(vkey)])
    by = {e.device_id: e for e in entries}
    assert (by["dev-a"].records, by["dev-a"].results, by["dev-a"].missing) == (7, 5, 0)
    assert (by["dev-b"].records, by["dev-b"].stream_results, by["dev-b"].missing_lost) == (4, (("temp", 3),), 2)
    assert json.loads(Path(summary["dump"]).read_text())["format"] == "standard-v1"


def test_ledger_command_refuses_a_bad_period(tmp_path: Path, capsys) -> None:
    key, _ = _log_key(tmp_path)
    assert main(["ledger", "--store", str(tmp_path / "x.db"), "--period", "soon", "--log-key", str(key),
                 "--origin", "o"]) == 2
    assert "--period" in capsys.readouterr().err


def _logged_store(store_url, tmp_path: Path, key: ed25519.Ed25519PrivateKey):  # noqa: F811
    """A store whose records the log integrated and checkpointed (the integrator the service runs)."""
    from aggregator.config import LogSettings
    from aggregator.tlog import LogIntegrator

    fleet, (a, b) = fleet_with(tmp_path, "dev-a", "dev-b")
    verifier = Verifier(TrustStore(load_certificates(fleet.ca_cert)))
    now = int(time.time() * 1000)
    sent = [a.birth(), b.birth()] + [(a if k % 3 else b).record() for k in range(30)]
    a.seq += 1
    sent.append(a.record())
    store = open_store(store_url[0], schema=store_url[1])
    store.commit_batch([verifier.verify(t, d, now) for t, d in sent])
    integ = LogIntegrator(NoteSigner("test.fleet/log", key), LogSettings(key_file="unused", origin="test.fleet/log",
                                                                         checkpoint_interval_s=0.01), "w1")
    assert integ.tick(store, now, force=True) is not None
    return store, len(sent)


def test_ledger_from_the_log_is_bound_to_its_checkpoint(store_url, tmp_path: Path, capsys) -> None:  # noqa: F811
    key_path, vkey = _log_key(tmp_path)
    from provisioning import load_file_signer

    key = load_file_signer(key_path).private_key
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    store, n = _logged_store(store_url, tmp_path, key)
    checkpoint = store.log_latest_checkpoint()
    store.close()
    assert checkpoint is not None and checkpoint.size == n
    day = datetime.now(timezone.utc).date().isoformat()
    args = ["ledger", "--store", store_url[0], "--period", day, "--out", str(tmp_path / "out"), "--log-key",
            str(key_path), "--origin", "test.fleet/log"] + (["--schema", store_url[1]] if store_url[1] else [])
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["bound"] and summary["log_size"] == n
    fields, entries = check_document(json.loads(Path(summary["json"]).read_text()))
    open_note(Path(summary["note"]).read_text(), [NoteVerifier.from_vkey(vkey)])
    assert (fields.log_size, fields.log_root) == (checkpoint.size, checkpoint.root)
    assert {e.device_id: e.missing_lost for e in entries} == {"dev-a": 1, "dev-b": 0}
    assert max(e.last_index for e in entries) == n - 1


@pytest.mark.parametrize("tamper", ["change", "delete"])
def test_ledger_refuses_a_store_whose_log_was_changed(tmp_path: Path, capsys, tamper: str) -> None:
    import sqlite3

    key_path, _ = _log_key(tmp_path)
    from provisioning import load_file_signer

    key = load_file_signer(key_path).private_key
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    db = str(tmp_path / "agg.db")
    store, _ = _logged_store((db, None), tmp_path, key)
    store.close()
    with sqlite3.connect(db) as conn:
        if tamper == "change":
            (rec,) = conn.execute("SELECT record FROM records WHERE log_index = 5").fetchone()
            conn.execute("UPDATE records SET record = ? WHERE log_index = 5", (rec[:-1] + bytes([rec[-1] ^ 1]),))
        else:
            conn.execute("DELETE FROM records WHERE log_index = 5")
    day = datetime.now(timezone.utc).date().isoformat()
    rc = main(["ledger", "--store", db, "--period", day, "--out", str(tmp_path / "out"), "--log-key", str(key_path),
               "--origin", "test.fleet/log"])
    err = capsys.readouterr().err
    assert rc == 1
    assert ("do not hash to the root" if tamper == "change" else "log entry 5 is missing") in err
    assert not (tmp_path / "out").exists()

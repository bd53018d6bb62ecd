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
from aggregator.ledger import _note as note
from aggregator.trust import load_certificates
from provisioning import write_private_key
from tests.integration.test_agg_store import pg_schema, store_url  # noqa: F401 - fixtures
from tests.unit.test_agg_support import fleet_with

pytestmark = pytest.mark.integration


def _log_key(tmp_path: Path) -> tuple[Path, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "log.key"
    write_private_key(path, key)
    return path, note.verifier_key("test.fleet/log", key.public_key())


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
    note.verify(Path(summary["note"]).read_text(), vkey)
    by = {e.device_id: e for e in entries}
    assert (by["dev-a"].records, by["dev-a"].results, by["dev-a"].missing) == (7, 5, 0)
    assert (by["dev-b"].records, by["dev-b"].stream_results, by["dev-b"].missing_lost) == (4, (("temp", 3),), 2)
    assert json.loads(Path(summary["dump"]).read_text())["format"] == "standard-v1"


def test_ledger_command_refuses_a_bad_period(tmp_path: Path, capsys) -> None:
    key, _ = _log_key(tmp_path)
    assert main(["ledger", "--store", str(tmp_path / "x.db"), "--period", "soon", "--log-key", str(key),
                 "--origin", "o"]) == 2
    assert "--period" in capsys.readouterr().err

"""The ledger's reward-contract format, checked by the real ``@openzeppelin/merkle-tree`` npm package.

tests/js/verify-ledger.js loads the ``standard-v1`` dump with ``StandardMerkleTree.load`` and verifies every
device's entry and proof from the ledger JSON with ``StandardMerkleTree.verify``. scripts/test installs the
package (``npm ci`` in tests/js) when it is missing; without node or the package these tests skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from aggregator.ledger import LedgerBuilder, LogBinding, Period
from aggregator.ledger.files import write_ledger
from tests.unit.test_ledger import DAY0, MODEL_B, Rec, receipt

pytestmark = pytest.mark.integration

JS = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS / "verify-ledger.js"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the OpenZeppelin checks need it (Debian package nodejs)")
    if not (JS / "node_modules" / "@openzeppelin" / "merkle-tree" / "package.json").exists():
        pytest.skip("@openzeppelin/merkle-tree is not installed: run `npm ci` in tests/js (scripts/test does)")
    return node


def _run(dump: Path, ledger: Path) -> tuple[int, dict]:
    proc = subprocess.run([_node(), str(SCRIPT), str(dump), str(ledger)], capture_output=True, text=True,
                          timeout=60, cwd=JS)
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def _ledger(tmp_path: Path, devices: int = 5):
    t = DAY0.start_ms
    entries = []
    for n in range(devices):
        device = f"dev-{n:02d}"
        for seq in range(1, 4 + n):
            if seq == 3 and n % 2:
                continue  # a missing seq on odd devices
            entries.append(Rec(device, seq, t + seq * 30_000 + n, stream="vib" if seq % 2 else "temp",
                               model=MODEL_B if n == 3 else b"\xaa" * 32).seal())
    entries.append(receipt("dev-01", [(3, "bad_signature")]))
    ledger = LedgerBuilder().add_all(enumerate(entries)).ledger(DAY0)
    log = LogBinding("test.fleet/log", ledger.log_size, b"\x05" * 32)
    files = write_ledger(tmp_path, ledger, log, lambda text: text + "\n— test.fleet/log AAAAAA==\n")
    assert files.dump is not None
    return ledger, files


def test_every_device_proof_verifies_in_openzeppelin(tmp_path: Path) -> None:
    ledger, files = _ledger(tmp_path)
    rc, out = _run(files.dump, files.document)
    assert rc == 0, out
    doc = json.loads(files.document.read_text())
    assert out["root"] == doc["root"]
    assert sorted(out["verified"]) == [e.device_id for e in ledger.entries] and out["failed"] == []
    assert doc["entries"][1]["missing"] == {"evicted": 0, "rejected": 1, "lost": 0}


@pytest.mark.parametrize("field", [3, 5, 8, 11, 13])  # records, streams, last_seq, missing_lost, model digests
def test_a_one_field_change_fails_in_openzeppelin(tmp_path: Path, field: int) -> None:
    _, files = _ledger(tmp_path)
    doc = json.loads(files.document.read_text())
    value = doc["entries"][2]["value"]
    if isinstance(value[field], list):
        value[field] = [*value[field][:-1], "0x" + "cd" * 32 if field == 13 else "other"]
    else:
        value[field] = str(int(value[field]) + 1)
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    rc, out = _run(files.dump, tampered)
    assert rc == 1 and out["failed"] == [doc["entries"][2]["device_id"]], out


def test_a_changed_dump_value_is_refused_by_load(tmp_path: Path) -> None:
    _, files = _ledger(tmp_path)
    dump = json.loads(files.dump.read_text())
    dump["values"][0]["value"][4] = str(int(dump["values"][0]["value"][4]) + 1)
    tampered = tmp_path / "tampered.oz.json"
    tampered.write_text(json.dumps(dump))
    rc, out = _run(tampered, files.document)
    assert rc == 1 and out["errors"] and out["errors"][0].startswith("dump:"), out


def test_a_single_device_period_verifies(tmp_path: Path) -> None:
    _, files = _ledger(tmp_path, devices=1)
    rc, out = _run(files.dump, files.document)
    assert rc == 0 and out["verified"] == ["dev-00"], out
    assert Period.parse("2026-12-01") == DAY0

"""``edge-aggregator audit`` against a static C2SP tlog-tiles server (tests/support/tlog_static.py).

The server is plain files behind ``http.server`` and its tree is computed by the recursive RFC 6962
definition, so these tests check the auditor against the spec, independently of the aggregator's own log.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from aggregator.audit import PublishedLedger, parse_checkpoint, run_audit
from aggregator.audit.tree import StreamingTree, leaf_hash, root_of
from aggregator.cli import main
from aggregator.ledger import LedgerBuilder, LogBinding, Period, ledger_document, note_text
from aggregator.trust import load_certificates
from envelope import Receipt, seal_receipt
from envelope.note import NoteSigner, open_note, sign_note
from provisioning import SoftwareSigner
from tests.support.tlog_static import leaf, mth, serve, write_log
from tests.unit.test_agg_support import chain_der, fleet_with

pytestmark = pytest.mark.integration

ORIGIN = "test.fleet/log"


def note_signer(key: SoftwareSigner):
    """Sign note texts with ``key`` under the log's origin (envelope.note)."""
    signer = NoteSigner(ORIGIN, key.private_key)  # type: ignore[arg-type]
    return lambda text: sign_note(text, [signer]).decode()


class World:
    """A fleet, a log key and a log folder, with helpers to write and audit it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.fleet, self.devs = fleet_with(tmp_path, "dev-a", "dev-b", "dev-c")
        self.cas = load_certificates(self.fleet.ca_cert)
        self.log_key = SoftwareSigner.generate("ed25519")
        self.sign = note_signer(self.log_key)
        self.vkey = NoteSigner(ORIGIN, self.log_key.private_key).vkey  # type: ignore[arg-type]
        self.folder = tmp_path / "log"
        self.folder.mkdir()
        self.state = tmp_path / "audit-state.json"
        agg = self.fleet.aggregators["agg-test"]
        self.agg_signer, self.agg_chain = agg.signer(), chain_der(agg.cert)

    def receipt(self, device: str, rejected: list[tuple[int, str]]) -> bytes:
        r = Receipt(agg="agg-test", dev=device, epoch=1, settled=0, time_ms=int(time.time() * 1000),
                    rejected=tuple(rejected))
        return seal_receipt(self.agg_signer, self.agg_chain, r)

    def entries(self, n_results: int = 40) -> list[bytes]:
        a, b, c = self.devs
        out = [d.birth()[1] for d in (a, b, c)]
        for k in range(n_results):
            out.append((a if k % 3 else b).record(stream="vib" if k % 2 else "temp")[1])
        a.seq += 2  # two of dev-a's seqs evicted, announced by a gap record
        out.append(a.gap(a.seq - 1, a.seq)[1])
        b.seq += 1  # one of dev-b's seqs rejected, named by a receipt
        out.append(self.receipt("dev-b", [(b.seq, "bad_signature")]))
        out.append(b.record()[1])
        c.seq += 1  # one of dev-c's lost
        out.append(c.record("telemetry")[1])
        return out

    def ledger(self, entries: list[bytes], *, size: int | None = None) -> PublishedLedger:
        size = len(entries) if size is None else size
        day = Period.parse(datetime.now(timezone.utc).date().isoformat())
        ledger = LedgerBuilder().add_all(enumerate(entries[:size])).ledger(day)
        log = LogBinding(ORIGIN, size, mth([leaf(e) for e in entries[:size]]))
        return PublishedLedger("ledger.json", ledger_document(ledger, log, self.sign(note_text(ledger, log))))

    def audit(self, ledgers=(), state: bool = True):
        with serve(self.folder) as url:
            return run_audit(url, self.vkey, self.cas, state_path=self.state if state else None, ledgers=ledgers)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def kinds(report) -> dict[str, int]:
    return dict(report.counts)


def test_a_clean_log_audits_clean_with_its_ledger(world: World) -> None:
    entries = world.entries(600)  # three bundles: two full, one partial; a level-1 partial tile
    write_log(world.folder, entries, world.sign, ORIGIN)
    report = world.audit([world.ledger(entries)])
    assert report.clean, report.findings[:5]
    assert (report.size, report.records, report.receipts, report.devices) == (len(entries), len(entries) - 1, 1, 3)
    assert report.ledgers_checked == 1
    doc = world.ledger(entries).document
    by = {e["device_id"]: e["missing"] for e in doc["entries"]}
    assert by == {"dev-a": {"evicted": 2, "rejected": 0, "lost": 0}, "dev-b": {"evicted": 0, "rejected": 1, "lost": 0},
                  "dev-c": {"evicted": 0, "rejected": 0, "lost": 1}}


def test_growth_is_consistent_and_a_rewrite_is_not(world: World) -> None:
    entries = world.entries(300)
    write_log(world.folder, entries[:200], world.sign, ORIGIN)
    assert world.audit().clean
    write_log(world.folder, entries, world.sign, ORIGIN)
    assert world.audit().clean  # grew: the root at 200 is still the one seen
    rewritten = entries[:100] + entries[101:]  # a row deleted, the log re-signed over what is left
    write_log(world.folder, rewritten, world.sign, ORIGIN)
    report = world.audit()
    assert kinds(report) == {"inconsistent": 1, "log_shrank": 1}, report.findings
    write_log(world.folder, entries[:150], world.sign, ORIGIN)
    assert "log_shrank" in kinds(world.audit())


def test_a_changed_record_byte_fails(world: World) -> None:
    entries = world.entries(40)
    write_log(world.folder, entries, world.sign, ORIGIN)
    assert world.audit().clean
    bad = list(entries)
    i = 10
    bad[i] = bad[i][:-5] + bytes([bad[i][-5] ^ 1]) + bad[i][-4:]  # a signature byte
    # the server serves the changed bytes but keeps the old hashes and checkpoint
    write_log(world.folder, entries, world.sign, ORIGIN, served=bad)
    report = world.audit()
    assert {"tile_mismatch", "root_mismatch", "record_invalid"} <= set(kinds(report)), report.findings
    assert any(f.index == i for f in report.findings if f.kind == "record_invalid")
    # re-hashed and re-signed over the changed bytes: the signature check and the earlier checkpoint catch it
    write_log(world.folder, bad, world.sign, ORIGIN)
    report = world.audit()
    assert set(kinds(report)) == {"record_invalid", "inconsistent"}, report.findings


def test_a_ledger_that_does_not_match_the_log_fails(world: World) -> None:
    entries = world.entries(40)
    write_log(world.folder, entries, world.sign, ORIGIN)
    honest = world.ledger(entries)
    inflated = world.ledger(entries)
    e = inflated.document["entries"][0]
    e["results"] += 1  # the figure changed, and the leaf, proofs and root rebuilt to match, then re-signed
    doc = _resigned(world, inflated.document)
    report = world.audit([honest, PublishedLedger("inflated.json", doc)], state=False)
    assert set(kinds(report)) == {"ledger_entry", "ledger_root"}, report.findings
    assert "results is" in next(f.detail for f in report.findings if f.kind == "ledger_entry")
    forged = world.ledger(entries)
    forged.document["note"] = note_signer(SoftwareSigner.generate("ed25519"))(
        open_note(forged.document["note"], [NoteSigner(ORIGIN, world.log_key.private_key).verifier]).text)  # type: ignore[arg-type]
    assert kinds(world.audit([forged], state=False)) == {"ledger_invalid": 1}
    older = world.ledger(entries, size=20)  # a ledger of an older log size is checked at that size
    assert world.audit([older], state=False).clean


def _resigned(world: World, doc: dict) -> dict:
    """Rebuild a changed document so it is internally consistent and signed by the log key."""
    from aggregator.ledger import check_document
    from aggregator.ledger.compute import Ledger
    from aggregator.ledger.export import entry_from_json, parse_note_text

    fields = parse_note_text(doc["note"].split("\n\n")[0] + "\n")
    ledger = Ledger(fields.period, fields.params, fields.log_size, tuple(entry_from_json(x) for x in doc["entries"]))
    log = LogBinding(ORIGIN, fields.log_size, fields.log_root)
    new = ledger_document(ledger, log, world.sign(note_text(ledger, log)))
    check_document(new)
    return new


def test_records_before_their_birth_and_unknown_devices(world: World) -> None:
    a, _, c = world.devs
    early = a.record()[1]  # captured before the birth record reached the log
    entries = [early, a.birth()[1], a.record()[1], c.record()[1]]  # dev-c never sent a birth record
    write_log(world.folder, entries, world.sign, ORIGIN)
    report = world.audit(state=False)
    assert kinds(report) == {"record_invalid": 1} and report.findings[0].index == 3
    assert "unknown_kid" in report.findings[0].detail


def test_a_forged_receipt_is_reported(world: World) -> None:
    a = world.devs[0]
    other = SoftwareSigner.generate("p256")  # a key without a certificate from the fleet CA
    forged = seal_receipt(other, world.agg_chain, Receipt("agg-test", "dev-a", 1, 0, int(time.time() * 1000),
                                                          ((5, "bad_signature"),)))
    write_log(world.folder, [a.birth()[1], forged], world.sign, ORIGIN)
    assert kinds(world.audit(state=False)) == {"receipt_invalid": 1}


def test_a_grown_log_without_its_partial_tiles_is_read_from_full_tiles(world: World) -> None:
    entries = world.entries(600)
    write_log(world.folder, entries, world.sign, ORIGIN, checkpoint_size=280)
    report = world.audit(state=False)
    assert report.clean and report.size == 280, report.findings


def test_a_checkpoint_by_another_key_is_refused(world: World, capsys) -> None:
    write_log(world.folder, world.entries(5), note_signer(SoftwareSigner.generate("ed25519")), ORIGIN)
    with serve(world.folder) as url:
        rc = main(["audit", "--url", url, "--log-vkey", world.vkey, "--ca", str(world.fleet.ca_cert)])
    assert rc == 1 and "checkpoint" in capsys.readouterr().err


def test_cli_exit_codes_and_json(world: World, capsys) -> None:
    entries = world.entries(10)
    write_log(world.folder, entries, world.sign, ORIGIN)
    vkey_file = world.tmp / "log.vkey"
    vkey_file.write_text(world.vkey + "\n")
    ledger_dir = world.tmp / "ledgers"
    ledger_dir.mkdir()
    (ledger_dir / "ledger-today.json").write_text(json.dumps(world.ledger(entries).document))
    with serve(world.folder) as url:
        args = ["audit", "--url", url, "--log-vkey", f"@{vkey_file}", "--ca", str(world.fleet.ca_cert),
                "--state", str(world.state), "--ledger", str(ledger_dir), "--json"]
        assert main(args) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["clean"] and out["ledgers_checked"] == 1
        swapped = [*entries[:5], entries[6], entries[5], *entries[7:]]  # same size, other order: another tree
        write_log(world.folder, swapped, world.sign, ORIGIN)
        assert main(args[:-1]) == 1
        text = capsys.readouterr().out
        assert "inconsistent" in text and "ledger_log_root" in text
    state = json.loads(world.state.read_text())
    assert [c["size"] for c in state["checkpoints"]] == [len(entries), len(entries)]  # both kept: evidence


@pytest.mark.parametrize("size", [0, 1, 2, 3, 255, 256, 257, 511, 512, 513, 65_536 // 64])
def test_streaming_tree_matches_the_definition(size: int) -> None:
    entries = [i.to_bytes(4, "big") for i in range(size)]
    tree = StreamingTree(range(size + 1))
    for e in entries:
        tree.append(leaf_hash(e))
    assert tree.root() == mth([leaf(e) for e in entries]) == root_of(entries)
    for n in {0, min(1, size), size // 2, size}:
        assert tree.snapshots[n] == mth([leaf(e) for e in entries[:n]])
    if size >= 256:
        assert tree.tile_hash(1, 0) == mth([leaf(e) for e in entries[:256]])


def test_checkpoint_parsing(world: World) -> None:
    cp = parse_checkpoint(world.sign(f"{ORIGIN}\n3\n{'A' * 43}=\next\n"), world.vkey)
    assert cp.size == 3 and cp.extensions == ("ext",)


def test_worker_processes_give_the_same_report(world: World) -> None:
    """jobs=2: bundles checked in two spawned processes; births met in one worker reach the other (the
    births file), records of a device whose birth is still in flight are re-checked at the end."""
    a, b, c = world.devs
    entries = [a.birth()[1]] + [a.record()[1] for _ in range(700)] + [b.birth()[1]]
    entries += [(a if k % 2 else b).record()[1] for k in range(500)] + [c.record()[1]]  # dev-c: no birth
    bad = bytearray(entries[900])
    bad[-1] ^= 1
    entries[900] = bytes(bad)
    write_log(world.folder, entries, world.sign, ORIGIN)
    ledger = world.ledger(entries)
    with serve(world.folder) as url:
        one = run_audit(url, world.vkey, world.cas, ledgers=[ledger], jobs=1)
        two = run_audit(url, world.vkey, world.cas, ledgers=[ledger], jobs=2)
    assert one.as_json() == two.as_json()
    invalid = [f.index for f in two.findings if f.kind == "record_invalid"]
    assert invalid == [900, len(entries) - 1] and two.records == len(entries) - 2
    # the published ledger counted the two bad entries (an aggregator logs only verified records), so it
    # differs from the one recomputed over what verifies: both devices' entries and the root
    assert kinds(two) == {"record_invalid": 2, "ledger_entry": 2, "ledger_root": 1}


def test_a_tree_with_three_tile_levels(world: World) -> None:
    """70,000 entries (the spec's example: level-0, level-1 and a level-2 partial tile); entries that are not
    records are reported, every tile and the root check out. One hash of a level-1 tile changed is caught."""
    entries = [b"e" + i.to_bytes(4, "big") for i in range(70_000)]
    write_log(world.folder, entries, world.sign, ORIGIN)
    report = world.audit(state=False)
    assert report.counts == {"entry_undecodable": 70_000} and len(report.findings) == 1000
    tile = world.folder / "tile" / "1" / "000"
    data = bytearray(tile.read_bytes())
    data[100] ^= 1
    tile.write_bytes(bytes(data))
    report = world.audit(state=False)
    assert report.counts.get("tile_mismatch") == 1
    assert "tile/1/000" in next(f.detail for f in report.findings if f.kind == "tile_mismatch")

"""The device's log check (agent.log_witness): honest positions pass, every lie fails or is refused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.log_witness import INCONSISTENT, OK, REFUSE, Held, check_log
from envelope import Checkpoint, LogPosition, NoteSigner
from envelope.merkle import consistency_proof, inclusion_proof, leaf_hash, root_of
from envelope.note import sign_checkpoint

SIGNER = NoteSigner("fleet/log", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
ROGUE = NoteSigner("fleet/log", Ed25519PrivateKey.from_private_bytes(bytes(32)))


class Tree:
    def __init__(self, entries: list[bytes]) -> None:
        self.entries = entries
        self.leaves = [leaf_hash(e) for e in entries]

    def node(self, level: int, index: int) -> bytes:
        return root_of(self.leaves[index << level:(index + 1) << level])

    def checkpoint(self, size: int, signer: NoteSigner = SIGNER) -> tuple[Checkpoint, str]:
        cp = Checkpoint("fleet/log", size, root_of(self.leaves[:size]))
        return cp, sign_checkpoint(cp, signer).decode()

    def position(self, index: int, size: int, prev: int) -> LogPosition:
        _, note = self.checkpoint(size)
        cons = consistency_proof(prev, size, self.node) if 0 < prev < size else []
        return LogPosition(note, index, tuple(inclusion_proof(index, size, self.node)), prev, tuple(cons))


def device_log(n: int) -> tuple[Tree, dict[int, bytes]]:
    """n entries; the device's records are every third one, seq 1, 2, ... at indices 0, 3, 6, ..."""
    entries = [b"dev seq %d" % (i // 3 + 1) if i % 3 == 0 else b"other %d" % i for i in range(n)]
    mine = {i // 3 + 1: e for i, e in enumerate(entries) if i % 3 == 0}
    return Tree(entries), mine


def held_from(mine: dict[int, bytes], first: int) -> Held:
    return Held(first if first <= max(mine) else None, max(mine), lambda s: mine.get(s) if s >= first else None)


@given(st.integers(4, 120), st.data())
def test_honest_positions_pass_and_any_changed_byte_is_caught(n: int, data: st.DataObject) -> None:
    tree, mine = device_log(n)
    prev_size = data.draw(st.integers(1, n - 1))
    newest, _ = tree.checkpoint(prev_size)
    size = data.draw(st.integers(prev_size, n))
    seq = data.draw(st.sampled_from(sorted(s for s in mine if (s - 1) * 3 < size)))
    held = held_from(mine, data.draw(st.integers(1, seq)))
    pos = tree.position((seq - 1) * 3, size, prev_size)
    v = check_log(pos, seq, SIGNER.verifier, "fleet/log", newest, held)
    assert v.kind == OK and v.checkpoint is not None and v.checkpoint.size == size
    # a flipped bit anywhere in a proof is a failed proof: evidence, never a delete
    proofs = [("inclusion", list(pos.inclusion)), ("consistency", list(pos.consistency))]
    name, hashes = data.draw(st.sampled_from([p for p in proofs if p[1]] or [("inclusion", [])]))
    if hashes:
        j, bit = data.draw(st.integers(0, len(hashes) - 1)), data.draw(st.integers(0, 255))
        hashes[j] = (int.from_bytes(hashes[j], "big") ^ (1 << bit)).to_bytes(32, "big")
        bad = LogPosition(pos.checkpoint, pos.index, tuple(hashes) if name == "inclusion" else pos.inclusion,
                          pos.prev_size, tuple(hashes) if name == "consistency" else pos.consistency)
        assert check_log(bad, seq, SIGNER.verifier, "fleet/log", newest, held).kind == INCONSISTENT
    # the device's record changed in the log: its own bytes are not at that index
    forged = Tree([e if i != (seq - 1) * 3 else e + b"!" for i, e in enumerate(tree.entries)])
    fpos = forged.position((seq - 1) * 3, size, 0)
    v = check_log(fpos, seq, SIGNER.verifier, "fleet/log", None, held)
    assert v.kind == INCONSISTENT and v.reason == "log_inclusion"


def test_fork_stale_unverifiable_missing_and_bad_signature() -> None:
    tree, mine = device_log(60)
    newest, _ = tree.checkpoint(30)
    held = held_from(mine, 5)
    ok = tree.position(3 * 9, 40, 30)  # seq 10 at index 27
    assert check_log(ok, 10, SIGNER.verifier, "fleet/log", newest, held).kind == OK
    # same size, other root: a fork, whatever else the receipt says
    other = Tree([*tree.entries[:29], b"rewritten", *tree.entries[30:]])
    _, fork_note = other.checkpoint(30)
    fork = LogPosition(fork_note, 27, (), 30, ())
    assert check_log(fork, 4, SIGNER.verifier, "fleet/log", newest, held).reason == "log_fork"
    # a consistency proof from a size the device never verified: refused, not alleged
    assert check_log(tree.position(27, 40, 20), 10, SIGNER.verifier, "fleet/log", newest, held).kind == REFUSE
    # a rewritten past: the new tree does not extend the newest one
    rewritten = Tree([*tree.entries[:3], b"gone", *tree.entries[4:]])
    v = check_log(rewritten.position(27, 40, 30), 10, SIGNER.verifier, "fleet/log", newest, held)
    assert v.kind == INCONSISTENT and v.reason in ("log_consistency", "log_inclusion")
    # an older checkpoint that would delete rows: refused; one that deletes nothing: harmless
    older = tree.position(9, 20, 0)
    assert check_log(older, 4, SIGNER.verifier, "fleet/log", newest, held_from(mine, 3)).reason == "log_stale"
    assert check_log(older, 4, SIGNER.verifier, "fleet/log", newest, held).kind == OK
    # no position while held rows would go; a position for a record beyond what we hold
    assert check_log(None, 6, SIGNER.verifier, "fleet/log", newest, held).reason == "log_missing"
    assert check_log(None, 4, SIGNER.verifier, "fleet/log", newest, held).kind == OK
    assert check_log(tree.position(57, 58, 30), 25, SIGNER.verifier, "fleet/log", newest,
                     Held(5, 15, lambda s: mine.get(s))).reason == "log_unverifiable"
    # a checkpoint not signed by the log key, or for another origin
    _, rogue_note = tree.checkpoint(40, ROGUE)
    rogue = LogPosition(rogue_note, ok.index, ok.inclusion, 30, ok.consistency)
    assert check_log(rogue, 10, SIGNER.verifier, "fleet/log", newest, held).reason == "log_bad_checkpoint"
    assert check_log(ok, 10, SIGNER.verifier, "fleet/other", newest, held).reason == "log_bad_checkpoint"


@pytest.mark.parametrize("first", [1, 11])
def test_first_receipt_is_trusted_on_first_use(first: int) -> None:
    tree, mine = device_log(33)
    pos = tree.position(27, 33, 0)
    v = check_log(pos, 10, SIGNER.verifier, "fleet/log", None, held_from(mine, first))
    assert v.kind == OK and v.checkpoint is not None and v.checkpoint.size == 33


# ---- the shell: ReceiptChecker with [receipts] log_vkey ----------------------------------------------------

def test_checker_keeps_the_checkpoint_and_writes_evidence(tmp_path) -> None:
    import json
    from pathlib import Path

    from agent.receipts import ReceiptChecker, ReceiptRefused
    from tests.support.pki import make_fleet
    from tests.support.receipts import make_receipt

    fleet = make_fleet(tmp_path / "fleet", devices=["dev-a"], aggregators=["agg-1"])
    agg = fleet.aggregators["agg-1"]
    path = str(tmp_path / "dev" / "receipt.cose")
    (tmp_path / "dev").mkdir()
    c = ReceiptChecker("dev-a", str(fleet.ca_cert), None, path, log_vkey=SIGNER.vkey)
    tree, mine = device_log(60)
    held = held_from(mine, 1)
    r = c.check(make_receipt(agg, "dev-a", 1, 5, log=tree.position(12, 30, 0)), 1.0, held=held)
    assert r.settled == 5 and c.witness is not None and c.witness.newest.size == 30
    assert c.witness.doc()["state"] == "ok"
    again = ReceiptChecker("dev-a", str(fleet.ca_cert), None, path, log_vkey=SIGNER.vkey)  # a restart
    assert again.witness is not None and again.witness.newest == c.witness.newest
    forged = Tree([e if i != 27 else b"altered" for i, e in enumerate(tree.entries)])
    with pytest.raises(ReceiptRefused) as ei:
        again.check(make_receipt(agg, "dev-a", 1, 10, log=forged.position(27, 40, 30)), 2.0, held=held)
    assert ei.value.reason == "log_inconsistent"
    doc = again.witness.doc()
    assert doc["state"] == "inconsistent" and doc["size"] == 30 and doc["evidence_files"] == 1
    evidence = json.loads(Path(doc["evidence"]).read_text())
    assert evidence["reason"] == "log_inclusion" and evidence["previous_checkpoint"].startswith("fleet/log\n30\n")
    assert evidence["receipt_checkpoint"].startswith("fleet/log\n40\n") and evidence["log_vkey"] == SIGNER.vkey
    # an out-of-order receipt is kept and tried again once the one before it arrived
    pos50 = tree.position(36, 50, 40)
    with pytest.raises(ReceiptRefused) as ei:
        again.check(make_receipt(agg, "dev-a", 1, 13, log=pos50), 3.0, held=held)
    assert ei.value.reason == "log_unverifiable"
    assert again.check(make_receipt(agg, "dev-a", 1, 10, log=tree.position(27, 40, 30)), 4.0, held=held).settled == 10
    assert [x.settled for x in again.retry_pending(5.0, held)] == [13] and again.witness.newest.size == 50

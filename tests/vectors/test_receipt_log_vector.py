"""The receipt-log vector's log position is real: the device's check accepts it, and refuses any change."""

from __future__ import annotations

import json
from pathlib import Path

from agent.log_witness import INCONSISTENT, OK, Held, check_log
from envelope import NoteVerifier, open_receipt
from envelope.note import open_checkpoint

VECTOR = Path(__file__).parent / "receipt" / "receipt-log.json"


def test_the_log_position_checks_against_the_proven_entry() -> None:
    doc = json.loads(VECTOR.read_text())
    receipt, _ = open_receipt(bytes.fromhex(doc["expected"]["receipt_hex"]))
    assert receipt.log is not None
    verifier = NoteVerifier.from_vkey(doc["log"]["vkey"])
    previous, _ = open_checkpoint(doc["log"]["previous_checkpoint"], [verifier], origin=verifier.name)
    entries = [bytes.fromhex(e) for e in doc["log"]["entries_hex"]]
    record = entries[doc["log"]["proven_entry"]]
    held = Held(receipt.settled - 5, receipt.settled, lambda s: record if s == receipt.settled else None)
    v = check_log(receipt.log, receipt.settled, verifier, verifier.name, previous, held)
    assert v.kind == OK and v.checkpoint is not None and (v.checkpoint.size, receipt.log.index) == (42, 41)
    other = Held(held.first, held.last, lambda s: record + b"!")
    assert check_log(receipt.log, receipt.settled, verifier, verifier.name, previous, other).kind == INCONSISTENT

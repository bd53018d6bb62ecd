"""docs/ledger.md lists every finding code ``edge-aggregator audit`` emits, and only those."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_finding_codes_match_the_docs() -> None:
    emitted: set[str] = set()
    for path in (REPO / "aggregator" / "audit").glob("*.py"):
        src = path.read_text()
        emitted |= set(re.findall(r'self\.find\(\s*"([a-z_]+)"', src))
        emitted |= set(re.findall(r'Bad\(index, "([a-z_]+)"', src))
    emitted |= {"duplicate_seq", "bad_gap"}  # LedgerBuilder's anomaly kinds, reported as they are
    text = (REPO / "docs" / "ledger.md").read_text()
    table = text[text.index("| code | meaning |"):]
    rows = re.findall(r"^\| (`[a-z_`, ]+`) \|", table, re.M)
    documented = {c for row in rows for c in re.findall(r"`([a-z_]+)`", row)}
    assert emitted == documented, (sorted(emitted - documented), sorted(documented - emitted))

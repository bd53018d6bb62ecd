"""bench/bench_ledger.py still runs: a tiny ledger build and a tiny audit over HTTP (no timing assertions)."""

from __future__ import annotations

import math

import pytest

from bench import bench_ledger


def test_ledger_bench_rows() -> None:
    folder, _, _ = bench_ledger.make_log(600)
    n = int((folder.parent / "DONE").read_text())
    row = bench_ledger.l1_ledger(bench_ledger._bundle_entries(folder, n), 1)
    assert row["id"] == "G1" and row["value"] > 0 and math.isfinite(row["value"])


@pytest.mark.integration
def test_audit_bench_rows() -> None:
    l2, l3 = bench_ledger.l2_audit(600, 1, 1)
    assert l2["value"] > 0 and l3["value"] > 0 and l3["passed"] in (True, False)

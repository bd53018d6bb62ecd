"""Clock states and clock skew are counted apart, and both are shown (issue 12 item 7).

Round 1: every record said "clock unsynced" while ``stats`` said ``skew_flagged 0``, as if all was well.
Now each stored record counts once under its declared clock state (unsynced / ntp / gnss) and, independently,
under ``skew_flagged`` when it was signed too far from our clock. Table over every (clock state, skew) pair,
on SQLite and PostgreSQL; the store migration that adds the counters (schema version 3) is checked too.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from aggregator import TrustStore, Verifier, open_store
from aggregator.schema import CLOCK_COLUMNS, CLOCK_NAMES, SCHEMA_VERSION
from aggregator.trust import load_certificates
from envelope import labels
from tests.unit.test_agg_support import fleet_with

pytestmark = pytest.mark.integration

PG = "postgresql://postgres@127.0.0.1:5432/test"
SKEWS = {"none": 0, "future": 3_600_000, "past": -3_600_000}  # capture/sign time offset from receipt
CLOCKS = (labels.CLOCK_UNSYNCED, labels.CLOCK_NTP, labels.CLOCK_GNSS)


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield str(tmp_path / "agg.db"), None
        return
    schema = "agg_clock_" + uuid.uuid4().hex[:10]
    try:
        yield PG, schema
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_clock_states_and_skew_are_counted_apart(tmp_path: Path, where: tuple[str, str | None]) -> None:
    url, schema = where
    fleet, (dev,) = fleet_with(tmp_path, "dev-clock")
    verifier = Verifier(TrustStore(load_certificates(fleet.ca_cert)))
    now = int(time.time() * 1000)
    store = open_store(url, schema=schema)
    expect_clock = dict.fromkeys(CLOCK_NAMES.values(), 0)
    expect_skew = 0
    try:
        batch = [verifier.verify(*dev.birth(), now)]
        expect_clock["ntp"] += 1
        for (clock, skew), n in zip(itertools.product(CLOCKS, SKEWS), itertools.count(1), strict=False):
            t = now + SKEWS[skew]
            for _ in range(n):  # a different count per cell, so a swapped counter cannot pass
                batch.append(verifier.verify(*dev.record("result", clock_state=clock, capture_ms=t, iat=t // 1000),
                                             now))
            expect_clock[CLOCK_NAMES[clock]] += n
            expect_skew += n if skew != "none" else 0
        result = store.commit_batch(batch)
        assert result.skew_flagged == expect_skew and dict(result.clock_states) == {
            k: v for k, v in expect_clock.items() if v}
        store.commit_batch(batch[:5])  # duplicates count nowhere
        (stats,) = store.device_stats()
        assert stats["clock_states"] == expect_clock
        assert stats["skew_flagged"] == expect_skew
        assert stats["stored"] == sum(expect_clock.values()) == len(batch)
    finally:
        store.close()
    args = ["stats", "--store", url, *(["--schema", schema] if schema else [])]
    doc = json.loads(subprocess.run([sys.executable, "-m", "aggregator.cli", *args, "--json"], capture_output=True,
                                    text=True, check=True, timeout=60).stdout)
    assert doc[0]["clock_states"] == expect_clock and doc[0]["skew_flagged"] == expect_skew
    table = subprocess.run([sys.executable, "-m", "aggregator.cli", *args], capture_output=True, text=True,
                           check=True, timeout=60).stdout.splitlines()

    def column(name: str) -> str:  # right-aligned under its heading
        end = table[0].index(f" {name} ") + len(name) + 1
        return table[1][end - 8:end].split()[-1]

    assert column("skew") == str(expect_skew)
    assert column("unsynced") == str(expect_clock["unsynced"])


def test_a_version_2_store_is_migrated(tmp_path: Path, where: tuple[str, str | None]) -> None:
    """Drop what version 3 added, mark the store version 2, reopen: the counters come back, counting."""
    url, schema = where
    store = open_store(url, schema=schema)
    store._begin()
    for column in CLOCK_COLUMNS.values():
        store._exec(f"ALTER TABLE devices DROP COLUMN {column}")
    store._exec("UPDATE meta SET value = '2' WHERE name = 'schema_version'")
    store._commit()
    store.close()
    fleet, (dev,) = fleet_with(tmp_path, "dev-migr")
    verifier = Verifier(TrustStore(load_certificates(fleet.ca_cert)))
    now = int(time.time() * 1000)
    birth = verifier.verify(*dev.birth(), now)
    for _ in range(2):  # the second opening finds it done
        store = open_store(url, schema=schema)
        try:
            assert store._exec("SELECT value FROM meta WHERE name = 'schema_version'").fetchall() == [
                (str(SCHEMA_VERSION),)]
            store.commit_batch([birth, verifier.verify(*dev.record("result", clock_state=labels.CLOCK_GNSS), now)])
        finally:
            store.close()
    store = open_store(url, schema=schema, create=False)
    try:
        assert store.device_stats()[0]["clock_states"] == {"unsynced": 0, "ntp": 1, "gnss": 2}
    finally:
        store.close()

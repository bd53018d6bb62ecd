"""The SQLite outbox: contiguous seqs that survive reopening, byte cap with gap records, oversize refusal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.committer import Committer
from agent.errors import OutboxError
from agent.outbox import Draft, Outbox, OutboxReader
from agent.retention import EvictionPlan
from agent.topics import Topics
from envelope import open_record
from provisioning import SoftwareSigner

pytestmark = pytest.mark.integration


@pytest.fixture
def signer() -> SoftwareSigner:
    return SoftwareSigner.generate()


def make_committer(outbox: Outbox, signer: SoftwareSigner) -> Committer:
    import queue

    return Committer(outbox, signer, "dev-1", Topics("edge/v1", "dev-1"), queue.Queue(), lambda rows: None,
                     commit_batch=64, max_record_bytes=4096)


def draft(i: int, size: int = 10) -> Draft:
    return Draft(kind="result", stream="vib", topic="edge/v1/dev-1/result/vib",
                 payload={"i": i, "pad": "x" * size}, capture_ms=1_700_000_000_000 + i)


def commit(outbox: Outbox, c: Committer, drafts: list[Draft], max_record: int = 4096):
    return outbox.commit(drafts, c.seal_draft, max_record, c.gap_draft, 0)


def test_seqs_contiguous_across_reopen_and_epoch_increments(tmp_path: Path, signer: SoftwareSigner) -> None:
    path = str(tmp_path / "o.db")
    ob = Outbox(path, 1 << 20)
    assert ob.begin_epoch() == 1
    c = make_committer(ob, signer)
    r1 = commit(ob, c, [draft(i) for i in range(5)])
    assert [r.seq for r in r1.rows] == [1, 2, 3, 4, 5]
    ob.close()
    ob = Outbox(path, 1 << 20)
    assert ob.begin_epoch() == 2
    c = make_committer(ob, signer)
    r2 = commit(ob, c, [draft(i) for i in range(3)])
    assert [r.seq for r in r2.rows] == [6, 7, 8]
    recs = [open_record(r.payload) for r in r2.rows]
    assert {r.epoch for r in recs} == {2}
    assert [r.seq for r in recs] == [6, 7, 8]
    # Acked rows are deleted; seqs are not reused even when the table empties.
    ob.delete_through(8)
    assert ob.depth == 0
    ob.close()
    ob = Outbox(path, 1 << 20)
    ob.begin_epoch()
    r3 = commit(ob, make_committer(ob, signer), [draft(0)])
    assert [r.seq for r in r3.rows] == [9]
    assert OutboxReader(path).rows_after(0, 10)[0].seq == 9


def test_oversize_record_refused_and_seq_not_consumed(tmp_path: Path, signer: SoftwareSigner) -> None:
    ob = Outbox(str(tmp_path / "o.db"), 1 << 20)
    ob.begin_epoch()
    c = make_committer(ob, signer)
    res = commit(ob, c, [draft(1), draft(2, size=5000), draft(3)], max_record=1024)
    assert [r.seq for r in res.rows] == [1, 2]
    assert len(res.refused) == 1 and res.refused[0][1] > 1024
    assert ob.depth == 2  # refused before the outbox: counted by the committer (Committer.stats)
    payloads = [open_record(r.payload).payload()["i"] for r in res.rows]
    assert payloads == [1, 3]


def test_cap_evicts_oldest_first_with_signed_gap_record(tmp_path: Path, signer: SoftwareSigner) -> None:
    cap = 64 * 1024
    ob = Outbox(str(tmp_path / "o.db"), cap)
    ob.begin_epoch()
    c = make_committer(ob, signer)
    all_rows = []
    for batch in range(40):
        res = commit(ob, c, [draft(batch * 10 + i, size=300) for i in range(10)])
        all_rows += res.rows
        assert ob.stored_bytes <= cap
    assert ob.evicted_records > 0
    gaps = [open_record(r.payload) for r in all_rows if r.topic.endswith("/gap")]
    assert gaps, "a gap record names every eviction"
    first_gap = gaps[0].payload()
    assert first_gap["first"] == 1 and first_gap["reason"] == "outbox_full"
    # Evicted ranges are contiguous from the oldest, and together with the stored rows cover every seq.
    reader = OutboxReader(ob.path)
    stored = [r.seq for r in reader.rows_after(0, 100000)]
    evicted: list[int] = []
    for g in gaps:
        p = g.payload()
        evicted += list(range(p["first"], p["last"] + 1))
    assert sorted(set(evicted) | set(stored)) == list(range(1, ob.last_seq + 1))
    assert not set(evicted) & set(stored)
    assert stored == sorted(stored)
    assert min(stored) == max(evicted) + 1


def test_eviction_plan_type() -> None:
    plan = EvictionPlan((3, 4, 5), 30)
    assert (plan.first, plan.last) == (3, 5)


def test_failed_commit_changes_nothing(tmp_path: Path, signer: SoftwareSigner) -> None:
    path = str(tmp_path / "o.db")
    ob = Outbox(path, 1 << 20)
    ob.begin_epoch()
    c = make_committer(ob, signer)
    commit(ob, c, [draft(1)])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another writer holds the lock: the commit must fail cleanly
    ob._db.execute("PRAGMA busy_timeout=50")
    with pytest.raises(OutboxError, match="cannot commit"):
        commit(ob, c, [draft(2)])
    assert ob.last_seq == 1 and ob.depth == 1
    other.execute("ROLLBACK")
    res = commit(ob, c, [draft(2)])
    assert [r.seq for r in res.rows] == [2]


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="unusable"):
        Outbox(str(path), 1 << 20)

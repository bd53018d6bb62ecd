"""The durable outbox: SQLite in WAL mode with synchronous=FULL, written by one thread (the committer).

A record gets its seq inside the transaction that stores it (seq = last committed + 1, from a persisted
counter, never from rowid), so committed seqs are contiguous and never reused after a crash. Rows stay
until acknowledged (aggregator mode) or PUBACKed (broker mode). The store is capped in bytes: eviction is
oldest first (``agent.retention``) and every eviction adds a signed gap record naming the evicted range.
Readers (the publisher) use their own connection: ``OutboxReader``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import OutboxError
from agent.retention import EvictionPlan, bytes_to_free, plan_eviction

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PAGE_SIZE = 1024  # for new outboxes; see Outbox.__init__
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0,
    payload BLOB NOT NULL,
    created_ms INTEGER NOT NULL
);
"""


_ROWS_PER_INSERT = 100  # 500 parameters: below SQLite's oldest variable limit (999)
_INSERT_SQL: dict[int, str] = {}


def _insert_rows(db: sqlite3.Connection, rows: list[tuple[int, str, int, bytes, int]]) -> None:
    """Insert ``rows`` with one multi-row INSERT per 100 rows.

    One statement is one ``sqlite3_step``, i.e. one GIL release and re-acquire, where ``executemany`` makes
    one per row: under load each re-acquire waits for the pipeline or MQTT thread to yield the GIL.
    """
    for i in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[i : i + _ROWS_PER_INSERT]
        sql = _INSERT_SQL.get(len(chunk))
        if sql is None:
            sql = "INSERT INTO records(seq, topic, retain, payload, created_ms) VALUES " + ",".join(  # noqa: S608
                ["(?,?,?,?,?)"] * len(chunk))
            _INSERT_SQL[len(chunk)] = sql
        db.execute(sql, [v for r in chunk for v in r])


@dataclass(frozen=True)
class Draft:
    """A record waiting for its seq: everything the sealer needs except epoch and seq."""

    kind: str
    stream: str
    topic: str
    payload: dict[str, Any] | bytes  # a map, or its deterministic CBOR already encoded (results)
    capture_ms: int
    clock_state: int = 0
    retain: bool = False
    model_sha256: bytes | None = None
    input_sha256: bytes | None = None
    x5chain: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Row:
    """A committed record as stored."""

    seq: int
    topic: str
    payload: bytes
    retain: bool = False


Sealer = Callable[[Draft, int, int], bytes]
"""(draft, epoch, seq) → signed record bytes."""

GapDraftFactory = Callable[[EvictionPlan], Draft]


@dataclass
class CommitResult:
    """What one group commit did."""

    rows: list[Row] = field(default_factory=list)
    refused: list[tuple[Draft, int]] = field(default_factory=list)  # (draft, size) over the packet limit
    evicted: list[EvictionPlan] = field(default_factory=list)


def _connect(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.Error as e:
        raise OutboxError(f"cannot open outbox database {path}: {e}") from e
    return conn


class Outbox:
    """Writer side of the outbox. Not thread-safe: one committer thread owns it."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._db = _connect(path)
        try:
            # Only takes effect when the file is created. Every commit appends each page it touched to the
            # WAL, and a group of ~430-byte records touches a handful of pages: 1 KiB pages cut the bytes
            # written per record about threefold against 4 KiB ones (docs/benchmarks.md, B7).
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # Debian builds SQLite with SECURE_DELETE: every freed page would be zeroed, i.e. written to the
            # WAL once more. FAST still scrubs deleted rows inside pages that are written anyway.
            self._db.execute("PRAGMA secure_delete=FAST")
            self._db.execute("PRAGMA journal_size_limit=4194304")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0), COUNT(*) FROM records").fetchone()
        except sqlite3.DatabaseError as e:
            raise OutboxError(f"outbox database {path} is unusable: {e}") from e
        self.stored_bytes: int = int(row[0])
        self.depth: int = int(row[1])
        self.last_seq = self._meta("last_seq")
        self.acked_seq = self._meta("acked_seq")
        self.epoch = self._meta("epoch")
        self.evicted_records = self._meta("evicted_records")
        self.evicted_bytes = self._meta("evicted_bytes")
        self.delivered = 0  # rows deleted as delivered (ack or PUBACK) since open: metrics
        version = self._meta("schema_version")
        if version == 0:
            self._set_meta_now("schema_version", SCHEMA_VERSION)
        elif version > SCHEMA_VERSION:
            raise OutboxError(f"outbox {path} has schema {version}; this agent knows up to {SCHEMA_VERSION}")

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value))

    def _set_meta_now(self, key: str, value: int) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._set_meta(key, value)
        self._db.execute("COMMIT")

    def begin_epoch(self) -> int:
        """Increment and persist the boot counter; called once per agent start."""
        try:
            self._set_meta_now("epoch", self.epoch + 1)
        except sqlite3.Error as e:
            raise OutboxError(f"cannot write outbox {self.path}: {e}") from e
        self.epoch += 1
        return self.epoch

    def advance_seq(self, seq: int) -> None:
        """Move the seq counter forward (never back): used when the aggregator has acked beyond it."""
        if seq > self.last_seq:
            self._set_meta_now("last_seq", seq)
            self.last_seq = seq

    def commit(self, drafts: Sequence[Draft], seal: Sealer, max_record_bytes: int,
               gap_draft: GapDraftFactory, now_ms: int, *, delete_seqs: Sequence[int] = ()) -> CommitResult:
        """Seal and store ``drafts`` in one transaction, evicting oldest rows if the cap needs it.

        ``delete_seqs`` (broker mode: PUBACKed rows) are dropped in the same transaction: the pages they
        free are reused by the new rows and written to the WAL once (docs/benchmarks.md, B7).
        Raises ``OutboxError`` (nothing stored or deleted, counters unchanged) when SQLite fails, e.g. disk full.
        """
        result = CommitResult()
        seq = self.last_seq
        stored = self.stored_bytes
        depth = self.depth
        evicted_records = self.evicted_records
        evicted_bytes = self.evicted_bytes
        db = self._db
        inserts: list[tuple[int, str, int, bytes, int]] = []  # written by _insert_rows, a few statements per turn
        removed = 0
        try:
            db.execute("BEGIN IMMEDIATE")
            removed, freed = self._delete_runs(delete_seqs)
            depth -= removed
            stored -= freed
            for draft in drafts:
                data = seal(draft, self.epoch, seq + 1)
                size = len(data)
                if size > max_record_bytes:
                    result.refused.append((draft, size))
                    continue
                need = bytes_to_free(stored, size, self.max_bytes)
                if need:
                    if inserts:  # the eviction plan reads the table: store what this turn sealed so far
                        _insert_rows(db, inserts)
                        inserts.clear()
                    plan = plan_eviction(
                        db.execute("SELECT seq, LENGTH(payload) FROM records ORDER BY seq LIMIT 100000"), need)
                    if plan.seqs:
                        db.execute("DELETE FROM records WHERE seq BETWEEN ? AND ?", (plan.first, plan.last))
                        stored -= plan.freed_bytes
                        depth -= len(plan.seqs)
                        evicted_records += len(plan.seqs)
                        evicted_bytes += plan.freed_bytes
                        result.evicted.append(plan)
                        result.rows = [r for r in result.rows if r.seq > plan.last]
                        # The gap record takes the next seq; the record being stored is re-sealed after it.
                        gap = gap_draft(plan)
                        seq += 1
                        gap_bytes = seal(gap, self.epoch, seq)
                        inserts.append((seq, gap.topic, int(gap.retain), gap_bytes, now_ms))
                        stored += len(gap_bytes)
                        depth += 1
                        result.rows.append(Row(seq, gap.topic, gap_bytes, gap.retain))
                        data = seal(draft, self.epoch, seq + 1)
                        size = len(data)
                seq += 1
                inserts.append((seq, draft.topic, int(draft.retain), data, now_ms))
                stored += size
                depth += 1
                result.rows.append(Row(seq, draft.topic, data, draft.retain))
            if inserts:
                _insert_rows(db, inserts)
            self._set_meta("last_seq", seq)
            if evicted_records != self.evicted_records:
                self._set_meta("evicted_records", evicted_records)
                self._set_meta("evicted_bytes", evicted_bytes)
            db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise OutboxError(f"cannot commit to outbox {self.path}: {e}") from e
        self.last_seq = seq
        self.stored_bytes = stored
        self.depth = depth
        self.delivered += removed
        self.evicted_records = evicted_records
        self.evicted_bytes = evicted_bytes
        for plan in result.evicted:
            log.warning("outbox full (%d bytes cap): evicted seqs %d..%d (%d records, %d bytes), oldest first",
                        self.max_bytes, plan.first, plan.last, len(plan.seqs), plan.freed_bytes)
        return result

    def delete_through(self, seq: int) -> int:
        """Drop every row with seq <= ``seq`` (aggregator ack). Returns rows removed."""
        seq = min(seq, self.last_seq)
        if seq <= self.acked_seq:
            return 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0) FROM records WHERE seq <= ?",
                                   (seq,)).fetchone()
            self._db.execute("DELETE FROM records WHERE seq <= ?", (seq,))
            self._set_meta("acked_seq", seq)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise OutboxError(f"cannot delete acknowledged rows from outbox {self.path}: {e}") from e
        self.acked_seq = seq
        self.delivered += int(row[0])
        self.depth -= int(row[0])
        self.stored_bytes -= int(row[1])
        return int(row[0])

    def delete_seqs(self, seqs: Sequence[int]) -> int:
        """Drop specific rows (broker mode: PUBACK received). Returns rows removed.

        The delete is committed with synchronous=NORMAL: it needs no fsync of its own. The WAL is append-only,
        so the next FULL commit (the next group of records) makes it durable too; a crash before that only
        re-sends rows the broker already has (at-least-once, deduplicated on (device, seq) downstream).
        Without this, every PUBACK batch cost one fsync and throttled the committer (docs/benchmarks.md).
        """
        if not seqs:
            return 0
        try:
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            removed, freed = self._delete_runs(seqs)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise OutboxError(f"cannot delete published rows from outbox {self.path}: {e}") from e
        finally:
            try:
                self._db.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error:  # pragma: no cover - the next commit reports a broken database
                pass
        self.delivered += removed
        self.depth -= removed
        self.stored_bytes -= freed
        return removed

    def _delete_runs(self, seqs: Sequence[int]) -> tuple[int, int]:
        """Delete ``seqs`` inside the open transaction; (rows removed, payload bytes freed)."""
        removed = 0
        freed = 0
        for first, last in _runs(seqs):  # PUBACKs arrive mostly in order: a few range deletes, not one per row
            n, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM records WHERE seq BETWEEN ? AND ?",
                (first, last)).fetchone()
            if n:
                self._db.execute("DELETE FROM records WHERE seq BETWEEN ? AND ?", (first, last))
                removed += int(n)
                freed += int(size)
        return removed, freed

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:  # pragma: no cover
            pass


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous ``(first, last)`` ranges covering exactly the given seqs (any order, duplicates allowed)."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


class OutboxReader:
    """Read side for the publisher: rows after a seq, in seq order, on its own connection."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = _connect(path)

    def rows_after(self, seq: int, limit: int) -> list[Row]:
        try:
            cur = self._db.execute("SELECT seq, topic, payload, retain FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
                                   (seq, limit))
            return [Row(int(s), t, bytes(p), bool(r)) for s, t, p, r in cur]
        except sqlite3.Error as e:
            raise OutboxError(f"cannot read outbox {self.path}: {e}") from e

    def first_seq(self) -> int | None:
        row = self._db.execute("SELECT MIN(seq) FROM records").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def close(self) -> None:
        self._db.close()

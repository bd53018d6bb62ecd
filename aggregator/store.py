"""The record store: SQLite (a file path, the default) or PostgreSQL (a ``postgresql://`` URL, psycopg 3).

One connection, owned by one thread (the service's store thread). ``commit_batch`` applies a batch of
verified records in one transaction: lock the devices' rows, plan with the pure sequence rules, insert
idempotently on (device, seq), record gaps and rejects, advance the contiguous point, commit. Only what
this returns after the commit may be acknowledged. Several workers may share one PostgreSQL: device rows
are locked in sorted order, so concurrent batches for one device serialise and each seq is stored once.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from collections import Counter
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from aggregator.errors import StoreError, StoreNotFound
from aggregator.presence import Presence, PresenceEvent, apply_presence
from aggregator.schema import (
    CLOCK_COLUMNS,
    CLOCK_NAMES,
    MIGRATIONS,
    SCHEMA_LOCK_KEY,
    SCHEMA_VERSION,
    SchemaVersionError,
    ddl,
    log_indexes,
    migration_plan,
)
from aggregator.sequence import DUPLICATE, EPOCH_REGRESSION, DeviceBook
from aggregator.settle import is_permanent, low_water_of
from aggregator.verifier import SKEW_FUTURE, SKEW_PAST, VerifiedRecord
from envelope import labels
from envelope.merkle import EMPTY_ROOT, StoredTile, TileBuilder, decode_tile, leaf_hash, partial_tiles

log = logging.getLogger(__name__)

_DEVICE_COLS = "contiguous_seq, contiguous_epoch, max_seq, max_epoch, version, last_seen_ms, online, status_ms"
_RECORD_COLS = ("device_id, seq, epoch, kind, stream, iat, capture_ms, clock_state, skew_flags, received_ms, "
                "kid, model_sha256, input_sha256, record")
_DETAIL_MAX = 300
_ADD_COLUMN = re.compile(r"^\s*ALTER TABLE (\w+) ADD COLUMN (\w+)\b", re.IGNORECASE)
LOG_LOCK_KEY = 0x6C6F67696E746772  # pg advisory lock of the log integrator ("logintgr")


@dataclass(frozen=True)
class RejectEvent:
    """One refused record, to be counted under (device, reason)."""

    device_id: str
    reason: str
    received_ms: int
    detail: str = ""
    seq: int | None = None  # known when the record parsed: a permanent reject then settles this seq
    epoch: int | None = None


@dataclass
class _Delta:
    stored: int = 0
    duplicates: int = 0
    reorders: int = 0
    gaps_opened: int = 0
    gap_seqs: int = 0
    policy_gap_seqs: int = 0
    skew_flagged: int = 0
    clock: Counter[int] = field(default_factory=Counter)  # stored records by declared clock state
    last_seen_ms: int = 0
    kid: str | None = None
    online: int | None = None
    status_ms: int | None = None
    presence: Presence = field(default_factory=Presence)  # as stored before this batch


@dataclass
class BatchResult:
    """What one committed batch did; ``acks`` holds (contiguous seq, its epoch) per device to acknowledge."""

    stored: int = 0
    duplicates: int = 0
    reorders: int = 0
    gaps_opened: int = 0
    gap_seqs: int = 0
    policy_gap_seqs: int = 0
    skew_flagged: int = 0
    clock_states: Counter[str] = field(default_factory=Counter)  # stored records by clock state name
    rejected: Counter[str] = field(default_factory=Counter)
    acks: dict[str, tuple[int, int]] = field(default_factory=dict)
    force_ack: set[str] = field(default_factory=set)  # duplicates seen: re-send the ack even if unchanged
    settled_rejects: dict[str, dict[int, str]] = field(default_factory=dict)  # device -> {seq: reason}, new
    equivocations: int = 0


@dataclass(frozen=True)
class LogEntry:
    """One leaf of the transparency log: its index and the stored record (the exact bytes received)."""

    index: int
    device_id: str
    seq: int
    record: bytes
    epoch: int = 0  # filled where the caller needs it (receipts)


@dataclass(frozen=True)
class LogAppend:
    """What one integration transaction did: entries ``[first, size)`` now have indices; ``root`` of ``size``."""

    first: int
    size: int
    root: bytes

    @property
    def count(self) -> int:
        return self.size - self.first


@dataclass(frozen=True)
class SavedCheckpoint:
    """A signed checkpoint as kept in ``log_checkpoints``: ``note`` is the exact signed-note text."""

    size: int
    root: bytes
    issued_ms: int
    issuer: str
    note: str


class Store:
    """A SQLite or PostgreSQL record store. Create with ``open_store``."""

    def __init__(self, conn: Any, dialect: str, where: str, *, schema: str | None = None,
                 create: bool = True) -> None:
        self._conn = conn
        self.dialect = dialect
        self.where = where
        self._books: dict[str, tuple[int, DeviceBook]] = {}
        self._versions: dict[str, int] = {}
        self._log_lead = False  # this connection holds the integrator's advisory lock
        if create:
            self._create_schema(schema)
        else:
            self._check_schema()

    # ---- plumbing ----------------------------------------------------------------------------------

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self._conn.cursor()
        cur.execute(self._q(sql), params)
        return cur

    def _begin(self) -> None:
        if self.dialect == "sqlite":
            self._conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self._conn.commit() if self.dialect == "postgresql" else self._conn.execute("COMMIT")

    def _rollback(self) -> None:
        try:
            if self.dialect == "postgresql":
                self._conn.rollback()
            elif self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except Exception:  # the connection may be gone; the next call reports that
            log.debug("rollback failed", exc_info=True)

    def _create_schema(self, schema: str | None) -> None:
        """Create or migrate the tables, once, whoever else starts at the same moment.

        One transaction: SQLite's ``BEGIN IMMEDIATE`` and PostgreSQL's advisory lock make concurrent openers
        wait for each other, so the first creates (or migrates) and the rest find it done.
        """
        blob = "BYTEA" if self.dialect == "postgresql" else "BLOB"
        try:
            self._begin()
            if self.dialect == "postgresql":
                self._exec("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
                if schema:
                    self._exec(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            existed = self._has_meta()
            for stmt in ddl(blob):
                self._exec(stmt)
            row = self._exec("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() if existed else None
            current = int(row[0]) if row is not None else None
            for version in migration_plan(current):
                for stmt in MIGRATIONS[version]:
                    self._migrate(stmt)
            for stmt in log_indexes():
                self._exec(stmt)
            self._exec("INSERT INTO meta (name, value) VALUES ('schema_version', ?) ON CONFLICT (name) "
                       "DO UPDATE SET value = excluded.value", (str(SCHEMA_VERSION),))
            self._commit()
        except SchemaVersionError as e:
            self._rollback()
            raise StoreError(f"{self.where}: {e}") from e
        except Exception as e:
            self._rollback()
            raise StoreError(f"{self.where}: cannot create the schema: {e}") from e

    def _migrate(self, stmt: str) -> None:
        """One migration statement. ``ADD COLUMN`` is skipped where ``ddl()`` already made the column (a table
        the old store lacked is created in the latest layout), so each step is idempotent."""
        m = _ADD_COLUMN.match(stmt)
        if m is not None and self._has_column(m.group(1), m.group(2)):
            return
        self._exec(stmt)

    def _has_column(self, table: str, column: str) -> bool:
        if self.dialect == "postgresql":
            return self._exec("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                              "AND table_name = ? AND column_name = ?", (table, column)).fetchone() is not None
        return any(r[1] == column for r in self._exec(f"PRAGMA table_info({table})").fetchall())

    def _has_meta(self) -> bool:
        if self.dialect == "postgresql":
            return self._exec("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0] is True
        return self._exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is not None

    def _check_schema(self) -> None:
        """Read-only opening: the store must already be an edge-aggregator store this code can read."""
        try:
            if not self._has_meta():
                raise StoreNotFound(f"{self.where} is not an edge-aggregator store (no tables): check the path, "
                                    "URL or schema", self.where)
            row = self._exec("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
            self._end_read()
        except StoreNotFound:
            self._end_read()
            raise
        except Exception as e:
            self._rollback()
            raise StoreError(f"{self.where}: cannot read the store: {e}") from e
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"{self.where}: store schema version {row[0]} is newer than this aggregator's "
                             f"({SCHEMA_VERSION}): upgrade edge-aggregator")

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:
            log.debug("close failed", exc_info=True)

    # ---- the write path ------------------------------------------------------------------------------

    def commit_batch(self, items: Sequence[VerifiedRecord], rejects: Sequence[RejectEvent] = (),
                     presence: Sequence[PresenceEvent] = ()) -> BatchResult:
        """Apply one batch in one transaction; raises ``StoreError`` (nothing committed) on I/O failure.

        ``presence``: the batch's status-topic events in arrival order (``aggregator.presence``), applied
        whatever the sequence rules decide about the records that carried them.
        """
        result = BatchResult()
        settling = [r for r in rejects if r.device_id and r.seq is not None and 1 <= r.seq < 2**63
                    and is_permanent(r.reason)]
        devices = sorted({vr.device_id for vr in items} | {e.device_id for e in presence}
                         | {r.device_id for r in settling})
        all_rejects = list(rejects)
        second_copies: list[VerifiedRecord] = []
        try:
            self._begin()
            books, deltas = self._lock_devices(devices)
            candidates = []
            for vr in items:
                book, delta = books[vr.device_id], deltas[vr.device_id]
                decision = book.admit(vr.seq, vr.epoch)
                if decision.verdict == EPOCH_REGRESSION:
                    event = RejectEvent(vr.device_id, "epoch_regression", vr.received_ms, decision.detail, vr.seq,
                                        vr.epoch)
                    all_rejects.append(event)
                    settling.append(event)
                elif decision.verdict == DUPLICATE:
                    delta.duplicates += 1
                    result.force_ack.add(vr.device_id)
                    second_copies.append(vr)
                else:
                    candidates.append((vr, decision))
            inserted = self._insert_records([vr for vr, _ in candidates])
            for (vr, decision), new in zip(candidates, inserted, strict=True):
                book, delta = books[vr.device_id], deltas[vr.device_id]
                delta.last_seen_ms = max(delta.last_seen_ms, vr.received_ms)
                if not new:
                    book.duplicate(vr.seq)
                    delta.duplicates += 1
                    result.force_ack.add(vr.device_id)
                    second_copies.append(vr)
                    continue
                book.stored(vr.seq, vr.epoch)
                delta.stored += 1
                delta.kid = vr.record.kid.hex()
                delta.reorders += decision.reorder
                if decision.gap_opened:
                    delta.gaps_opened += 1
                    delta.gap_seqs += decision.gap_opened
                if vr.skew_flags & (SKEW_FUTURE | SKEW_PAST):
                    delta.skew_flagged += 1
                delta.clock[vr.record.clock_state] += 1  # separately: an unsynced clock is not (yet) skew
                if vr.gap is not None:
                    g = vr.gap
                    self._exec("INSERT INTO gaps (device_id, record_seq, first_seq, last_seq, count, bytes, reason, "
                               "epoch, received_ms) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                               (vr.device_id, vr.seq, g.first, g.last, g.count, g.bytes, g.reason[:100], vr.epoch,
                                vr.received_ms))
                    delta.policy_gap_seqs += book.cover(g.first, g.last, vr.epoch)
                if vr.learned:
                    self._save_key(vr)
                if vr.record.kind in (labels.KIND_STATUS, labels.KIND_TELEMETRY):
                    self._note_low_water(vr, book)
                    self._note_log_size(vr)
            result.equivocations += self._check_equivocation(second_copies)
            self._settle_rejects(settling, books, result)
            for device_id in {e.device_id for e in presence}:
                delta = deltas[device_id]
                now = apply_presence(delta.presence, [e for e in presence if e.device_id == device_id])
                if now != delta.presence:
                    delta.online, delta.status_ms = now.online, now.status_ms
            for device_id in devices:
                book, delta = books[device_id], deltas[device_id]
                if book.advance():
                    result.acks[device_id] = (book.contiguous, book.contiguous_epoch)
                self._update_device(device_id, book, delta)
                for name in ("stored", "duplicates", "reorders", "gaps_opened", "gap_seqs", "policy_gap_seqs",
                             "skew_flagged"):
                    setattr(result, name, getattr(result, name) + getattr(delta, name))
                result.clock_states.update({CLOCK_NAMES[k]: n for k, n in delta.clock.items()})
            self._count_rejects(all_rejects)
            self._commit()
        except Exception as e:
            self._rollback()
            for device_id in devices:
                self._books.pop(device_id, None)
            raise StoreError(f"{self.where}: batch of {len(items)} records not committed: {e}") from e
        for device_id in devices:
            self._books[device_id] = (self._versions[device_id] + 1, books[device_id])
        for d in result.force_ack | set(result.settled_rejects):
            if d not in result.acks:
                result.acks[d] = (books[d].contiguous, books[d].contiguous_epoch)
        result.rejected.update(r.reason for r in all_rejects)
        return result

    def _note_low_water(self, vr: VerifiedRecord, book: DeviceBook) -> None:
        """A verified birth/telemetry payload's low-water mark settles every seq below it (DESIGN §8)."""
        try:
            low = low_water_of(vr.payload if vr.payload is not None else vr.record.payload())
        except Exception:  # a payload that does not decode carries no mark
            low = None
        if low is None or low <= 1:
            return
        book.cover(1, low - 1, vr.epoch)
        self._exec("INSERT INTO device_marks AS m (device_id, low_water, epoch, received_ms) VALUES (?,?,?,?) "
                   "ON CONFLICT (device_id) DO UPDATE SET low_water = excluded.low_water, epoch = excluded.epoch, "
                   "received_ms = excluded.received_ms WHERE excluded.low_water > m.low_water",
                   (vr.device_id, low, vr.epoch, vr.received_ms))

    def _note_log_size(self, vr: VerifiedRecord) -> None:
        """The newest log checkpoint size the device verified (birth ``log_size``, telemetry
        ``receipts.log_size``): its next receipt's consistency proof starts there (DESIGN §9)."""
        try:
            doc = vr.record.payload()
        except Exception:
            return
        size = doc.get("log_size") if vr.record.kind == labels.KIND_STATUS else \
            (doc.get("receipts") or {}).get("log_size") if isinstance(doc.get("receipts"), dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size < 2**63:
            return
        self._exec("INSERT INTO log_receipts (device_id, size) VALUES (?, ?) ON CONFLICT (device_id) DO UPDATE "
                   "SET size = excluded.size", (vr.device_id, size))

    def _settle_rejects(self, settling: Sequence[RejectEvent], books: dict[str, DeviceBook],
                        result: BatchResult) -> None:
        """Permanent rejects of seqs not stored and not settled yet: persisted, covered, reported once."""
        for r in settling:
            assert r.seq is not None
            book = books[r.device_id]
            if r.seq <= book.contiguous or r.seq in book.stored_above:
                continue  # already settled or stored: a bad copy of a good record changes nothing
            cur = self._exec("INSERT INTO settled_rejects (device_id, seq, epoch, reason, received_ms) "
                             "VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                             (r.device_id, r.seq, r.epoch or 0, r.reason, r.received_ms))
            book.cover(r.seq, r.seq, r.epoch or book.max_epoch)
            if cur.rowcount == 1:
                result.settled_rejects.setdefault(r.device_id, {})[r.seq] = r.reason

    def _check_equivocation(self, copies: Sequence[VerifiedRecord]) -> int:
        """Second copies of a stored (device, seq): equal bytes are duplicates, different bytes evidence."""
        found = 0
        for vr in copies:
            row = self._exec("SELECT record FROM records WHERE device_id = ? AND seq = ?",
                             (vr.device_id, vr.seq)).fetchone()
            if row is None or bytes(row[0]) == vr.record.raw:
                continue
            digest = hashlib.sha256(vr.record.raw).hexdigest()
            cur = self._exec("INSERT INTO equivocations (device_id, seq, epoch, sha256, received_ms, record) "
                             "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                             (vr.device_id, vr.seq, vr.epoch, digest, vr.received_ms, vr.record.raw))
            if cur.rowcount == 1:
                found += 1
                log.warning("equivocation: %s signed two different records with seq %d (evidence kept)",
                            vr.device_id, vr.seq)
        return found

    def _lock_devices(self, devices: Sequence[str]) -> tuple[dict[str, DeviceBook], dict[str, _Delta]]:
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
        books: dict[str, DeviceBook] = {}
        deltas: dict[str, _Delta] = {}
        self._versions = {}
        for device_id in devices:
            sql = f"SELECT {_DEVICE_COLS} FROM devices WHERE device_id = ?{lock}"  # noqa: S608 - constants only
            row = self._exec(sql, (device_id,)).fetchone()
            if row is None:
                self._exec("INSERT INTO devices (device_id) VALUES (?) ON CONFLICT DO NOTHING", (device_id,))
                row = self._exec(sql, (device_id,)).fetchone()
            c, ce, m, me, version, last_seen, online, status_ms = row
            self._versions[device_id] = version
            cached = self._books.get(device_id)
            if cached is not None and cached[0] == version:
                books[device_id] = cached[1]
            else:
                books[device_id] = self._load_book(device_id, c, ce, m, me)
            deltas[device_id] = _Delta(last_seen_ms=last_seen or 0, presence=Presence(online, status_ms))
        return books, deltas

    def _load_book(self, device_id: str, c: int, ce: int, m: int, me: int) -> DeviceBook:
        stored = dict(self._exec("SELECT seq, epoch FROM records WHERE device_id = ? AND seq > ?",
                                 (device_id, c)).fetchall())
        policy = [tuple(r) for r in self._exec("SELECT first_seq, last_seq, epoch FROM gaps WHERE device_id = ? "
                                               "AND last_seq > ? ORDER BY first_seq", (device_id, c)).fetchall()]
        book = DeviceBook(c, ce, m, me, stored, [])
        for first, last, epoch in policy:
            book.cover(first, last, epoch)
        for seq, epoch in self._exec("SELECT seq, epoch FROM settled_rejects WHERE device_id = ? AND seq > ?",
                                     (device_id, c)).fetchall():
            book.cover(seq, seq, epoch)
        mark = self._exec("SELECT low_water, epoch FROM device_marks WHERE device_id = ?", (device_id,)).fetchone()
        if mark is not None and mark[0] - 1 > c:
            book.cover(1, mark[0] - 1, mark[1])
        return book

    def _insert_records(self, items: Sequence[VerifiedRecord]) -> list[bool]:
        if not items:
            return []
        sql = self._q(f"INSERT INTO records ({_RECORD_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "  # noqa: S608
                      "ON CONFLICT DO NOTHING")
        rows = [(vr.device_id, vr.seq, vr.epoch, vr.record.kind, vr.record.stream, vr.record.iat,
                 vr.record.capture_ms, vr.record.clock_state, vr.skew_flags, vr.received_ms, vr.record.kid,
                 vr.record.model_sha256, vr.record.input_sha256, vr.record.raw) for vr in items]
        cur = self._conn.cursor()
        if self.dialect == "sqlite":
            out = []
            for row in rows:
                cur.execute(sql, row)
                out.append(cur.rowcount == 1)
            return out
        cur.executemany(sql + " RETURNING seq", rows, returning=True)
        out = []
        while True:
            out.append(cur.fetchone() is not None)
            if not cur.nextset():
                break
        return out

    def _update_device(self, device_id: str, book: DeviceBook, d: _Delta) -> None:
        self._exec(
            "UPDATE devices SET contiguous_seq = ?, contiguous_epoch = ?, max_seq = ?, max_epoch = ?, "
            "version = version + 1, kid = COALESCE(?, kid), first_seen_ms = COALESCE(first_seen_ms, ?), "
            "last_seen_ms = ?, online = COALESCE(?, online), status_ms = COALESCE(?, status_ms), "
            "stored = stored + ?, duplicates = duplicates + ?, reorders = reorders + ?, "
            "gaps_opened = gaps_opened + ?, gap_seqs = gap_seqs + ?, policy_gap_seqs = policy_gap_seqs + ?, "
            "skew_flagged = skew_flagged + ?, clock_unsynced = clock_unsynced + ?, clock_ntp = clock_ntp + ?, "
            "clock_gnss = clock_gnss + ? WHERE device_id = ?",
            (book.contiguous, book.contiguous_epoch, book.max_seq, book.max_epoch, d.kid,
             d.last_seen_ms or d.status_ms, d.last_seen_ms or d.status_ms, d.online, d.status_ms, d.stored,
             d.duplicates, d.reorders, d.gaps_opened, d.gap_seqs, d.policy_gap_seqs, d.skew_flagged,
             *(d.clock[state] for state in CLOCK_COLUMNS), device_id))

    def _count_rejects(self, rejects: Iterable[RejectEvent]) -> None:
        agg: dict[tuple[str, str], list[Any]] = {}
        for r in rejects:
            entry = agg.setdefault((r.device_id, r.reason), [0, r.received_ms, r.received_ms, ""])
            entry[0] += 1
            entry[1] = min(entry[1], r.received_ms)
            entry[2] = max(entry[2], r.received_ms)
            entry[3] = r.detail[:_DETAIL_MAX]
        for (device_id, reason), (n, first, last, detail) in sorted(agg.items()):
            self._exec("INSERT INTO rejects AS r (device_id, reason, count, first_ms, last_ms, last_detail) "
                       "VALUES (?,?,?,?,?,?) ON CONFLICT (device_id, reason) DO UPDATE SET "
                       "count = r.count + excluded.count, last_ms = excluded.last_ms, "
                       "last_detail = excluded.last_detail", (device_id, reason, n, first, last, detail))

    def _save_key(self, vr: VerifiedRecord) -> None:
        chain = cbor2.dumps(list(vr.record.x5chain))
        self._exec("INSERT INTO device_keys (kid, device_id, chain, learned_ms) VALUES (?,?,?,?) "
                   "ON CONFLICT (kid) DO UPDATE SET device_id = excluded.device_id, chain = excluded.chain, "
                   "learned_ms = excluded.learned_ms", (vr.record.kid.hex(), vr.device_id, chain, vr.received_ms))

    def count_rejects(self, rejects: Sequence[RejectEvent]) -> None:
        """Count rejects on their own (when a batch holds nothing else)."""
        if rejects:
            self.commit_batch((), rejects)

    # ---- the read path -------------------------------------------------------------------------------

    def learned_keys(self) -> list[tuple[str, bytes, list[bytes]]]:
        """(device, kid, x5chain) of every key learned from a birth record, for a restarted worker."""
        rows = self._exec("SELECT device_id, kid, chain FROM device_keys").fetchall()
        self._end_read()
        return [(d, bytes.fromhex(k), list(cbor2.loads(bytes(c)))) for d, k, c in rows]

    def acks_for(self, devices: Iterable[str]) -> dict[str, tuple[int, int]]:
        """Current (contiguous seq, epoch) of ``devices`` as committed by any worker."""
        out = {}
        for d in devices:
            row = self._exec("SELECT contiguous_seq, contiguous_epoch FROM devices WHERE device_id = ?",
                             (d,)).fetchone()
            if row is not None:
                out[d] = (int(row[0]), int(row[1]))
        self._end_read()
        return out

    def equivocations(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """Evidence of equivocation: the second record of each (device, seq), with the stored first one."""
        sql = ("SELECT e.device_id, e.seq, e.epoch, e.sha256, e.received_ms, e.record, r.record FROM equivocations e "
               "LEFT JOIN records r ON r.device_id = e.device_id AND r.seq = e.seq")
        params: list[Any] = []
        if device_id:
            sql += " WHERE e.device_id = ?"
            params.append(device_id)
        rows = self._exec(sql + " ORDER BY e.device_id, e.seq, e.received_ms", params).fetchall()
        self._end_read()
        return [{"device_id": d, "seq": int(q), "epoch": int(e), "sha256": h, "received_ms": int(ms),
                 "record": bytes(second), "first": bytes(first) if first is not None else None}
                for d, q, e, h, ms, second, first in rows]

    def _end_read(self) -> None:
        if self.dialect == "postgresql":
            self._conn.rollback()  # end the implicit read transaction so we see other workers' commits

    def model_digest_counts(self) -> list[tuple[str, bytes, int]]:
        """Stored results per (device, model digest): what ``edge-aggregator models`` checks against the
        signed model targets (aggregator.model_registry)."""
        rows = self._exec("SELECT device_id, model_sha256, COUNT(*) FROM records WHERE kind = 'result' "
                          "AND model_sha256 IS NOT NULL GROUP BY device_id, model_sha256 "
                          "ORDER BY device_id").fetchall()
        self._end_read()
        return [(str(d), bytes(m), int(n)) for d, m, n in rows]

    def device_stats(self) -> list[dict[str, Any]]:
        """Per device: sequence state, counters, missing seqs, rejects by reason."""
        cols = ("device_id, contiguous_seq, contiguous_epoch, max_seq, max_epoch, kid, first_seen_ms, last_seen_ms, "
                "online, status_ms, stored, duplicates, reorders, gaps_opened, gap_seqs, policy_gap_seqs, "
                "skew_flagged, " + ", ".join(CLOCK_COLUMNS.values()))
        names = [c.strip() for c in cols.split(",")]
        devices = [dict(zip(names, row, strict=True)) for row in
                   self._exec(f"SELECT {cols} FROM devices ORDER BY device_id").fetchall()]  # noqa: S608
        rejects: dict[str, dict[str, int]] = {}
        for device_id, reason, count in self._exec("SELECT device_id, reason, count FROM rejects").fetchall():
            rejects.setdefault(device_id, {})[reason] = int(count)
        equivocations = {d: int(n) for d, n in self._exec(
            "SELECT device_id, COUNT(*) FROM equivocations GROUP BY device_id").fetchall()}
        settled = {d: int(n) for d, n in self._exec(
            "SELECT device_id, COUNT(*) FROM settled_rejects GROUP BY device_id").fetchall()}
        for dev in devices:
            book = self._load_book(dev["device_id"], dev["contiguous_seq"], dev["contiguous_epoch"], dev["max_seq"],
                                   dev["max_epoch"])
            dev["clock_states"] = {CLOCK_NAMES[k]: int(dev.pop(c)) for k, c in CLOCK_COLUMNS.items()}
            dev["missing"] = book.missing()
            dev["rejects"] = rejects.pop(dev["device_id"], {})
            dev["equivocations"] = equivocations.get(dev["device_id"], 0)
            dev["settled_rejects"] = settled.get(dev["device_id"], 0)
        for device_id, by_reason in sorted(rejects.items()):
            devices.append({"device_id": device_id, "rejects": by_reason, "unknown_device": True})
        self._end_read()
        return devices

    def export(self, since_ms: int = 0, device_id: str | None = None, kind: str | None = None,
               limit: int | None = None) -> Generator[dict[str, Any], None, None]:
        """Stored records received at or after ``since_ms``, oldest first, with the verbatim record bytes."""
        sql = f"SELECT {_RECORD_COLS} FROM records WHERE received_ms >= ?"  # noqa: S608 - values are bound
        params: list[Any] = [since_ms]
        if device_id:
            sql += " AND device_id = ?"
            params.append(device_id)
        if kind:
            sql += " AND kind = ?"
            params.append(kind)
        sql += " ORDER BY received_ms, device_id, seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        names = [c.strip() for c in _RECORD_COLS.split(",")]
        cur = (self._conn.cursor(name="edge_export") if self.dialect == "postgresql" else self._conn.cursor())
        cur.execute(self._q(sql), params)
        try:
            for row in cur:
                yield {n: (bytes(v) if isinstance(v, (memoryview, bytearray)) else v)
                       for n, v in zip(names, row, strict=True)}
        finally:
            cur.close()
            self._end_read()

    # ---- the transparency log (DESIGN §9; aggregator.tlog drives these) --------------------------------------

    def log_try_lead(self) -> bool:
        """Try to become the log's integrator (PostgreSQL: a session advisory lock; SQLite: the single writer).

        True when this connection holds the lock (again); it is released when the connection closes, so a
        worker that dies hands over to whichever worker asks next.
        """
        if self.dialect != "postgresql" or self._log_lead:
            return True
        try:
            self._log_lead = bool(self._exec("SELECT pg_try_advisory_lock(?)", (LOG_LOCK_KEY,)).fetchone()[0])
            self._conn.commit()
        except Exception as e:
            self._rollback()
            raise StoreError(f"{self.where}: cannot take the log lock: {e}") from e
        return self._log_lead

    def log_state(self) -> tuple[int, bytes]:
        """(size, root) of the integrated tree; (0, hash of the empty string) before the first entry."""
        row = self._exec("SELECT size, root FROM log_state WHERE id = 1").fetchone()
        self._end_read()
        return (0, EMPTY_ROOT) if row is None else (int(row[0]), bytes(row[1]))

    def log_integrate(self, builder: TileBuilder | None, max_entries: int, now_ms: int
                      ) -> tuple[TileBuilder | None, LogAppend | None]:
        """Give the next committed, unlogged records indices, in commit order, and store the new tiles.

        One transaction, serialised on the ``log_state`` row: indices are assigned once even if two workers
        integrate at the same time. ``builder`` is the caller's in-memory tree (reused when its size matches,
        else rebuilt from the stored partial tiles); returns it with what was appended (None: nothing
        pending). On failure nothing is committed, the builder is dropped and ``StoreError`` raised.
        """
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
        try:
            self._begin()
            row = self._exec(f"SELECT size FROM log_state WHERE id = 1{lock}").fetchone()  # noqa: S608
            if row is None:
                self._exec("INSERT INTO log_state (id, size, root, updated_ms) VALUES (1, 0, ?, ?) "
                           "ON CONFLICT (id) DO NOTHING", (EMPTY_ROOT, now_ms))
                row = self._exec(f"SELECT size FROM log_state WHERE id = 1{lock}").fetchone()  # noqa: S608
            size = int(row[0])
            # SQLite: rowid order is commit order (one writer), and the rowid is the cheapest way back to the row
            key, order = (("rowid", "rowid") if self.dialect == "sqlite" else
                          ("device_id, seq", "received_ms, device_id, seq"))
            pending = self._exec(f"SELECT record, {key} FROM records WHERE log_index IS NULL "  # noqa: S608
                                 f"ORDER BY {order} LIMIT {int(max_entries)}").fetchall()
            if not pending:
                self._commit()
                return builder, None
            if builder is None or builder.size != size:
                builder = TileBuilder.resume(size, self._read_tiles([(lv, ix) for lv, ix, _ in partial_tiles(size)]))
            builder.extend(leaf_hash(bytes(row[0])) for row in pending)
            cur = self._conn.cursor()
            where = "rowid = ?" if self.dialect == "sqlite" else "device_id = ? AND seq = ?"
            cur.executemany(self._q(f"UPDATE records SET log_index = ? WHERE {where}"),  # noqa: S608
                            [(size + i, *row[1:]) for i, row in enumerate(pending)])
            cur.executemany(self._q("INSERT INTO log_tiles (level, idx, width, nodes) VALUES (?,?,?,?) "
                                    "ON CONFLICT (level, idx) DO UPDATE SET width = excluded.width, "
                                    "nodes = excluded.nodes"),
                            [(t.level, t.index, t.width, t.data) for t in builder.take_dirty()])
            root = builder.root()
            self._exec("UPDATE log_state SET size = ?, root = ?, updated_ms = ? WHERE id = 1",
                       (builder.size, root, now_ms))
            self._commit()
        except Exception as e:
            self._rollback()
            raise StoreError(f"{self.where}: log integration not committed: {e}") from e
        return builder, LogAppend(size, builder.size, root)

    def _read_tiles(self, keys: Sequence[tuple[int, int]]) -> list[StoredTile]:
        out = []
        for level, index in keys:
            row = self._exec("SELECT width, nodes FROM log_tiles WHERE level = ? AND idx = ?",
                             (level, index)).fetchone()
            if row is not None:
                out.append(decode_tile(level, index, int(row[0]), bytes(row[1])))
        return out

    def log_tile(self, level: int, index: int) -> StoredTile | None:
        """The stored tile (rows 0..7, its latest width), or None."""
        try:
            tiles = self._read_tiles([(level, index)])
        finally:
            self._end_read()
        return tiles[0] if tiles else None

    def log_entries(self, start: int, end: int) -> list[LogEntry]:
        """Leaves ``[start, end)`` that have an index, in index order (a missing row is simply absent)."""
        rows = self._exec("SELECT log_index, device_id, seq, record FROM records WHERE log_index >= ? "
                          "AND log_index < ? ORDER BY log_index", (start, end)).fetchall()
        self._end_read()
        return [LogEntry(int(i), d, int(q), bytes(r)) for i, d, q, r in rows]

    def log_index_of(self, device_id: str, seq: int) -> int | None:
        """The leaf index of a stored record (None while not yet integrated or not stored)."""
        row = self._exec("SELECT log_index FROM records WHERE device_id = ? AND seq = ?", (device_id, seq)).fetchone()
        self._end_read()
        return None if row is None or row[0] is None else int(row[0])

    def log_uncovered(self, size: int) -> dict[str, int]:
        """Per device, the lowest stored seq a checkpoint of ``size`` does not cover yet (unlogged or newer)."""
        out: dict[str, int] = {}
        for sql, params in (("SELECT device_id, MIN(seq) FROM records WHERE log_index IS NULL GROUP BY device_id", ()),
                            ("SELECT device_id, MIN(seq) FROM records WHERE log_index >= ? GROUP BY device_id",
                             (size,))):
            for device_id, seq in self._exec(sql, params).fetchall():
                out[device_id] = min(int(seq), out.get(device_id, int(seq)))
        self._end_read()
        return out

    def log_newest_stored(self, device_id: str, max_seq: int) -> LogEntry | None:
        """The device's newest stored record with seq <= ``max_seq`` (index -1 while not integrated)."""
        row = self._exec("SELECT log_index, seq, record, epoch FROM records WHERE device_id = ? AND seq <= ? "
                         "ORDER BY seq DESC LIMIT 1", (device_id, max_seq)).fetchone()
        self._end_read()
        if row is None:
            return None
        return LogEntry(-1 if row[0] is None else int(row[0]), device_id, int(row[1]), bytes(row[2]), int(row[3]))

    def log_save_checkpoint(self, cp: SavedCheckpoint, keep: int = 1000) -> None:
        """Keep a signed checkpoint (and only the latest ``keep`` of them)."""
        try:
            self._begin()
            self._exec("INSERT INTO log_checkpoints (size, root, issued_ms, issuer, note) VALUES (?,?,?,?,?)",
                       (cp.size, cp.root, cp.issued_ms, cp.issuer, cp.note))
            self._exec("DELETE FROM log_checkpoints WHERE size < (SELECT MIN(size) FROM (SELECT size FROM "
                       "log_checkpoints ORDER BY size DESC LIMIT ?) AS newest)", (int(keep),))
            self._commit()
        except Exception as e:
            self._rollback()
            raise StoreError(f"{self.where}: checkpoint of size {cp.size} not saved: {e}") from e

    def log_receipt_sizes(self, devices: Sequence[str]) -> dict[str, int]:
        """The checkpoint size of the last receipt with a log position published to each device (any worker)."""
        out = {}
        for d in devices:
            row = self._exec("SELECT size FROM log_receipts WHERE device_id = ?", (d,)).fetchone()
            if row is not None:
                out[d] = int(row[0])
        self._end_read()
        return out

    def log_note_receipt_sizes(self, sizes: dict[str, int]) -> None:
        """Record the checkpoint sizes just published to devices (never moving one backwards)."""
        try:
            self._begin()
            self._conn.cursor().executemany(self._q(
                "INSERT INTO log_receipts AS r (device_id, size) VALUES (?, ?) ON CONFLICT (device_id) DO UPDATE "
                "SET size = excluded.size WHERE excluded.size > r.size"), sorted(sizes.items()))
            self._commit()
        except Exception as e:
            self._rollback()
            raise StoreError(f"{self.where}: receipt log sizes not saved: {e}") from e

    def log_latest_checkpoint(self) -> SavedCheckpoint | None:
        """The newest signed checkpoint, or None before the first."""
        row = self._exec("SELECT size, root, issued_ms, issuer, note FROM log_checkpoints ORDER BY size DESC "
                         "LIMIT 1").fetchone()
        self._end_read()
        if row is None:
            return None
        return SavedCheckpoint(int(row[0]), bytes(row[1]), int(row[2]), str(row[3]), str(row[4]))


def open_store(url: str, *, schema: str | None = None, create: bool = True) -> Store:
    """Open the store named by ``url``: a file path / ``sqlite:`` URL, or ``postgresql://``.

    ``create=True`` (workers) creates the file, schema and tables if needed and migrates them. ``create=False``
    (read-only commands: stats, export) creates nothing: a missing file, schema or table raises
    ``StoreNotFound`` naming it.
    """
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg  # noqa: PLC0415 - optional dependency (extra "postgres")
        except ImportError as e:
            raise StoreError("a postgresql:// store needs psycopg 3: pip install 'depin-edge-agent[postgres]'") from e
        safe = url.rsplit("@", maxsplit=1)[-1]
        where = f"postgresql://{safe}" + (f" schema {schema}" if schema else "")
        try:
            conn = psycopg.connect(url, autocommit=False)
            if schema:
                with conn.cursor() as cur:
                    # Session-wide; the schema itself is created (under the schema lock) by Store.
                    cur.execute(f'SET search_path TO "{schema}"')
                conn.commit()
        except psycopg.Error as e:
            raise StoreError(f"cannot open PostgreSQL store {safe}: {e}") from e
        return Store(conn, "postgresql", where, schema=schema, create=create)
    path = url.removeprefix("sqlite://").removeprefix("sqlite:")
    if not create and (path == ":memory:" or not Path(path).is_file()):
        raise StoreNotFound(f"no store at {path} (nothing was created; check --store or the config's store.url)",
                            path)
    try:
        if create:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            sconn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            sconn.execute("PRAGMA journal_mode=WAL")
            sconn.execute("PRAGMA synchronous=FULL")  # an ack promises durability
        else:
            sconn = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                    check_same_thread=False)
        sconn.execute("PRAGMA busy_timeout=10000")
    except (sqlite3.Error, OSError) as e:
        raise StoreError(f"cannot open SQLite store {path}: {e}") from e
    return Store(sconn, "sqlite", path, create=create)

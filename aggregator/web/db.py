"""Connections of the web layer to the record store, and the table it keeps there (``web_fleet``).

The store's own connection belongs to the store thread, so the web layer opens its own: one writer for the
fleet view (``aggregator.web.tracker``, in the store thread, after each commit) and a small pool of
read-only ones for the pages. Both dialects of ``aggregator.store`` work; SQL here uses ``?`` placeholders
and only constructs both understand. ``web_fleet`` (one row per device: what its birth and telemetry records
said, the rate window, the key, the last receipt), ``web_results`` (result counts and latency per device,
time bucket and label) and ``web_telemetry`` (one row per telemetry record) are derived data, pruned to the
device page's window: losing them loses a plot, not a record, so their writer commits without waiting for
the disk.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aggregator.errors import StoreError

log = logging.getLogger(__name__)

FLEET_COLUMNS: tuple[tuple[str, str], ...] = (
    ("agent_version", "TEXT"), ("runtime", "TEXT"), ("python", "TEXT"), ("machine", "TEXT"), ("key_tier", "TEXT"),
    ("delivery", "TEXT"), ("models", "TEXT"), ("model_sha256", "TEXT"), ("model_version", "TEXT"),
    ("birth_ms", "BIGINT"),
    ("telemetry_ms", "BIGINT"), ("outbox_depth", "BIGINT"), ("outbox_bytes", "BIGINT"),
    ("outbox_oldest_age_s", "DOUBLE PRECISION"), ("low_water", "BIGINT"), ("evicted_records", "BIGINT"),
    ("cpu_percent", "DOUBLE PRECISION"), ("mem_percent", "DOUBLE PRECISION"), ("rss_bytes", "BIGINT"),
    ("temperature_c", "DOUBLE PRECISION"), ("mqtt_state", "TEXT"), ("dev_receipt_settled", "BIGINT"),
    ("dev_receipt_ms", "BIGINT"), ("latency_p50_us", "DOUBLE PRECISION"), ("latency_p99_us", "DOUBLE PRECISION"),
    ("clock_state", "SMALLINT"), ("clock_ms", "BIGINT"),
    ("kid", "TEXT"), ("cert_serial", "TEXT"), ("cert_not_after_ms", "BIGINT"), ("key_ms", "BIGINT"),
    ("revoked", "SMALLINT NOT NULL DEFAULT 0"),
    ("rate_start_ms", "BIGINT NOT NULL DEFAULT 0"), ("rate_prev", "BIGINT NOT NULL DEFAULT 0"),
    ("rate_cur", "BIGINT NOT NULL DEFAULT 0"),
    ("last_label", "TEXT"), ("last_result_ms", "BIGINT"),
    ("receipt_settled", "BIGINT"), ("receipt_epoch", "BIGINT"), ("receipt_ms", "BIGINT"), ("receipt_rejected", "TEXT"),
    ("updated_ms", "BIGINT"),
)

BUCKET_S = 10  # result counts and latencies per device are kept in buckets of this many seconds

DDL = (
    "CREATE TABLE IF NOT EXISTS web_fleet (device_id TEXT PRIMARY KEY, "
    + ", ".join(f"{name} {typ}" for name, typ in FLEET_COLUMNS) + ")",
    # Results per device, bucket and label: additive, so workers of a shared subscription add up.
    """CREATE TABLE IF NOT EXISTS web_results (
        device_id TEXT NOT NULL,
        bucket_ms BIGINT NOT NULL,
        label TEXT NOT NULL,
        n BIGINT NOT NULL,
        lat_n BIGINT NOT NULL,
        lat_sum_us DOUBLE PRECISION NOT NULL,
        lat_max_us DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (device_id, bucket_ms, label)
    )""",
    "CREATE INDEX IF NOT EXISTS web_results_bucket ON web_results (bucket_ms)",
    # One row per telemetry record: the device page's host and outbox plots.
    """CREATE TABLE IF NOT EXISTS web_telemetry (
        device_id TEXT NOT NULL,
        t_ms BIGINT NOT NULL,
        cpu_percent DOUBLE PRECISION,
        mem_percent DOUBLE PRECISION,
        temperature_c DOUBLE PRECISION,
        outbox_depth BIGINT,
        latency_p50_us DOUBLE PRECISION,
        latency_p99_us DOUBLE PRECISION,
        PRIMARY KEY (device_id, t_ms)
    )""",
    "CREATE INDEX IF NOT EXISTS web_telemetry_t ON web_telemetry (t_ms)",
)


class Db:
    """One connection to the store (SQLite file or PostgreSQL), with the dialect's placeholder style."""

    def __init__(self, conn: Any, dialect: str) -> None:
        self.conn = conn
        self.dialect = dialect

    def q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        try:
            cur.execute(self.q(sql), params)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            cur.close()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.conn.cursor()
        try:
            cur.execute(self.q(sql), params)
            return int(cur.rowcount)
        finally:
            cur.close()

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        cur = self.conn.cursor()
        try:
            cur.executemany(self.q(sql), rows)
        finally:
            cur.close()

    def begin(self) -> None:
        if self.dialect == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.commit() if self.dialect == "postgresql" else self.conn.execute("COMMIT")

    def rollback(self) -> None:
        try:
            if self.dialect == "postgresql":
                self.conn.rollback()
            elif self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except Exception:  # the connection may be gone; the next call reports that
            log.debug("rollback failed", exc_info=True)

    def end_read(self) -> None:
        """End the implicit read transaction (PostgreSQL) so the next read sees newer commits."""
        if self.dialect == "postgresql":
            self.conn.rollback()

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            log.debug("close failed", exc_info=True)


def connect(url: str, schema: str | None = None, *, readonly: bool) -> Db:
    """Open a connection to the store named by ``url`` (as in ``[store]``); raises ``StoreError``."""
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg  # noqa: PLC0415 - optional dependency (extra "postgres")
        except ImportError as e:
            raise StoreError("a postgresql:// store needs psycopg 3: pip install 'depin-edge-agent[postgres]'") from e
        safe = url.rsplit("@", maxsplit=1)[-1]
        try:
            conn = psycopg.connect(url, autocommit=False)
            with conn.cursor() as cur:
                if schema:
                    cur.execute(f'SET search_path TO "{schema}"')
                if readonly:
                    cur.execute("SET default_transaction_read_only = on")
            conn.commit()
        except psycopg.Error as e:
            raise StoreError(f"cannot open PostgreSQL store {safe} for the web page: {e}") from e
        return Db(conn, "postgresql")
    path = url.removeprefix("sqlite://").removeprefix("sqlite:")
    if path == ":memory:":
        raise StoreError("the web page needs a store file or PostgreSQL, not :memory:")
    try:
        if not readonly:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        sconn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        sconn.execute("PRAGMA busy_timeout=10000")
        if readonly:
            sconn.execute("PRAGMA query_only=ON")
        else:
            sconn.execute("PRAGMA journal_mode=WAL")
            sconn.execute("PRAGMA synchronous=NORMAL")  # derived data: see the module docstring
    except (sqlite3.Error, OSError) as e:
        raise StoreError(f"cannot open SQLite store {path} for the web page: {e}") from e
    return Db(sconn, "sqlite")


def create_tables(db: Db, attempts: int = 3) -> None:
    """Create the web tables if missing. Idempotent; two PostgreSQL workers creating them at the same moment
    can collide on the catalog (a unique violation), so a failed attempt is retried."""
    for attempt in range(attempts):
        try:
            db.begin()
            for stmt in DDL:
                db.run(stmt)
            db.commit()
            return
        except Exception as e:
            db.rollback()
            if attempt == attempts - 1:
                raise StoreError(f"cannot create the web tables: {e}") from e
            time.sleep(0.2 * (attempt + 1))


class Pool:
    """A few read-only connections shared by the page handlers (each used by one thread at a time)."""

    def __init__(self, url: str, schema: str | None = None, size: int = 4) -> None:
        self._url, self._schema, self._size = url, schema, size
        self._idle: queue.LifoQueue[Db] = queue.LifoQueue()
        self._opened = 0
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def conn(self) -> Iterator[Db]:
        db = self._take()
        ok = False
        try:
            yield db
            ok = True
        finally:
            try:
                db.end_read()
            except Exception:
                ok = False
            if ok and not self._closed:
                self._idle.put(db)
            else:
                db.close()
                with self._lock:
                    self._opened -= 1

    def _take(self) -> Db:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = self._opened < self._size
            if grow:
                self._opened += 1
        if grow:
            try:
                return connect(self._url, self._schema, readonly=True)
            except Exception:
                with self._lock:
                    self._opened -= 1
                raise
        return self._idle.get(timeout=30)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

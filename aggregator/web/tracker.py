"""Keeps the fleet view (``web_fleet``) current: one upsert per device after every committed batch.

Runs in the store thread, called by ``AggregatorService`` after a batch committed (``batch_committed``) and
after receipts went out (``receipts_published``). ``plan`` is pure: the batch's verified records and rejects
in, one ``DeviceUpdate`` per device out (newest birth and telemetry payloads, clock state, key, count for
the rate window). The writer turns each into one ``INSERT … ON CONFLICT DO UPDATE`` whose every group of
columns is replaced only by a newer observation, so workers of a shared subscription can apply their
batches in any order. Then listeners (the web page's live updates) hear which devices changed.

A failure here is logged and counted, never raised: the fleet view must not stop the store thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol

import cbor2

from aggregator.errors import Rejected
from aggregator.web import project
from aggregator.web.db import BUCKET_S, Db, connect, create_tables
from envelope import labels

log = logging.getLogger(__name__)


class VerifiedLike(Protocol):
    """What the tracker reads of an ``aggregator.VerifiedRecord``."""

    @property
    def record(self) -> Any: ...
    @property
    def key(self) -> Any: ...
    @property
    def received_ms(self) -> int: ...
    @property
    def device_id(self) -> str: ...


class RejectLike(Protocol):
    device_id: str
    reason: str
    received_ms: int


class TrustLike(Protocol):
    def key_for(self, kid: bytes, now: datetime) -> Any: ...


@dataclass
class DeviceUpdate:
    """Everything one batch says about one device (``None``: the batch said nothing about that group)."""

    device_id: str
    verified: int = 0
    status: project.StatusFields | None = None
    status_ms: int | None = None
    telemetry: project.TelemetryFields | None = None
    telemetry_ms: int | None = None  # capture time of the telemetry record
    clock_state: int | None = None
    clock_ms: int | None = None
    kid: str | None = None
    cert_serial: str | None = None
    cert_not_after_ms: int | None = None
    key_ms: int | None = None
    revoked: bool | None = None  # True: a "revoked" reject; False: a verified record (its key was good)
    last_label: str | None = None
    last_result_ms: int | None = None
    # (bucket start ms, label) -> [results, results with a latency, latency sum, latency max]
    results: dict[tuple[int, str], list[float]] = field(default_factory=dict)
    telemetry_points: list[tuple[int, project.TelemetryFields]] = field(default_factory=list)


def _payload(rec: Any) -> Any:
    """The payload of a verified record, for display: plain CBOR decoding (the strict-encoding walk of
    ``Record.payload`` costs more than the rest of the view; the bytes are signed and size-limited already)."""
    try:
        return cbor2.loads(rec.payload_bytes)
    except Exception:
        return None


def plan(verified: Iterable[VerifiedLike], rejects: Iterable[RejectLike] = ()) -> dict[str, DeviceUpdate]:
    """One update per device from a batch (pure; odd payloads give empty fields, never an exception)."""
    out: dict[str, DeviceUpdate] = {}
    keys: dict[str, Any] = {}
    bucket_ms = BUCKET_S * 1000
    for vr in verified:
        rec = vr.record
        device_id = vr.device_id
        u = out.get(device_id)
        if u is None:
            u = out[device_id] = DeviceUpdate(device_id)
        u.verified += 1
        if u.clock_ms is None or rec.capture_ms >= u.clock_ms:
            u.clock_state, u.clock_ms = int(rec.clock_state), int(rec.capture_ms)
        key = vr.key
        if keys.get(device_id) is not key and (u.key_ms is None or vr.received_ms >= u.key_ms):
            keys[device_id] = key
            u.kid = key.kid.hex()
            u.cert_serial = format(key.serial, "x") if isinstance(key.serial, int) else None
            na = key.not_after
            u.cert_not_after_ms = int(na.timestamp() * 1000) if isinstance(na, datetime) else None
            u.revoked = bool(getattr(key, "revoked", False))
        u.key_ms = max(u.key_ms or 0, vr.received_ms)
        kind = rec.kind
        if kind == labels.KIND_RESULT:
            point = project.result_point(int(rec.capture_ms), _payload(rec))
            b = u.results.get((point.t_ms - point.t_ms % bucket_ms, point.label or ""))
            if b is None:
                b = u.results[(point.t_ms - point.t_ms % bucket_ms, point.label or "")] = [0, 0, 0.0, 0.0]
            b[0] += 1
            if point.latency_us is not None:
                b[1] += 1
                b[2] += point.latency_us
                b[3] = max(b[3], point.latency_us)
            if u.last_result_ms is None or point.t_ms >= u.last_result_ms:
                u.last_label, u.last_result_ms = point.label, point.t_ms
        elif kind == labels.KIND_TELEMETRY:
            tf = project.telemetry_fields(_payload(rec))
            u.telemetry_points.append((int(rec.capture_ms), tf))
            if u.telemetry_ms is None or rec.capture_ms >= u.telemetry_ms:
                u.telemetry, u.telemetry_ms = tf, int(rec.capture_ms)
        elif kind == labels.KIND_STATUS and (u.status_ms is None or rec.capture_ms >= u.status_ms):
            u.status, u.status_ms = project.status_fields(_payload(rec)), int(rec.capture_ms)
    for r in rejects:
        if r.device_id and r.reason == "revoked":
            out.setdefault(r.device_id, DeviceUpdate(r.device_id)).revoked = True
    return out


# Column groups: each is replaced as a whole when the update's timestamp column is newer.
_GROUPS: dict[str, tuple[str, ...]] = {
    "birth_ms": ("agent_version", "runtime", "python", "machine", "key_tier", "delivery", "models", "model_sha256",
                 "model_version"),
    "telemetry_ms": ("outbox_depth", "outbox_bytes", "outbox_oldest_age_s", "low_water", "evicted_records",
                     "cpu_percent", "mem_percent", "rss_bytes", "temperature_c", "mqtt_state", "dev_receipt_settled",
                     "dev_receipt_ms", "latency_p50_us", "latency_p99_us"),
    "clock_ms": ("clock_state",),
    "key_ms": ("kid", "cert_serial", "cert_not_after_ms"),
    "last_result_ms": ("last_label",),
}
_COLS = (*[c for g, cols in _GROUPS.items() for c in (g, *cols)], "revoked", "rate_start_ms", "rate_prev",
         "rate_cur", "updated_ms")


def _upsert_sql() -> str:
    sets = []
    for stamp, cols in _GROUPS.items():
        newer = f"excluded.{stamp} >= COALESCE(f.{stamp}, -1)"
        sets += [f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE f.{c} END" for c in (*cols, stamp)]
    sets += [
        "revoked = CASE WHEN excluded.revoked < 0 THEN f.revoked ELSE excluded.revoked END",
        "rate_prev = CASE WHEN f.rate_start_ms >= excluded.rate_start_ms THEN f.rate_prev "
        f"WHEN f.rate_start_ms = excluded.rate_start_ms - {project.BUCKET_MS} THEN f.rate_cur ELSE 0 END",
        "rate_cur = CASE WHEN f.rate_start_ms >= excluded.rate_start_ms THEN f.rate_cur + excluded.rate_cur "
        "ELSE excluded.rate_cur END",
        "rate_start_ms = CASE WHEN f.rate_start_ms >= excluded.rate_start_ms THEN f.rate_start_ms "
        "ELSE excluded.rate_start_ms END",
        "updated_ms = excluded.updated_ms",
    ]
    names, marks = ", ".join(_COLS), ", ".join("?" * (len(_COLS) + 1))
    return (f"INSERT INTO web_fleet AS f (device_id, {names}) VALUES ({marks}) "  # noqa: S608 - constant names
            f"ON CONFLICT (device_id) DO UPDATE SET {', '.join(sets)}")


UPSERT_SQL = _upsert_sql()
RESULTS_SQL = ("INSERT INTO web_results AS w (device_id, bucket_ms, label, n, lat_n, lat_sum_us, lat_max_us) "
               "VALUES (?,?,?,?,?,?,?) ON CONFLICT (device_id, bucket_ms, label) DO UPDATE SET n = w.n + excluded.n, "
               "lat_n = w.lat_n + excluded.lat_n, lat_sum_us = w.lat_sum_us + excluded.lat_sum_us, "
               "lat_max_us = CASE WHEN excluded.lat_max_us > w.lat_max_us THEN excluded.lat_max_us "
               "ELSE w.lat_max_us END")
TELEMETRY_SQL = ("INSERT INTO web_telemetry (device_id, t_ms, cpu_percent, mem_percent, temperature_c, outbox_depth, "
                 "latency_p50_us, latency_p99_us) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING")


def upsert_params(u: DeviceUpdate, now_ms: int) -> list[Any]:
    """The values of ``UPSERT_SQL`` for one update (``revoked`` -1 means "unchanged")."""
    s, t = u.status, u.telemetry
    values: dict[str, Any] = {c: None for c in _COLS}
    if s is not None:
        values.update(birth_ms=u.status_ms, agent_version=s.agent_version, runtime=s.runtime, python=s.python,
                      machine=s.machine, key_tier=s.key_tier, delivery=s.delivery,
                      models=json.dumps([m.__dict__ for m in s.models]), model_sha256=s.model_sha256,
                      model_version=s.model_version)
    if t is not None:
        values.update(telemetry_ms=u.telemetry_ms, outbox_depth=t.outbox_depth, outbox_bytes=t.outbox_bytes,
                      outbox_oldest_age_s=t.outbox_oldest_age_s, low_water=t.low_water,
                      evicted_records=t.evicted_records, cpu_percent=t.cpu_percent, mem_percent=t.mem_percent,
                      rss_bytes=t.rss_bytes, temperature_c=t.temperature_c, mqtt_state=t.mqtt_state,
                      dev_receipt_settled=t.receipt_settled, dev_receipt_ms=t.receipt_time_ms,
                      latency_p50_us=t.latency_p50_us, latency_p99_us=t.latency_p99_us)
    if u.clock_ms is not None:
        values.update(clock_ms=u.clock_ms, clock_state=u.clock_state)
    if u.key_ms is not None:
        values.update(key_ms=u.key_ms, kid=u.kid, cert_serial=u.cert_serial, cert_not_after_ms=u.cert_not_after_ms)
    if u.last_result_ms is not None:
        values.update(last_result_ms=u.last_result_ms, last_label=u.last_label)
    values.update(revoked=-1 if u.revoked is None else int(u.revoked), rate_start_ms=project.bucket_of(now_ms),
                  rate_prev=0, rate_cur=u.verified, updated_ms=now_ms)
    return [u.device_id, *(values[c] for c in _COLS)]


@dataclass
class TrackerStats:
    batches: int = 0
    devices_updated: int = 0
    errors: int = 0
    last_error: str = ""
    listeners_failed: int = 0
    revocations_checked: int = 0


class FleetTracker:
    """The writer of ``web_fleet`` (an observer of ``AggregatorService``)."""

    def __init__(self, url: str, schema: str | None = None, *, trust: TrustLike | None = None,
                 clock: Callable[[], float] = time.time, trust_check_s: float = 30.0,
                 keep_s: float = 3600.0) -> None:
        self.url, self.schema = url, schema
        self.keep_s = keep_s  # plot data older than this is deleted
        self._next_prune = 0.0
        self.trust = trust
        self._clock = clock
        self._trust_check_s = trust_check_s
        self._next_trust_check = 0.0
        self._db: Db | None = None
        self._listeners: list[Callable[[set[str]], None]] = []
        self._lock = threading.Lock()
        self.stats = TrackerStats()

    def open(self) -> FleetTracker:
        """Connect and create the table; raises ``StoreError``."""
        self._db = connect(self.url, self.schema, readonly=False)
        create_tables(self._db)
        return self

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def add_listener(self, fn: Callable[[set[str]], None]) -> None:
        """``fn(device_ids)`` after each write that changed them (called in the store thread: be quick)."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[set[str]], None]) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    # ---- observer interface of AggregatorService ------------------------------------------------------

    def batch_committed(self, batch: Any) -> None:
        """Apply a committed batch (``aggregator.service.CommittedBatch``)."""
        updates = plan(batch.verified, batch.rejects)
        dirty = set(updates) | {d for d, _ in batch.offline} | {r.device_id for r in batch.rejects if r.device_id}
        dirty |= set(batch.result.settled_rejects)
        now_ms = int(self._clock() * 1000)
        if updates:
            self._write(list(updates.values()), now_ms)
        if self.trust is not None and self._clock() >= self._next_trust_check:
            self._next_trust_check = self._clock() + self._trust_check_s
            dirty |= self.check_trust(now_ms)
        if self._clock() >= self._next_prune:
            self._next_prune = self._clock() + min(300.0, self.keep_s / 4)
            self.prune(now_ms)
        self._notify(dirty)

    def receipts_published(self, receipts: Sequence[Any]) -> None:
        """Remember the last receipt sent to each device (``envelope.Receipt``)."""
        if not receipts or self._db is None:
            return
        db = self._db
        try:
            db.begin()
            for r in receipts:
                rejected = json.dumps([[int(s), str(why)] for s, why in r.rejected]) if r.rejected else None
                db.run("INSERT INTO web_fleet AS f (device_id, receipt_settled, receipt_epoch, receipt_ms, "
                       "receipt_rejected) VALUES (?,?,?,?,?) ON CONFLICT (device_id) DO UPDATE SET "
                       "receipt_settled = excluded.receipt_settled, receipt_epoch = excluded.receipt_epoch, "
                       "receipt_ms = excluded.receipt_ms, receipt_rejected = COALESCE(excluded.receipt_rejected, "
                       "f.receipt_rejected)", (r.dev, r.settled, r.epoch, r.time_ms, rejected))
            db.commit()
        except Exception as e:
            db.rollback()
            self._failed(e)
            return
        self._notify({r.dev for r in receipts})

    # ---- writing ---------------------------------------------------------------------------------------

    def apply(self, updates: Sequence[DeviceUpdate], now_ms: int) -> None:
        """Write updates now (tests and the benchmark feed synthetic fleets through here)."""
        self._write(updates, now_ms)

    def _write(self, updates: Sequence[DeviceUpdate], now_ms: int) -> None:
        db = self._db
        if db is None:
            return
        try:
            db.begin()
            fleet, results, telemetry = [], [], []
            for u in updates:
                t = u.telemetry
                if t is not None and t.outbox_oldest_age_s is None:
                    u.telemetry = _with_oldest(db, u, t)
                fleet.append(upsert_params(u, now_ms))
                results += [(u.device_id, b, label, int(v[0]), int(v[1]), v[2], v[3])
                            for (b, label), v in u.results.items()]
                telemetry += [(u.device_id, t_ms, tf.cpu_percent, tf.mem_percent, tf.temperature_c, tf.outbox_depth,
                               tf.latency_p50_us, tf.latency_p99_us) for t_ms, tf in u.telemetry_points]
            for sql, rows in ((UPSERT_SQL, fleet), (RESULTS_SQL, results), (TELEMETRY_SQL, telemetry)):
                if rows:
                    db.many(sql, rows)
            db.commit()
        except Exception as e:
            db.rollback()
            self._failed(e)
            return
        self.stats.batches += 1
        self.stats.devices_updated += len(updates)

    def prune(self, now_ms: int) -> None:
        """Delete plot data older than ``keep_s``."""
        db = self._db
        if db is None:
            return
        cut = now_ms - int(self.keep_s * 1000)
        try:
            db.begin()
            db.run("DELETE FROM web_results WHERE bucket_ms < ?", (cut,))
            db.run("DELETE FROM web_telemetry WHERE t_ms < ?", (cut,))
            db.commit()
        except Exception as e:
            db.rollback()
            self._failed(e)

    def check_trust(self, now_ms: int) -> set[str]:
        """Mark devices whose current key the trust store now refuses as revoked (a CRL reload), or no longer."""
        db, trust = self._db, self.trust
        if db is None or trust is None:
            return set()
        now = datetime.fromtimestamp(now_ms / 1000, timezone.utc)
        changed: list[tuple[int, str]] = []
        try:
            rows = db.all("SELECT device_id, kid, revoked FROM web_fleet WHERE kid IS NOT NULL")
            for device_id, kid, revoked in rows:
                try:
                    trust.key_for(bytes.fromhex(kid), now)
                    state = 0
                except Rejected as e:
                    if e.reason != "revoked":
                        continue
                    state = 1
                except ValueError:
                    continue
                if state != revoked:
                    changed.append((state, device_id))
            db.end_read()
            if changed:
                db.begin()
                for state, device_id in changed:
                    db.run("UPDATE web_fleet SET revoked = ? WHERE device_id = ?", (state, device_id))
                db.commit()
        except Exception as e:
            db.rollback()
            self._failed(e)
            return set()
        self.stats.revocations_checked += 1
        return {d for _, d in changed}

    def _failed(self, e: Exception) -> None:
        self.stats.errors += 1
        first = not self.stats.last_error
        self.stats.last_error = str(e)[:300]
        (log.warning if first or self.stats.errors % 100 == 0 else log.debug)(
            "fleet view not updated (%d failures so far): %s", self.stats.errors, e)

    def _notify(self, dirty: set[str]) -> None:
        if not dirty:
            return
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(dirty)
            except Exception:
                self.stats.listeners_failed += 1
                log.exception("fleet view listener failed")


def _with_oldest(db: Db, u: DeviceUpdate, t: project.TelemetryFields) -> project.TelemetryFields:
    """The agent does not report the age of its oldest outbox row: derive it from ``low_water`` (the oldest
    seq it holds) and that record's capture time, when we stored it."""
    if t.outbox_depth == 0:
        return replace(t, outbox_oldest_age_s=0.0)
    if not t.low_water or u.telemetry_ms is None:
        return t
    row = db.one("SELECT capture_ms FROM records WHERE device_id = ? AND seq = ?", (u.device_id, t.low_water))
    if row is None:
        return t
    return replace(t, outbox_oldest_age_s=max(0.0, (u.telemetry_ms - int(row[0])) / 1000))


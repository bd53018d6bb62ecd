"""Read-only queries behind the web pages: the fleet page (filtered, sorted, paged in SQL), the summary,
one device in detail, its plot data. Each method takes a connection from a small read-only pool.

The fleet query joins ``devices`` (the store's sequence state and counters, online state from birth and
will) with ``web_fleet`` (what the device last said about itself); the rejects aggregate is joined only when
the query needs it (sort by rejects, the attention filter), otherwise the page's rows get their rejects in
a second query by id. Only fixed SQL text is ever built: sort expressions and states come from tables,
times are formatted integers, values are bound.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aggregator.web import query as fq
from aggregator.web.db import BUCKET_S, Pool
from aggregator.web.project import rate_per_s
from aggregator.web.series import result_series, telemetry_series

ROW_COLUMNS: tuple[tuple[str, str], ...] = tuple((c.split(".")[1], c) for c in (
    "d.device_id", "d.online", "d.status_ms", "d.first_seen_ms", "d.last_seen_ms", "d.stored", "d.duplicates",
    "d.reorders", "d.max_seq", "d.max_epoch", "d.contiguous_seq", "d.policy_gap_seqs", "d.gap_seqs",
    "d.gaps_opened", "d.skew_flagged",
    "f.agent_version", "f.runtime", "f.python", "f.machine", "f.key_tier", "f.delivery", "f.models",
    "f.model_sha256", "f.model_version", "f.birth_ms",
    "f.telemetry_ms", "f.outbox_depth", "f.outbox_bytes", "f.outbox_oldest_age_s", "f.low_water",
    "f.evicted_records", "f.cpu_percent", "f.mem_percent", "f.rss_bytes", "f.temperature_c", "f.mqtt_state",
    "f.dev_receipt_settled", "f.dev_receipt_ms", "f.latency_p50_us", "f.latency_p99_us",
    "f.clock_state", "f.clock_ms", "f.kid", "f.cert_serial", "f.cert_not_after_ms", "f.revoked",
    "f.rate_start_ms", "f.rate_prev", "f.rate_cur", "f.last_label", "f.last_result_ms",
    "f.receipt_settled", "f.receipt_epoch", "f.receipt_ms", "f.receipt_rejected",
))
_SELECT = ", ".join(expr for _, expr in ROW_COLUMNS)
_FROM = "FROM devices d LEFT JOIN web_fleet f ON f.device_id = d.device_id"
_REJECTS_JOIN = (" LEFT JOIN (SELECT device_id, SUM(count) AS n, MAX(last_ms) AS last_ms FROM rejects "
                 "GROUP BY device_id) r ON r.device_id = d.device_id")


def rate_sql(now_ms: int) -> str:
    """``project.rate_per_s`` as a SQL expression over ``f`` at ``now_ms``."""
    now = int(now_ms)
    age = f"({now} - f.rate_start_ms)"
    return (f"(CASE WHEN f.rate_start_ms IS NULL THEN 0.0 WHEN {age} < 0 THEN f.rate_cur / 60.0 "
            f"WHEN {age} < 60000 THEN (f.rate_cur + f.rate_prev * (60000 - {age}) / 60000.0) / 60.0 "
            f"WHEN {age} < 120000 THEN f.rate_cur * (120000 - {age}) / 60000.0 / 60.0 ELSE 0.0 END)")


def attention_sql(now_ms: int, t: fq.Thresholds) -> str:
    """``query.attention`` (non-empty) as a SQL predicate over ``d`` and ``f``."""
    now = int(now_ms)
    soon = now + int(t.cert_days) * 86_400_000
    since = now - int(t.reject_window_s) * 1000
    return (f"(d.online IS NULL OR d.online = 0 OR f.revoked = 1 OR f.cert_not_after_ms <= {now} "  # noqa: S608
            f"OR f.cert_not_after_ms < {soon} OR d.max_seq > d.contiguous_seq OR f.clock_state = 0 "
            f"OR f.outbox_depth > {int(t.outbox_depth)} "
            f"OR EXISTS (SELECT 1 FROM rejects rj WHERE rj.device_id = d.device_id AND rj.last_ms >= {since}))")


def sort_sql(key: str, now_ms: int) -> str:
    exprs = {
        "device": "d.device_id", "state": "COALESCE(d.online, -1)", "seen": "COALESCE(d.last_seen_ms, 0)",
        "rate": rate_sql(now_ms), "seq": "d.max_seq", "gaps": "(d.max_seq - d.contiguous_seq)",
        "rejects": "COALESCE(r.n, 0)", "model": "COALESCE(f.model_sha256, '')",
        "agent": "COALESCE(f.agent_version, '')", "outbox": "COALESCE(f.outbox_depth, -1)",
        "clock": "COALESCE(f.clock_state, -1)",
        "cert": "(CASE WHEN f.revoked = 1 THEN 0 ELSE COALESCE(f.cert_not_after_ms, 9000000000000000000) END)",
    }
    return exprs[key]


def _state_sql(state: str, now_ms: int, t: fq.Thresholds) -> str:
    return {"all": "", "online": "d.online = 1", "offline": "d.online = 0", "unknown": "d.online IS NULL",
            "attention": attention_sql(now_ms, t)}[state]


@dataclass
class FleetPage:
    """One page of the fleet table."""

    query: fq.FleetQuery
    rows: list[dict[str, Any]]
    total: int  # devices matching the filter
    now_ms: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per))


@dataclass
class Summary:
    devices: int = 0
    online: int = 0
    offline: int = 0
    unknown: int = 0
    attention: int = 0
    rate: float = 0.0
    unknown_rejects: int = 0  # rejects of records whose topic named no known device
    now_ms: int = 0
    states: dict[str, int] = field(default_factory=dict)


class FleetReader:
    """The pages' queries over a ``Pool`` of read-only connections (call from worker threads)."""

    def __init__(self, pool: Pool, thresholds: fq.Thresholds | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.thresholds = thresholds or fq.Thresholds()
        self._clock = clock
        self._summary: Summary | None = None
        self._summary_at = 0.0

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # ---- fleet ---------------------------------------------------------------------------------------

    def fleet(self, q: fq.FleetQuery, now_ms: int | None = None) -> FleetPage:
        """One page: the matching ids are chosen in SQL (filter, sort, LIMIT/OFFSET over narrow rows), then
        the page's full rows are read by id."""
        now = self.now_ms() if now_ms is None else now_ms
        where, params = [], []
        if cond := _state_sql(q.state, now, self.thresholds):
            where.append(cond)
        if q.q:
            where.append("d.device_id LIKE ?")
            params.append(f"%{q.q}%")
        wsql = (" WHERE " + " AND ".join(where)) if where else ""
        order = f"{sort_sql(q.sort, now)} {'DESC' if q.desc else 'ASC'}, d.device_id ASC"
        needs_f = q.state == "attention" or q.sort not in ("device", "state", "seen", "seq", "gaps", "rejects")
        base = "FROM devices d" + (" LEFT JOIN web_fleet f ON f.device_id = d.device_id" if needs_f else "")
        base += _REJECTS_JOIN if q.sort == "rejects" else ""
        count_from = "FROM devices d" + (" LEFT JOIN web_fleet f ON f.device_id = d.device_id"
                                         if q.state == "attention" else "")
        with self.pool.conn() as db:
            total = int(db.one(f"SELECT COUNT(*) {count_from}{wsql}", params)[0])  # type: ignore[index]
            ids = [r[0] for r in db.all(f"SELECT d.device_id {base}{wsql} ORDER BY {order} "
                                        f"LIMIT {q.per} OFFSET {q.offset()}", params)]
            by_id = {r["device_id"]: r for r in self._rows(db, ids)}
        rows = [by_id[i] for i in ids if i in by_id]
        for row in rows:
            self._derive(row, now)
        return FleetPage(q, rows, total, now)

    def rows(self, device_ids: Sequence[str], now_ms: int | None = None) -> list[dict[str, Any]]:
        """Fleet rows of these devices (live updates), in no particular order; unknown ids are left out."""
        now = self.now_ms() if now_ms is None else now_ms
        with self.pool.conn() as db:
            out = self._rows(db, list(dict.fromkeys(device_ids)))
        for row in out:
            self._derive(row, now)
        return out

    def _rows(self, db: Any, ids: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            raw = db.all(f"SELECT {_SELECT} {_FROM} WHERE d.device_id IN ({marks})", chunk)
            out += [dict(zip((n for n, _ in ROW_COLUMNS), r, strict=True)) for r in raw]
        self._add_details(db, out)
        return out

    def _add_details(self, db: Any, rows: list[dict[str, Any]]) -> None:
        """Rejects by reason and settled-reject counts of these rows (one query each per 500 rows)."""
        by_id = {r["device_id"]: r for r in rows}
        for r in rows:
            r["rejects"], r["rejects_last_ms"], r["settled_rejects"] = {}, None, 0
        for chunk in _chunks(list(by_id), 500):
            marks = ",".join("?" * len(chunk))
            for device_id, reason, count, last_ms in db.all(
                    f"SELECT device_id, reason, count, last_ms FROM rejects WHERE device_id IN ({marks})",  # noqa: S608
                    chunk):
                r = by_id[device_id]
                r["rejects"][reason] = int(count)
                r["rejects_last_ms"] = max(int(last_ms), r["rejects_last_ms"] or 0)
            for device_id, n in db.all(f"SELECT device_id, COUNT(*) FROM settled_rejects "  # noqa: S608
                                       f"WHERE device_id IN ({marks}) GROUP BY device_id", chunk):
                by_id[device_id]["settled_rejects"] = int(n)

    def _derive(self, row: dict[str, Any], now_ms: int) -> None:
        row["rate"] = (rate_per_s(row["rate_start_ms"], row["rate_prev"], row["rate_cur"], now_ms)
                       if row.get("rate_start_ms") is not None else 0.0)
        row["state"] = {1: "online", 0: "offline"}.get(row["online"], "unknown")
        row["rejects_total"] = sum(row["rejects"].values())
        row["open_seqs"] = max(0, (row["max_seq"] or 0) - (row["contiguous_seq"] or 0))
        row["attention"] = fq.attention(row, now_ms, self.thresholds)
        try:
            row["models"] = json.loads(row["models"]) if row.get("models") else []
        except ValueError:
            row["models"] = []
        try:
            row["receipt_rejected"] = json.loads(row["receipt_rejected"]) if row.get("receipt_rejected") else []
        except ValueError:
            row["receipt_rejected"] = []

    # ---- summary -------------------------------------------------------------------------------------

    def summary(self, now_ms: int | None = None, max_age_s: float = 1.0) -> Summary:
        """Fleet-wide counts, recomputed at most every ``max_age_s`` (every page and push shows it)."""
        cached = self._summary
        if now_ms is None and cached is not None and time.monotonic() - self._summary_at < max_age_s:
            return cached
        now = self.now_ms() if now_ms is None else now_ms
        with self.pool.conn() as db:
            n, on, off, unk = db.one("SELECT COUNT(*), SUM(CASE WHEN online = 1 THEN 1 ELSE 0 END), "
                                     "SUM(CASE WHEN online = 0 THEN 1 ELSE 0 END), "
                                     "SUM(CASE WHEN online IS NULL THEN 1 ELSE 0 END) FROM devices") or (0, 0, 0, 0)
            rate = db.one(f"SELECT SUM({rate_sql(now)}) FROM web_fleet f")  # noqa: S608
            att = db.one(f"SELECT COUNT(*) {_FROM} WHERE {attention_sql(now, self.thresholds)}")
            unknown = db.one("SELECT COALESCE(SUM(count), 0) FROM rejects WHERE device_id NOT IN "
                             "(SELECT device_id FROM devices)")
        s = Summary(int(n or 0), int(on or 0), int(off or 0), int(unk or 0), int(att[0] if att else 0),
                    round(float(rate[0] or 0) if rate else 0.0, 2), int(unknown[0]) if unknown else 0, now)
        s.states = {"all": s.devices, "attention": s.attention, "online": s.online, "offline": s.offline,
                    "unknown": s.unknown}
        self._summary, self._summary_at = s, time.monotonic()
        return s

    def online_count(self) -> tuple[int, int]:
        """(devices known, devices online) for /metrics."""
        with self.pool.conn() as db:
            row = db.one("SELECT COUNT(*), SUM(CASE WHEN online = 1 THEN 1 ELSE 0 END) FROM devices")
        return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)

    # ---- one device ----------------------------------------------------------------------------------

    def device(self, device_id: str, now_ms: int | None = None, *, missing_scan_max: int = 100_000
               ) -> dict[str, Any] | None:
        """Everything the device page shows except the plots; None for an unknown device."""
        now = self.now_ms() if now_ms is None else now_ms
        with self.pool.conn() as db:
            raw = db.one(f"SELECT {_SELECT} {_FROM} WHERE d.device_id = ?", (device_id,))
            if raw is None:
                return None
            dev = dict(zip((n for n, _ in ROW_COLUMNS), raw, strict=True))
            self._add_details(db, [dev])
            dev["reject_reasons"] = [
                {"reason": r, "count": int(n), "first_ms": int(a), "last_ms": int(b), "detail": detail or ""}
                for r, n, a, b, detail in db.all(
                    "SELECT reason, count, first_ms, last_ms, last_detail FROM rejects WHERE device_id = ? "
                    "ORDER BY last_ms DESC", (device_id,))]
            dev["settled_recent"] = [
                {"seq": int(s), "epoch": int(e), "reason": r, "received_ms": int(ms)}
                for s, e, r, ms in db.all("SELECT seq, epoch, reason, received_ms FROM settled_rejects "
                                          "WHERE device_id = ? ORDER BY seq DESC LIMIT 20", (device_id,))]
            dev["policy_gaps"] = [
                {"first": int(a), "last": int(b), "count": int(n), "bytes": int(nb), "reason": r, "epoch": int(e),
                 "received_ms": int(ms)}
                for a, b, n, nb, r, e, ms in db.all(
                    "SELECT first_seq, last_seq, count, bytes, reason, epoch, received_ms FROM gaps "
                    "WHERE device_id = ? ORDER BY record_seq DESC LIMIT 20", (device_id,))]
            c, m = int(dev["contiguous_seq"] or 0), int(dev["max_seq"] or 0)
            limit = int(missing_scan_max)
            stored = [int(s) for (s,) in db.all(
                f"SELECT seq FROM records WHERE device_id = ? AND seq > ? ORDER BY seq LIMIT {limit}",  # noqa: S608
                (device_id, c))]
            covered = [(int(a), int(b)) for a, b in db.all(
                "SELECT first_seq, last_seq FROM gaps WHERE device_id = ? AND last_seq > ?", (device_id, c))]
            covered += [(int(s), int(s)) for (s,) in db.all(
                "SELECT seq FROM settled_rejects WHERE device_id = ? AND seq > ?", (device_id, c))]
            mark = db.one("SELECT low_water FROM device_marks WHERE device_id = ?", (device_id,))
            if mark is not None and int(mark[0]) > 1:
                covered.append((1, int(mark[0]) - 1))
            dev["equivocations"] = int((db.one("SELECT COUNT(*) FROM equivocations WHERE device_id = ?",
                                               (device_id,)) or (0,))[0])
        top = m if len(stored) < missing_scan_max else stored[-1]
        dev["missing"], dev["missing_ranges"] = fq.missing_ranges(c, top, stored, covered)
        dev["missing_exact"] = top == m
        self._derive(dev, now)
        return dev

    def series(self, device_id: str, window_s: int, now_ms: int | None = None) -> dict[str, Any]:
        """uPlot data of the device page: results per bucket and telemetry points within ``window_s``."""
        now = self.now_ms() if now_ms is None else now_ms
        since = now - window_s * 1000
        with self.pool.conn() as db:
            results = db.all("SELECT bucket_ms, label, n, lat_n, lat_sum_us, lat_max_us FROM web_results "
                             "WHERE device_id = ? AND bucket_ms >= ? ORDER BY bucket_ms", (device_id, since))
            telemetry = db.all("SELECT t_ms, cpu_percent, mem_percent, temperature_c, outbox_depth, latency_p50_us, "
                               "latency_p99_us FROM web_telemetry WHERE device_id = ? AND t_ms >= ? ORDER BY t_ms",
                               (device_id, since))
        coarse = result_series(results, now, window_s, BUCKET_S, max_points=60)
        return {"device_id": device_id, "now": now // 1000, "window_s": window_s,
                "results": result_series(results, now, window_s, BUCKET_S, max_points=120),
                "labels": {"t": coarse["t"], "bucket_s": coarse["bucket_s"], "counts": coarse["labels"]},
                "telemetry": telemetry_series(telemetry)}


def _chunks(items: list[str], n: int) -> list[list[str]]:
    return [items[i:i + n] for i in range(0, len(items), n)]

"""The web page's pure cores: payload projections, the rate window (Python and SQL agree), the fleet query,
the attention rule (Python and SQL agree), missing-seq ranges (agree with DeviceBook), plot series, filters."""

from __future__ import annotations

import sqlite3
from typing import Any
from urllib.parse import parse_qsl

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pipeline import result_payload
from agent.telemetry import telemetry_payload
from aggregator import DeviceBook
from aggregator.schema import ddl
from aggregator.web import fmt, project
from aggregator.web.db import DDL, Db
from aggregator.web.query import SORTS, STATES, FleetQuery, Thresholds, attention, missing_ranges
from aggregator.web.reader import ROW_COLUMNS, attention_sql, rate_sql, sort_sql
from aggregator.web.series import result_series, telemetry_series
from aggregator.web.tracker import UPSERT_SQL, DeviceUpdate, upsert_params
from tests.unit.test_telemetry import HOST, snapshot

# ---- payload projections -------------------------------------------------------------------------------

json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20)
    | st.binary(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=30)
payload_like = st.dictionaries(st.sampled_from(["outbox", "host", "mqtt", "receipts", "pipelines", "models", "agent",
                                                "low_water", "label", "latency_us", "x"]), json_like, max_size=8)


@given(payload_like | json_like)
def test_projections_never_raise_on_any_payload(payload: Any) -> None:
    project.status_fields(payload)
    project.telemetry_fields(payload)
    project.result_point(1, payload)


def test_telemetry_fields_read_the_real_agent_payload() -> None:
    """Contract with agent.telemetry: the fields the fleet page shows come out of the agent's own payload."""
    host = {**HOST, "temperatures_c": {"cpu_thermal": 51.5, "gpu": 48.0}}
    payload = cbor2.loads(cbor2.dumps(telemetry_payload(snapshot(), host, {"outbox": 1.0})))
    t = project.telemetry_fields(payload)
    assert (t.outbox_depth, t.outbox_bytes, t.evicted_records) == (7, 2100, 2)
    assert t.cpu_percent == 12.5 and t.mem_percent == 50.0 and t.rss_bytes == 60_000_000
    assert t.temperature_c == 51.5, "the hottest sensor"
    assert t.latency_p50_us == 50.5 and t.latency_p99_us == 99.0
    assert t.mqtt_state == "connected" and t.outbox_oldest_age_s is None


def test_status_fields_read_a_birth_payload() -> None:
    s = project.status_fields({"agent": "0.1.0", "runtime": "ai-edge-litert 2.3.0", "python": "3.11.2",
                               "machine": "aarch64", "key_tier": "pkcs11", "delivery": "aggregator",
                               "models": [{"stream": "vib", "model": "m", "sha256": "AB" * 32, "labels": ["a"],
                                           "version": 7}, {"stream": "x", "model": "n"}]})
    assert s.agent_version == "0.1.0" and s.key_tier == "pkcs11" and s.runtime == "ai-edge-litert 2.3.0"
    assert s.models == (project.ModelInfo("vib", "m", "ab" * 32, "7"),), "entries without a digest are left out"
    assert s.model_sha256 == "ab" * 32 and s.model_version == "7"


def test_result_point_reads_the_agent_result_payload() -> None:
    import numpy as np

    from agent.windowing import Window

    w = Window("vib", 1_000_000, 2_000_000, np.zeros((128, 3), dtype=np.float32), 1)
    p = result_payload(("normal", "fault"), np.array([0.9, 0.1]), 0.5, 431.7, w)
    assert project.result_point(5, cbor2.loads(cbor2.dumps(p))) == project.ResultPoint(5, "normal", 431)


@given(st.text(max_size=40) | st.integers() | st.floats(allow_nan=True) | st.none())
def test_receipt_time_accepts_what_agents_write(v: Any) -> None:
    project._time_ms(v)


def test_receipt_time_iso() -> None:
    assert project._time_ms("1970-01-01T00:00:01+00:00") == 1000
    assert project._time_ms("1970-01-01T00:00:02Z") == 2000
    assert project._time_ms(3) == 3000 and project._time_ms(1_700_000_000_000) == 1_700_000_000_000


# ---- the rate window ------------------------------------------------------------------------------------

def _fleet_db() -> Db:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    db = Db(conn, "sqlite")
    for stmt in ddl("BLOB"):
        db.run(stmt)
    for stmt in DDL:
        db.run(stmt)
    return db


arrivals = st.lists(st.tuples(st.integers(0, 400_000), st.integers(0, 50)), min_size=1, max_size=12)


@given(arrivals, st.integers(0, 600_000))
def test_rate_sql_and_upsert_agree_with_python(events: list[tuple[int, int]], later: int) -> None:
    """Batches arrive in time order; the SQL upsert keeps the same window as ``roll`` and ``rate_sql`` reads
    the same figure as ``rate_per_s``."""
    db = _fleet_db()
    start = prev = cur = 0
    t = 0
    for dt, n in events:
        t += dt
        db.run(UPSERT_SQL, upsert_params(DeviceUpdate("dev-a", verified=n), t))
        start, prev, cur = project.roll(start, prev, cur, project.bucket_of(t), n)
    row = db.one("SELECT rate_start_ms, rate_prev, rate_cur FROM web_fleet WHERE device_id = 'dev-a'")
    assert row == (start, prev, cur)
    now = t + later
    sql = db.one(f"SELECT {rate_sql(now)} FROM web_fleet f")
    assert sql is not None
    assert abs(sql[0] - project.rate_per_s(start, prev, cur, now)) < 1e-9


@given(st.lists(st.integers(0, 20), min_size=1, max_size=30), st.integers(0, 59_999))
def test_rate_counts_the_last_minute(per_second: list[int], offset: int) -> None:
    """Records spread one batch per second: the rate is between the exact last-60-s count and the count of
    the two buckets it spans, divided by 60."""
    start = prev = cur = 0
    base = 10 * project.BUCKET_MS + offset
    for i, n in enumerate(per_second):
        start, prev, cur = project.roll(start, prev, cur, project.bucket_of(base + i * 1000), n)
    now = base + (len(per_second) - 1) * 1000
    r = project.rate_per_s(start, prev, cur, now)
    assert r >= 0
    exact = sum(n for i, n in enumerate(per_second) if base + i * 1000 > now - 60_000)
    assert r * 60 <= prev + cur + 1e-9
    assert r * 60 >= min(exact, cur) - 1e-9


def test_rate_decays_to_zero() -> None:
    assert project.rate_per_s(60_000, 100, 60, 60_000) == (60 + 100) / 60
    assert project.rate_per_s(60_000, 100, 60, 150_000) == 60 * 0.5 / 60
    assert project.rate_per_s(60_000, 100, 60, 180_000) == 0.0


# ---- the fleet query ------------------------------------------------------------------------------------

@given(st.dictionaries(st.sampled_from(["state", "sort", "dir", "page", "per", "q", "x"]), st.text(max_size=30)))
def test_any_query_string_gives_a_valid_query(params: dict[str, str]) -> None:
    q = FleetQuery.from_params(params, 50)
    assert q.state in STATES and q.sort in SORTS and q.page >= 1 and 10 <= q.per <= 200
    assert set(q.q) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    sort_sql(q.sort, 0)  # every sort key has an expression
    again = FleetQuery.from_params(dict(parse_qsl(q.params())), 50)
    assert again == q, "links reproduce the query"


def test_sort_links_flip_direction() -> None:
    q = FleetQuery.from_params({"sort": "rate"})
    assert q.desc, "rates sort highest first"
    assert dict(parse_qsl(q.sort_link("rate"))) == {"sort": "rate", "dir": "asc"}
    assert dict(parse_qsl(q.sort_link("device"))) == {}


# ---- attention: Python and SQL agree --------------------------------------------------------------------

NOW = 1_700_000_000_000
T = Thresholds(outbox_depth=100, cert_days=10, reject_window_s=3600)
rows = st.fixed_dictionaries({
    "online": st.sampled_from([None, 0, 1]),
    "revoked": st.sampled_from([None, 0, 1]),
    "cert_not_after_ms": st.none() | st.integers(NOW - 86_400_000, NOW + 20 * 86_400_000),
    "rejects_last_ms": st.none() | st.integers(NOW - 7_200_000, NOW),
    "max_seq": st.integers(0, 5),
    "contiguous_seq": st.integers(0, 5),
    "clock_state": st.sampled_from([None, 0, 1, 2]),
    "outbox_depth": st.none() | st.integers(0, 200),
})


@settings(max_examples=60)
@given(st.lists(rows, min_size=1, max_size=12))
def test_attention_sql_matches_python(devices: list[dict[str, Any]]) -> None:
    db = _fleet_db()
    for i, d in enumerate(devices):
        dev = f"dev-{i:03d}"
        db.run("INSERT INTO devices (device_id, online, max_seq, contiguous_seq) VALUES (?,?,?,?)",
               (dev, d["online"], max(d["max_seq"], d["contiguous_seq"]), d["contiguous_seq"]))
        if d["revoked"] is not None or d["cert_not_after_ms"] is not None or d["clock_state"] is not None \
                or d["outbox_depth"] is not None:
            db.run("INSERT INTO web_fleet (device_id, revoked, cert_not_after_ms, clock_state, outbox_depth) "
                   "VALUES (?,?,?,?,?)", (dev, d["revoked"] or 0, d["cert_not_after_ms"], d["clock_state"],
                                          d["outbox_depth"]))
        else:
            d["revoked"] = None
        if d["rejects_last_ms"] is not None:
            db.run("INSERT INTO rejects (device_id, reason, count, first_ms, last_ms) VALUES (?,?,?,?,?)",
                   (dev, "bad_signature", 1, d["rejects_last_ms"], d["rejects_last_ms"]))
        d["max_seq"] = max(d["max_seq"], d["contiguous_seq"])
    from aggregator.web.reader import _FROM

    got = {r[0] for r in db.all(f"SELECT d.device_id {_FROM} WHERE {attention_sql(NOW, T)}")}
    want = {f"dev-{i:03d}" for i, d in enumerate(devices) if attention(d, NOW, T)}
    assert got == want


def test_attention_reasons() -> None:
    ok = {"online": 1, "revoked": 0, "cert_not_after_ms": NOW + 30 * 86_400_000, "rejects_last_ms": None,
          "max_seq": 5, "contiguous_seq": 5, "clock_state": 1, "outbox_depth": 3}
    assert attention(ok, NOW, T) == []
    bad = {**ok, "online": 0, "revoked": 1, "rejects_last_ms": NOW - 10, "max_seq": 9, "clock_state": 0,
           "outbox_depth": 101, "cert_not_after_ms": NOW - 1}
    assert attention(bad, NOW, T) == ["offline", "certificate revoked", "certificate expired", "recent rejects",
                                      "seqs not settled", "clock unsynchronised", "outbox backlog"]


def test_row_columns_are_unique() -> None:
    names = [n for n, _ in ROW_COLUMNS]
    assert len(names) == len(set(names))


# ---- missing ranges agree with DeviceBook ---------------------------------------------------------------

@given(st.integers(0, 20), st.sets(st.integers(1, 80), max_size=30),
       st.lists(st.tuples(st.integers(1, 80), st.integers(0, 10)), max_size=5))
def test_missing_ranges_count_matches_device_book(contiguous: int, stored: set[int],
                                                  gaps: list[tuple[int, int]]) -> None:
    above = {s for s in stored if s > contiguous}
    max_seq = max([contiguous, *above, *(a + n for a, n in gaps)])
    book = DeviceBook(contiguous, 1, max_seq, 1, dict.fromkeys(above, 1))
    covered = []
    for a, n in gaps:
        book.cover(a, a + n, 1)
        covered.append((a, a + n))
    count, ranges = missing_ranges(contiguous, max_seq, above, covered, limit=100)
    assert count == book.missing()
    assert sum(b - a + 1 for a, b in ranges) == count
    flat = {s for a, b in ranges for s in range(a, b + 1)}
    assert not flat & above and all(contiguous < s <= max_seq for s in flat)


# ---- plot series ----------------------------------------------------------------------------------------

bucket_rows = st.lists(st.tuples(st.integers(0, 359), st.sampled_from(["normal", "fault", ""]), st.integers(1, 9),
                                 st.integers(0, 9), st.floats(0, 1e6), st.floats(0, 1e4)), max_size=40)


@given(bucket_rows, st.integers(10, 720))
def test_result_series_keeps_every_result(raw: list[tuple], max_points: int) -> None:
    now = 3_600_000 * 500
    rows = [((now - 3_600_000) + i * 10_000, lb, n, min(ln, n), s, m) for i, lb, n, ln, s, m in raw]
    out = result_series(rows, now, 3600, 10, max_points=max_points)
    total = sum(r[2] for r in rows)
    if rows:
        ends = [*out["t"][1:], (now - now % 10_000) // 1000 + 10]
        spans = [min(b - a, max(1.0, now / 1000 - a)) for a, b in zip(out["t"], ends, strict=True)]
        assert abs(sum(r * s for r, s in zip(out["rate"], spans, strict=True)) - total) < 0.01 * len(spans) + 1e-6
    assert sum(sum(v) for v in out["labels"].values()) == total
    assert len(out["t"]) <= max_points and out["t"] == sorted(set(out["t"]))
    assert all(len(v) == len(out["t"]) for v in out["labels"].values())


def test_result_series_lays_out_empty_buckets() -> None:
    out = result_series([(0, "a", 10, 10, 1000.0, 200.0), (30_000, "a", 5, 0, 0.0, 0.0)], 40_000, 3600, 10)
    assert out["t"] == [0, 10, 20, 30, 40] and out["rate"] == [1.0, 0.0, 0.0, 0.5, 0.0]
    partial = result_series([(40_000, "a", 5, 0, 0.0, 0.0)], 42_500, 3600, 10)
    assert partial["rate"] == [2.0], "5 results in the 2.5 s the current bucket has covered"
    assert out["lat_mean"] == [100.0, None, None, None, None] and out["lat_max"][0] == 200.0


def test_telemetry_series() -> None:
    out = telemetry_series([(1000, 1.0, 2.0, None, 3, 4.0, 5.0), (2000, 1.5, 2.5, 40.0, 0, None, None)])
    assert out == {"t": [1, 2], "cpu": [1.0, 1.5], "mem": [2.0, 2.5], "temp": [None, 40.0], "outbox": [3, 0],
                   "p50": [4.0, None], "p99": [5.0, None]}


# ---- formatting -----------------------------------------------------------------------------------------

@given(st.none() | st.integers(-(2**53), 2**53), st.integers(0, 2**45))
def test_filters_never_raise(v: int | None, now: int) -> None:
    for f in (fmt.ts, fmt.num, fmt.rate, fmt.size, fmt.clock, fmt.dash):
        f(v)
    fmt.age(v, now)
    fmt.until(v, now)
    fmt.duration(v)


def test_filters_read_well() -> None:
    assert fmt.age(1000, 43_000) == "42 s ago" and fmt.age(None, 1) == "—" and fmt.age(900, 1000) == "just now"
    assert fmt.until(86_400_000 * 3, 0) == "in 3 d" and fmt.until(0, 7_200_000) == "2.0 h ago"
    assert fmt.size(1234) == "1.2 kB" and fmt.size(12) == "12 B" and fmt.rate(0.1234) == "0.12"
    assert fmt.clock(0) == "unsynced" and fmt.ts(0) == "1970-01-01 00:00:00Z"

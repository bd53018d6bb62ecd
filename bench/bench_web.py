"""W1–W3: the aggregator's web page with 10,000 devices in the store.

W1: fleet page render, p95 over a mix of queries (sorts, the attention filter, a deep page, a search),
    full HTML over HTTP from uvicorn; baseline the same queries' SQL alone (reader, no HTML, no HTTP).
W2: one live update fanned out to 50 open fleet pages (SSE): from the tracker's notification to the 50th
    page holding the new row, p95 over rounds; the note gives the median.
W3: cost of the fleet view on the store thread: verify + SQLite group commit + the tracker's writes, against
    the same worker core without the tracker (baseline).
The 10,000 devices are synthetic rows (``devices``, ``rejects`` and the tracker's ``web_fleet`` written through
``FleetTracker.apply``): a page render reads them exactly as it reads a real fleet's.
Run: ``.venv/bin/python -m bench.bench_web [--quick]``.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aggregator import open_store  # noqa: E402
from aggregator.config import WebSettings  # noqa: E402
from aggregator.web import project  # noqa: E402
from aggregator.web.db import Pool  # noqa: E402
from aggregator.web.query import FleetQuery  # noqa: E402
from aggregator.web.reader import FleetReader  # noqa: E402
from aggregator.web.tracker import DeviceUpdate, FleetTracker  # noqa: E402
from bench.common import child_main, row, standalone_main  # noqa: E402

DEVICES = 10_000
PAGES = 50
RENDER_GOAL_MS = 200.0
FANOUT_GOAL_MS = 100.0
QUERIES = ["/", "/?sort=rate", "/?sort=seen", "/?state=attention", "/?state=offline&sort=seen", "/?sort=rejects",
           "/?page=150", "/?q=dev-12", "/?sort=cert", "/?sort=outbox&state=online"]
REASONS = ("bad_signature", "revoked", "epoch_regression", "unknown_kid")


def populate(path: Path, n: int, now_ms: int, seed: int = 1) -> None:
    """A store holding ``n`` synthetic devices in every state the fleet page shows."""
    rng = random.Random(seed)
    open_store(str(path)).close()
    tracker = FleetTracker(str(path)).open()
    devices, rejects, updates = [], [], []
    for i in range(n):
        dev = f"dev-{i:05d}"
        online = None if i % 97 == 0 else (0 if i % 13 == 0 else 1)
        seq = rng.randint(100, 2_000_000)
        hole = rng.randint(1, 30) if i % 41 == 0 else 0
        seen = now_ms - rng.randint(0, 3_600_000 if online == 0 else 20_000)
        devices.append((dev, seq - hole, 1, seq, 1, 1, None, now_ms - 86_400_000, seen, online, seen, seq - hole,
                        rng.randint(0, 3), 0, 1 if hole else 0, hole, rng.randint(0, 200) if i % 29 == 0 else 0, 0))
        if i % 20 == 0:
            reason = REASONS[i % len(REASONS)]
            rejects.append((dev, reason, rng.randint(1, 50), now_ms - 7_200_000, now_ms - rng.randint(0, 7_200_000),
                            f"{reason} detail"))
        status = project.StatusFields(f"0.{i % 3}.0", "ai-edge-litert 2.3.0", "3.11.2", "aarch64", "file",
                                      "aggregator", (project.ModelInfo("vibration", "vibration-int8",
                                                                       f"{i % 4:02x}" * 32, str(3 + i % 2)),))
        telemetry = project.TelemetryFields(outbox_depth=rng.choice([0, 1, 2, 3, 50, 2500]), outbox_bytes=900,
                                            outbox_oldest_age_s=rng.random() * 30, low_water=seq - 2,
                                            cpu_percent=rng.random() * 60, mem_percent=40.0, temperature_c=51.0)
        updates.append(DeviceUpdate(dev, verified=rng.randint(0, 600), status=status, status_ms=now_ms - 3_600_000,
                                    telemetry=telemetry, telemetry_ms=now_ms - rng.randint(0, 60_000),
                                    clock_state=0 if i % 53 == 0 else 1, clock_ms=seen, kid=f"{i:032x}",
                                    cert_serial=f"{i:x}", cert_not_after_ms=now_ms + rng.randint(1, 400) * 86_400_000,
                                    key_ms=seen, revoked=i % 211 == 0, last_label="normal", last_result_ms=seen))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO devices (device_id, contiguous_seq, contiguous_epoch, max_seq, max_epoch, version, "
                     "kid, first_seen_ms, last_seen_ms, online, status_ms, stored, duplicates, reorders, gaps_opened, "
                     "gap_seqs, policy_gap_seqs, skew_flagged) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     devices)
    conn.executemany("INSERT INTO rejects (device_id, reason, count, first_ms, last_ms, last_detail) "
                     "VALUES (?,?,?,?,?,?)", rejects)
    conn.execute("COMMIT")
    conn.close()
    tracker.apply(updates, now_ms)
    tracker.close()


def _serve(db: Path, settings: WebSettings) -> tuple[Any, Any, FleetReader]:
    from aggregator.web.app import WebContext, build_app
    from aggregator.web.server import AppServer

    reader = FleetReader(Pool(str(db), size=4))
    ctx = WebContext(reader, settings)
    server = AppServer(build_app(ctx), "127.0.0.1", 0)
    server.start()
    return server, ctx, reader


def p95(values: list[float]) -> float:
    return float(statistics.quantiles(values, n=20, method="inclusive")[18]) if len(values) > 1 else values[0]


def render_times(url: str, reader: FleetReader, rounds: int) -> tuple[list[float], list[float], dict[str, float]]:
    import httpx

    per_query: dict[str, list[float]] = {q: [] for q in QUERIES}
    page, sql = [], []
    with httpx.Client(base_url=url, timeout=30) as c:
        for q in QUERIES:  # warm-up: templates compiled, connections open, SQLite pages cached
            c.get(q).raise_for_status()
        for i in range(rounds):
            q = QUERIES[i % len(QUERIES)]
            t = time.perf_counter()
            r = c.get(q)
            dt = (time.perf_counter() - t) * 1000
            r.raise_for_status()
            page.append(dt)
            per_query[q].append(dt)
            params = dict(p.split("=") for p in q[2:].split("&")) if "?" in q else {}
            t = time.perf_counter()
            reader.fleet(FleetQuery.from_params(params))
            reader.summary()
            sql.append((time.perf_counter() - t) * 1000)
    return page, sql, {q: p95(v) for q, v in per_query.items() if v}


async def _pages(port: int, ids: list[str], rounds: int, timeout_s: float, pages: int) -> list[list[float]]:
    """``pages`` event streams on one fleet page; returns, per page, when each "rows" event arrived."""
    path = "/events/fleet?ids=" + ",".join(ids)
    stamps: list[list[float]] = [[] for _ in range(pages)]
    ready = asyncio.Event()
    connected = 0

    async def page(k: int) -> None:
        nonlocal connected
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode())
        await w.drain()
        buf = b""
        while len(stamps[k]) < rounds + 1:  # + the snapshot sent on connect
            chunk = await r.read(65536)
            if not chunk:
                return
            buf += chunk.replace(b"\r\n", b"\n")
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                if block.startswith(b"event: rows") or b"\nevent: rows" in block:
                    stamps[k].append(time.monotonic())
                elif b"event: summary" in block and k not in seen:
                    seen.add(k)
                    connected += 1
                    if connected == pages:
                        ready.set()
        w.close()

    seen: set[int] = set()
    tasks = [asyncio.create_task(page(k)) for k in range(pages)]
    await asyncio.wait_for(ready.wait(), 30)
    print("ready", flush=True)
    await asyncio.wait(tasks, timeout=timeout_s)
    return stamps


def child_pages(port: int, ids: list[str], rounds: int, timeout_s: float, pages: int = PAGES) -> dict[str, Any]:
    """In a separate process (like the browsers): the open pages."""
    return {"stamps": asyncio.run(_pages(port, ids, rounds, timeout_s, pages))}


def fanout(port: int, ids: list[str], notify: Any, rounds: int, gap_s: float, pages: int = PAGES) -> list[float]:
    """Per round: notify one device shown on all pages; the time until the last page got its row (ms)."""
    import json
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = json.dumps({"port": port, "ids": ids, "rounds": rounds, "timeout_s": rounds * gap_s + 30, "pages": pages})
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_web", "--child", "pages", args], stdout=subprocess.PIPE,
                            text=True, cwd=str(ROOT), env=env)
    assert proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the page process did not connect its streams")
        time.sleep(0.5)
        starts = []
        for i in range(rounds):
            starts.append(time.monotonic())
            notify({ids[i % len(ids)]})
            time.sleep(gap_s)
        out = proc.stdout.read()
    finally:
        proc.wait(60)
    stamps = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])["stamps"]
    lat = []
    for i, t0 in enumerate(starts):
        got = [next((t for t in page if t >= t0), None) for page in stamps]
        if any(t is None for t in got):
            raise RuntimeError(f"round {i}: {sum(t is None for t in got)} pages got no row")
        lat.append((max(t for t in got if t is not None) - t0) * 1000)
    return lat


def core_rates(n: int, tmp: Path, repeats: int = 3) -> tuple[float, float]:
    """Records/s of verify + commit, without and with the tracker on the same records (medians of
    alternating runs: the two are close, and this machine's load drifts)."""
    from aggregator import TrustStore, Verifier
    from aggregator.service import CommittedBatch
    from aggregator.trust import load_certificates
    from bench.bench_aggregator import _fleet, _records

    fleet, devs = _fleet(tmp, 4)
    records = _records(devs, n)
    rates: dict[bool, list[float]] = {False: [], True: []}
    for rep in range(repeats):
        for tracked in (False, True):
            v = Verifier(TrustStore(load_certificates(fleet.ca_cert)))
            path = tmp / f"core-{rep}-{int(tracked)}.db"
            store = open_store(str(path))
            tracker = FleetTracker(str(path)).open() if tracked else None
            now = int(time.time() * 1000)
            t = time.perf_counter()
            for k in range(0, len(records), 500):
                verified = [v.verify(topic, data, now) for topic, data in records[k:k + 500]]
                result = store.commit_batch(verified)
                if tracker is not None:
                    tracker.batch_committed(CommittedBatch(verified, [], [], result, 0.0))
            rates[tracked].append(len(records) / (time.perf_counter() - t))
            store.close()
            if tracker is not None:
                tracker.close()
    return statistics.median(rates[False]), statistics.median(rates[True])


def run(quick: bool = False) -> list[dict[str, Any]]:
    rounds = 100 if quick else 400
    fan_rounds = 10 if quick else 30
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-web-") as d:
        tmp = Path(d)
        db = tmp / "records.db"
        now = int(time.time() * 1000)
        t = time.perf_counter()
        populate(db, DEVICES, now)
        fill_s = time.perf_counter() - t
        settings = WebSettings(enabled=True, port=0, push_interval_ms=250)
        server, ctx, reader = _serve(db, settings)
        try:
            page, sql, worst = render_times(server.url, reader, rounds)
            slowest = max(worst, key=lambda q: worst[q])
            rows.append(row("W1", f"fleet page render, {DEVICES:,} devices (p95 over {len(QUERIES)} queries)",
                            round(p95(page), 1), "ms", baseline=f"SQL alone p95 {p95(sql):.1f} ms",
                            ratio=round(p95(page) / p95(sql), 2), goal=f"≤ {RENDER_GOAL_MS:.0f} ms",
                            passed=p95(page) <= RENDER_GOAL_MS,
                            note=f"p50 {statistics.median(page):.1f} ms; slowest {slowest} p95 "
                                 f"{worst[slowest]:.1f} ms; {rounds} requests; store filled in {fill_s:.1f} s"))
            page1 = reader.fleet(FleetQuery()).rows
            ids = [r["device_id"] for r in page1]
            fan = fanout(server.port, ids, ctx.hub.notify, fan_rounds, settings.push_interval_ms / 1000 + 0.25)
            rows.append(row("W2", f"one SSE update to {PAGES} open fleet pages (p95 over rounds)", round(p95(fan), 1),
                            "ms", goal=f"≤ {FANOUT_GOAL_MS:.0f} ms", passed=p95(fan) <= FANOUT_GOAL_MS,
                            note=f"median {statistics.median(fan):.1f} ms, max {max(fan):.1f} ms over {fan_rounds} "
                                 "rounds; the pages in another process; row rendered once for all pages"))
        finally:
            server.stop()
            reader.pool.close()
        base, tracked = core_rates(4000 if quick else 10000, tmp, 2 if quick else 3)
        rows.append(row("W3", "worker core with the fleet view: verify + commit + tracker", round(tracked, 1),
                        "records/s", baseline=f"without tracker {base:,.0f} records/s", ratio=round(tracked / base, 3),
                        note="what [web] costs the store thread (4 devices, batches of 500, median of alternating "
                             "runs)"))
    return rows


def main() -> int:
    if "--child" in sys.argv:
        child_main(globals())
    else:
        standalone_main(run, (__doc__ or "").splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())

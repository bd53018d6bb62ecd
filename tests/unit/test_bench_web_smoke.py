"""bench/bench_web.py still runs: a tiny synthetic fleet, a few renders, one fan-out round, a short core
run. No timing assertions (figures belong to ``python -m bench`` and docs/benchmarks.md)."""

from __future__ import annotations

import math
from pathlib import Path

from aggregator.web.query import FleetQuery
from bench import bench_web


def test_bench_web_tiny(tmp_path: Path) -> None:
    import time

    from aggregator.config import WebSettings

    db = tmp_path / "records.db"
    bench_web.populate(db, 120, int(time.time() * 1000))
    server, ctx, reader = bench_web._serve(db, WebSettings(enabled=True, port=0, push_interval_ms=50))
    try:
        page, sql, worst = bench_web.render_times(server.url, reader, 10)
        assert len(page) == len(sql) == 10 and all(math.isfinite(x) and x > 0 for x in page + sql)
        assert set(worst) <= set(bench_web.QUERIES)
        ids = [r["device_id"] for r in reader.fleet(FleetQuery()).rows][:5]
        lat = bench_web.fanout(server.port, ids, ctx.hub.notify, 2, 0.2, pages=3)
        assert len(lat) == 2 and all(x >= 0 for x in lat)
    finally:
        server.stop()
        reader.pool.close()
    (tmp_path / "core").mkdir()
    base, tracked = bench_web.core_rates(200, tmp_path / "core", 1)
    assert base > 0 and tracked > 0

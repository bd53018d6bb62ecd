"""The device page's plot data, shaped for uPlot (one x array, then one y array per series): pure.

Results arrive as per-bucket rows (``web_results``: bucket start, label, count, latency sum and max); the
plots want an evenly spaced time axis, so buckets are laid out densely from the first one with data to the
current one (empty buckets count 0 results and have no latency), then merged ``k`` at a time when the
window holds more than ``max_points`` buckets. Telemetry rows are plotted as they came (one point each).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any


def result_series(rows: Iterable[Sequence[Any]], now_ms: int, window_s: int, bucket_s: int,
                  max_points: int = 720) -> dict[str, Any]:
    """``rows``: (bucket_ms, label, n, lat_n, lat_sum_us, lat_max_us). Times in the output are seconds."""
    bucket_ms = bucket_s * 1000
    start = now_ms - window_s * 1000
    per: dict[int, dict[str, list[float]]] = {}
    for b, label, n, lat_n, lat_sum, lat_max in rows:
        b = int(b)
        if b < start - bucket_ms or b > now_ms:
            continue
        cell = per.setdefault(b, {}).setdefault(str(label), [0, 0, 0.0, 0.0])
        cell[0] += int(n)
        cell[1] += int(lat_n)
        cell[2] += float(lat_sum)
        cell[3] = max(cell[3], float(lat_max))
    empty: dict[str, Any] = {"t": [], "rate": [], "lat_mean": [], "lat_max": [], "labels": {}, "bucket_s": bucket_s}
    if not per:
        return empty
    first = min(per)
    last = now_ms - now_ms % bucket_ms
    last = max(last, *per)
    count = (last - first) // bucket_ms + 1
    k = max(1, math.ceil(count / max_points))
    labels = sorted({label for cells in per.values() for label in cells})
    out: dict[str, Any] = {"t": [], "rate": [], "lat_mean": [], "lat_max": [], "labels": {lb: [] for lb in labels},
                           "bucket_s": bucket_s * k}
    for i in range(0, count, k):
        group = [per.get(first + (i + j) * bucket_ms, {}) for j in range(min(k, count - i))]
        start_ms = first + i * bucket_ms
        # the current bucket is still filling: divide by the time it has covered so far, not its length
        span_s = min(bucket_s * len(group), max(1.0, (now_ms - start_ms) / 1000))
        n = sum(c[0] for g in group for c in g.values())
        lat_n = sum(c[1] for g in group for c in g.values())
        lat_sum = sum(c[2] for g in group for c in g.values())
        lat_max = max((c[3] for g in group for c in g.values() if c[1]), default=None)
        out["t"].append((first + i * bucket_ms) // 1000)
        out["rate"].append(round(n / span_s, 6))
        out["lat_mean"].append(round(lat_sum / lat_n, 1) if lat_n else None)
        out["lat_max"].append(lat_max)
        for lb in labels:
            out["labels"][lb].append(sum(int(g[lb][0]) for g in group if lb in g))
    return out


TELEMETRY_SERIES = ("cpu", "mem", "temp", "outbox", "p50", "p99")


def telemetry_series(rows: Iterable[Sequence[Any]], max_points: int = 2000) -> dict[str, list[Any]]:
    """``rows``: (t_ms, cpu %, memory %, temperature °C, outbox depth, latency p50 µs, p99 µs), oldest first;
    keeps the newest ``max_points``."""
    rows = list(rows)[-max_points:]
    out: dict[str, list[Any]] = {"t": [int(r[0]) // 1000 for r in rows]}
    for i, name in enumerate(TELEMETRY_SERIES, start=1):
        out[name] = [r[i] for r in rows]
    return out

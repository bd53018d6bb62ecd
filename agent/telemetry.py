"""Telemetry payloads: a compact health summary built from the agent's snapshot and the host (psutil)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import psutil

_proc = psutil.Process()


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0}
    arr = np.asarray(values, dtype=np.float64)
    p50, p99 = np.percentile(arr, [50, 99])
    return {"p50": round(float(p50), 1), "p99": round(float(p99), 1)}


def host_health(outbox_path: str) -> dict[str, Any]:
    """CPU, load, memory, temperatures and free disk at the outbox. Empty temperatures are normal on VMs."""
    temps: dict[str, float] = {}
    try:
        for name, entries in (psutil.sensors_temperatures() or {}).items():
            for i, e in enumerate(entries):
                temps[f"{name}{i}" if len(entries) > 1 else name] = round(float(e.current), 1)
    except (AttributeError, OSError):
        pass
    try:
        disk_free = psutil.disk_usage(os.path.dirname(os.path.abspath(outbox_path))).free
    except OSError:
        disk_free = -1
    vm = psutil.virtual_memory()
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "load1": round(os.getloadavg()[0], 2),
        "rss_bytes": _proc.memory_info().rss,
        "mem_available_bytes": vm.available,
        "temperatures_c": temps,
        "disk_free_bytes": disk_free,
    }


def telemetry_payload(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The signed telemetry record's payload from an ``Agent.snapshot()``."""
    ob = snapshot["outbox"]
    mq = snapshot["mqtt"]
    pipelines = {}
    for stream, p in snapshot["pipelines"].items():
        src = p.get("source", {})
        pipelines[stream] = {
            "windows": p["windows"],
            "results": p["results"],
            "errors": p["errors"],
            "latency_us": _percentiles(p["latencies_us"]),
            "frame_errors": sum(v for k, v in src.items() if k.startswith("frame_error")),
            "lost_frames": src.get("lost_frames", 0),
        }
    return {
        "uptime_s": snapshot["uptime_s"],
        "host": host_health(ob["path"]),
        "outbox": {k: ob[k] for k in ("depth", "bytes", "max_bytes", "last_seq", "acked_seq", "evicted_records",
                                       "evicted_bytes", "refused_oversize", "errors")},
        "mqtt": {"connected": mq["connected"], "reconnects": mq.get("connects", 0),
                 "disconnects": mq.get("disconnects", 0), "published": mq.get("published", 0)},
        "pipelines": pipelines,
    }

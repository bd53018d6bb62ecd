"""Telemetry: the agent's health as one small map, signed like any record and shown by ``edge-agent status``.

A device in a field box is only visible through what it reports. The payload covers the host (CPU, load,
the agent's RSS and the system's available memory, temperatures, free disk at the outbox), every stage
(per-pipeline inference latency p50/p99, records per second, serial frame errors), the outbox (depth,
bytes, evictions, write errors) and the MQTT link (reconnects, dead links).

Pure core: ``telemetry_payload(snapshot, host, rates)``, ``rates_between`` and ``cpu_percent_between``
take numbers and return numbers. I/O shell: ``host_health`` (psutil), ``CpuMeter`` and ``TelemetryBuilder``,
which remembers the previous counts so it can report rates. Temperatures are ``{}`` on hosts without
sensors (VMs): that is normal.

CPU figures are measured between two builds of the *same* builder: each ``TelemetryBuilder`` owns a
``CpuMeter`` with its own baseline of CPU times. psutil's ``cpu_percent(interval=None)`` keeps one baseline
per process (and per ``Process`` object), so the status writer (every 5 s) and the telemetry loop (every
60 s) used to reset each other's: the signed telemetry figure covered only the few seconds since the last
status write, and a busy minute could show up as 0 %.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

__all__ = ["FIELDS", "CpuMeter", "CpuSample", "TelemetryBuilder", "cpu_percent_between", "host_health",
           "rates_between", "telemetry_payload"]

_proc = psutil.Process()

# Every field of the payload, as dotted paths (``pipelines`` entries are per stream). Tests and
# ``edge-agent status`` check against this list, so a new field is added here first.
FIELDS: tuple[str, ...] = (
    "uptime_s", "epoch", "low_water",
    "host.cpu_percent", "host.agent_cpu_percent", "host.load", "host.rss_bytes", "host.mem_available_bytes",
    "host.mem_total_bytes", "host.temperatures_c", "host.disk_free_bytes",
    "outbox.depth", "outbox.bytes", "outbox.max_bytes", "outbox.last_seq", "outbox.acked_seq",
    "outbox.evicted_records", "outbox.evicted_bytes", "outbox.refused_oversize", "outbox.committed",
    "outbox.records_per_s", "outbox.errors", "outbox.healthy", "outbox.last_error",
    "mqtt.connected", "mqtt.reconnects", "mqtt.disconnects", "mqtt.connect_failures", "mqtt.dead_links",
    "mqtt.published", "mqtt.resends", "mqtt.publish_rejected", "mqtt.last_error",
    "mqtt.state", "mqtt.refused_cause", "mqtt.refused_detail", "mqtt.refused_since", "mqtt.unconnected_s",
    "mqtt.connect_failures_by_cause",
    "receipts.delivery", "receipts.received", "receipts.stale", "receipts.duplicate", "receipts.invalid",
    "receipts.records_rejected", "receipts.signer", "receipts.epoch", "receipts.settled", "receipts.time",
    "receipts.log_state", "receipts.log_size", "receipts.log_evidence_files",
    "pipelines", "updates",
)
PIPELINE_FIELDS: tuple[str, ...] = (
    "windows", "results", "errors", "latency_us.p50", "latency_us.p99", "records_per_s", "frame_errors",
    "lost_frames", "model",
)


def percentile(ordered: list[float], q: float) -> float:
    """``numpy.percentile(values, q)`` (method "linear") of ``ordered`` (sorted, no NaN), bit for bit.

    Pure Python: ``numpy.percentile`` imports ``numpy.ma`` on first use, ≈ 1.2 MB of RSS in every agent for
    two numbers a minute (docs/benchmarks.md, B3). Same arithmetic as numpy's ``_lerp``; equality is a
    property test (tests/unit/test_telemetry.py).
    """
    n = len(ordered)
    virtual = (q / 100) * (n - 1)
    lo = math.floor(virtual)
    hi = min(lo + 1, n - 1)
    lo = min(lo, n - 1)
    gamma = virtual - lo
    a, b = ordered[lo], ordered[hi]
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0}
    ordered = sorted(float(v) for v in values)
    if any(math.isnan(v) for v in ordered):  # numpy's answer (never for latencies)
        return {"p50": float("nan"), "p99": float("nan")}
    return {"p50": round(percentile(ordered, 50), 1), "p99": round(percentile(ordered, 99), 1)}


def _frame_errors(source: Mapping[str, int]) -> int:
    """Serial frame errors: the bridge's total, or the sum of its per-kind counters if only those exist."""
    if "frame_errors" in source:
        return int(source["frame_errors"])
    return sum(int(v) for k, v in source.items() if k.startswith("frame_errors_"))


def rates_between(prev: Mapping[str, int], cur: Mapping[str, int], dt_s: float) -> dict[str, float]:
    """Per-second rates of monotonic counters over ``dt_s``; a counter that went down (restart) counts 0."""
    if dt_s <= 0:
        return dict.fromkeys(cur, 0.0)
    return {k: round(max(0, v - prev.get(k, v)) / dt_s, 1) for k, v in cur.items()}


def counts_of(snapshot: Mapping[str, Any]) -> dict[str, int]:
    """The monotonic counters rates are computed from: committed records and results per pipeline."""
    out = {"outbox": int(snapshot["outbox"].get("committed", 0))}
    for stream, p in snapshot["pipelines"].items():
        out[f"pipeline:{stream}"] = int(p["results"])
    return out


@dataclass(frozen=True)
class CpuSample:
    """CPU times at one instant, in seconds: the whole host (``total``, ``busy``) and this process."""

    wall: float  # monotonic clock
    total: float  # every CPU's time, all states (guest time excluded: it is already in user time)
    busy: float  # total minus idle and iowait
    process: float  # this process: user + system


def cpu_percent_between(prev: CpuSample, cur: CpuSample) -> tuple[float, float]:
    """(host %, process %) between two samples, the way psutil computes them.

    Host: busy share of all CPUs, 0..100. Process: CPU seconds per wall second x 100, so one busy thread is
    100 and a process can exceed 100 on several cores. A counter that went backwards (a new baseline after a
    CPU went offline) or no elapsed time gives 0.
    """
    d_total = cur.total - prev.total
    d_busy = cur.busy - prev.busy
    d_wall = cur.wall - prev.wall
    host = 0.0 if d_total <= 0 else min(100.0, max(0.0, 100.0 * d_busy / d_total))
    proc = 0.0 if d_wall <= 0 else max(0.0, 100.0 * (cur.process - prev.process) / d_wall)
    return round(host, 1), round(proc, 1)


def _cpu_sample(clock: Callable[[], float]) -> CpuSample:
    t = psutil.cpu_times()
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    busy = total - t.idle - getattr(t, "iowait", 0.0)
    p = _proc.cpu_times()
    return CpuSample(wall=clock(), total=total, busy=busy, process=p.user + p.system)


class CpuMeter:
    """CPU use since the previous reading of *this* meter (its own baseline; see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._prev = _cpu_sample(clock)

    def read(self) -> tuple[float, float]:
        """(host %, agent %) since the previous ``read`` (or since the meter was made)."""
        cur = _cpu_sample(self._clock)
        out = cpu_percent_between(self._prev, cur)
        self._prev = cur
        return out


def host_health(outbox_path: str, cpu: CpuMeter | None = None) -> dict[str, Any]:
    """CPU, load, memory, temperatures and free disk at the outbox (psutil). Never raises for a missing reading.

    ``cpu`` is the caller's meter (CPU use since its previous reading); without one the CPU figures cover
    the last 0.1 s.
    """
    temps: dict[str, float] = {}
    try:
        for name, entries in (psutil.sensors_temperatures() or {}).items():
            for i, e in enumerate(entries):
                label = e.label or (f"{name}{i}" if len(entries) > 1 else name)
                key = label if label not in temps else f"{label}{i}"
                temps[key] = round(float(e.current), 1)
    except (AttributeError, OSError):
        pass
    try:
        disk_free = psutil.disk_usage(os.path.dirname(os.path.abspath(outbox_path))).free
    except OSError:
        disk_free = -1
    if cpu is None:
        cpu = CpuMeter()
        time.sleep(0.1)
    host_cpu, agent_cpu = cpu.read()
    vm = psutil.virtual_memory()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - every Linux has it
        load = [0.0, 0.0, 0.0]
    return {
        "cpu_percent": host_cpu,
        "agent_cpu_percent": agent_cpu,
        "load": load,
        "rss_bytes": _proc.memory_info().rss,
        "mem_available_bytes": vm.available,
        "mem_total_bytes": vm.total,
        "temperatures_c": temps,
        "disk_free_bytes": disk_free,
    }


def telemetry_payload(snapshot: Mapping[str, Any], host: Mapping[str, Any] | None = None,
                      rates: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The telemetry payload from an ``Agent.snapshot()``, host readings and rates (pure when both are given)."""
    ob = snapshot["outbox"]
    mq = snapshot["mqtt"]
    rc = snapshot.get("receipt", {})
    rates = rates or {}
    pipelines = {}
    for stream, p in snapshot["pipelines"].items():
        src = p.get("source", {})
        pipelines[stream] = {
            "windows": p["windows"],
            "results": p["results"],
            "errors": p["errors"],
            "latency_us": _percentiles(p["latencies_us"]),
            "records_per_s": rates.get(f"pipeline:{stream}", 0.0),
            "frame_errors": _frame_errors(src),
            "lost_frames": int(src.get("lost_frames", 0)),
            "model": dict(p.get("model", {})),
        }
    connects = int(mq.get("connects", 0))
    return {
        "uptime_s": snapshot["uptime_s"],
        "epoch": snapshot.get("epoch", 0),
        "low_water": int(snapshot.get("low_water", 0)),
        "host": dict(host) if host is not None else host_health(ob["path"]),
        "outbox": {
            **{k: ob.get(k, 0) for k in ("depth", "bytes", "max_bytes", "last_seq", "acked_seq", "evicted_records",
                                         "evicted_bytes", "refused_oversize", "committed", "errors")},
            "records_per_s": rates.get("outbox", 0.0),
            "healthy": bool(ob.get("healthy", True)),
            "last_error": ob.get("last_error"),
        },
        "mqtt": {
            "connected": bool(mq["connected"]),
            "reconnects": max(0, connects - 1),
            "disconnects": int(mq.get("disconnects", 0)),
            "connect_failures": int(mq.get("connect_failures", 0)),
            "dead_links": int(mq.get("dead_link_detected", 0)),
            "published": int(mq.get("published", 0)),
            "resends": int(mq.get("resends", 0)),
            "publish_rejected": int(mq.get("publish_rejected", 0)),
            "last_error": mq.get("last_error"),
            "state": mq.get("state", "connected" if mq["connected"] else "connecting"),
            "refused_cause": mq.get("refused_cause"),
            "refused_detail": mq.get("refused_detail"),
            "refused_since": mq.get("refused_since"),
            "unconnected_s": float(mq.get("unconnected_s", 0.0)),
            "connect_failures_by_cause": dict(mq.get("connect_failures_by_cause", {})),
        },
        "receipts": {
            "delivery": rc.get("delivery"),
            "received": int(mq.get("receipts", 0)),
            "stale": int(mq.get("receipts_stale", 0)),
            "duplicate": int(mq.get("receipts_duplicate", 0)),
            "invalid": dict(mq.get("receipts_invalid", {})),
            "records_rejected": dict(mq.get("records_rejected", {})),
            "signer": rc.get("signer"),
            "epoch": rc.get("epoch"),
            "settled": rc.get("settled"),
            "time": rc.get("time"),
            "log_state": (rc.get("log") or {}).get("state", "off"),  # ok | inconsistent | off
            "log_size": (rc.get("log") or {}).get("size"),
            "log_evidence_files": int((rc.get("log") or {}).get("evidence_files", 0)),
        },
        "pipelines": pipelines,
        "updates": dict(snapshot.get("updates") or {"enabled": False}),
    }


class TelemetryBuilder:
    """Builds payloads from successive snapshots, reporting rates and CPU use since the previous build."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._prev: dict[str, int] | None = None
        self._prev_t = 0.0
        self.cpu = CpuMeter()  # this builder's own CPU baseline: the first build covers the time since here

    def build(self, snapshot: Mapping[str, Any], host: Mapping[str, Any] | None = None) -> dict[str, Any]:
        now = self._clock()
        counts = counts_of(snapshot)
        if self._prev is None:
            up = float(snapshot.get("uptime_s", 0.0))
            rates = rates_between(dict.fromkeys(counts, 0), counts, up) if up > 0 else dict.fromkeys(counts, 0.0)
        else:
            rates = rates_between(self._prev, counts, now - self._prev_t)
        self._prev, self._prev_t = counts, now
        if host is None:
            host = host_health(str(snapshot["outbox"]["path"]), self.cpu)
        return telemetry_payload(snapshot, host, rates)

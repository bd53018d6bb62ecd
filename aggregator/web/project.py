"""What the fleet page shows of a device, taken from its verified records: pure, never raises on odd payloads.

A device reports itself in two signed records: the birth record (``status``: agent version, runtime, models
with their digests and versions) and telemetry (outbox depth and bytes, host CPU, memory, temperatures, MQTT
state, the last receipt it verified). The payloads are the device's own words: a payload of an older or
newer agent, or a broken one, must still give a row, so every field is read defensively and clipped.

The records/s figure is a sliding one-minute window kept in two minute-aligned buckets (the count of the
current minute and of the one before): enough for "records per second over the last minute" without
keeping per-record times, and additive, so several workers of a shared subscription update it with plain
SQL arithmetic (``aggregator.web.tracker``). ``rate_per_s`` and the SQL expression of ``aggregator.web.reader``
compute the same figure (tested against each other).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

BUCKET_MS = 60_000
_TEXT_MAX = 120


def bucket_of(now_ms: int) -> int:
    """Start of the minute bucket holding ``now_ms``."""
    return now_ms - now_ms % BUCKET_MS


def roll(start_ms: int, prev: int, cur: int, bucket_ms: int, n: int) -> tuple[int, int, int]:
    """Add ``n`` records seen in the bucket starting at ``bucket_ms``; returns (start, prev, cur).

    A bucket at or before the current one (a worker whose clock lags) counts into the current one.
    """
    if start_ms >= bucket_ms:
        return start_ms, prev, cur + n
    if start_ms == bucket_ms - BUCKET_MS:
        return bucket_ms, cur, n
    return bucket_ms, 0, n


def rate_per_s(start_ms: int, prev: int, cur: int, now_ms: int) -> float:
    """Records per second over the minute before ``now_ms``: all of the current bucket so far plus the part
    of the previous bucket still inside the window (assumed evenly spread)."""
    age = now_ms - start_ms
    if age < 0:
        return cur / 60.0
    if age < BUCKET_MS:
        return (cur + prev * (BUCKET_MS - age) / BUCKET_MS) / 60.0
    if age < 2 * BUCKET_MS:
        return cur * (2 * BUCKET_MS - age) / BUCKET_MS / 60.0
    return 0.0


def _text(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return v[:_TEXT_MAX]
    return None


def _int(v: Any) -> int | None:
    if v.__class__ is not int:  # bool is an int subclass, not a count
        return None
    return v if -(2**62) < v < 2**62 else None


def _num(v: Any) -> float | None:
    if v.__class__ not in (int, float):  # bool, and every non-number
        return None
    f = float(v)
    return f if math.isfinite(f) and abs(f) < 1e15 else None


def _map(v: Any) -> Mapping[Any, Any]:
    if isinstance(v, dict):  # what CBOR decodes to; the abstract check below is slow
        return v
    return v if isinstance(v, Mapping) else {}


@dataclass(frozen=True)
class ModelInfo:
    """One model a device says it runs (birth record)."""

    stream: str
    name: str
    sha256: str
    version: str | None = None


@dataclass(frozen=True)
class StatusFields:
    """What a birth record says about the device."""

    agent_version: str | None = None
    runtime: str | None = None
    python: str | None = None
    machine: str | None = None
    key_tier: str | None = None
    delivery: str | None = None
    models: tuple[ModelInfo, ...] = ()

    @property
    def model_sha256(self) -> str | None:
        return self.models[0].sha256 if self.models else None

    @property
    def model_version(self) -> str | None:
        versions = sorted({m.version for m in self.models if m.version})
        return ", ".join(versions)[:_TEXT_MAX] if versions else None


def status_fields(payload: Any) -> StatusFields:
    """Read a birth record's payload (agent's ``_birth_draft``); unknown shapes give empty fields."""
    p = _map(payload)
    models: list[ModelInfo] = []
    raw_models = p.get("models")
    if isinstance(raw_models, list):
        for m in raw_models[:16]:
            m = _map(m)
            digest = _text(m.get("sha256"))
            if digest is None:
                continue
            version = m.get("version")
            models.append(ModelInfo(_text(m.get("stream")) or "", _text(m.get("model")) or "", digest.lower()[:64],
                                    str(version)[:40] if isinstance(version, (str, int)) and not isinstance(
                                        version, bool) else None))
    return StatusFields(_text(p.get("agent")), _text(p.get("runtime")), _text(p.get("python")),
                        _text(p.get("machine")), _text(p.get("key_tier")), _text(p.get("delivery")), tuple(models))


@dataclass(frozen=True)
class TelemetryFields:
    """What a telemetry record says about the device's health."""

    outbox_depth: int | None = None
    outbox_bytes: int | None = None
    outbox_oldest_age_s: float | None = None  # only if the agent reports it; else derived from low_water
    low_water: int | None = None
    evicted_records: int | None = None
    cpu_percent: float | None = None
    mem_percent: float | None = None
    rss_bytes: int | None = None
    temperature_c: float | None = None  # the hottest sensor
    mqtt_state: str | None = None
    receipt_settled: int | None = None  # the last receipt the device verified
    receipt_time_ms: int | None = None
    latency_p50_us: float | None = None  # the slowest pipeline's median inference latency
    latency_p99_us: float | None = None


def telemetry_fields(payload: Any) -> TelemetryFields:
    """Read a telemetry payload (``agent.telemetry.telemetry_payload``); unknown shapes give empty fields."""
    p = _map(payload)
    ob, host, mq, rc = _map(p.get("outbox")), _map(p.get("host")), _map(p.get("mqtt")), _map(p.get("receipts"))
    avail, total = _num(host.get("mem_available_bytes")), _num(host.get("mem_total_bytes"))
    mem = round(100.0 * (1 - avail / total), 1) if avail is not None and total and total > 0 else None
    temps = [t for t in (_num(v) for v in list(_map(host.get("temperatures_c")).values())[:64]) if t is not None]
    p50s, p99s = [], []
    for pipe in list(_map(p.get("pipelines")).values())[:16]:
        lat = _map(_map(pipe).get("latency_us"))
        if (v := _num(lat.get("p50"))) is not None:
            p50s.append(v)
        if (v := _num(lat.get("p99"))) is not None:
            p99s.append(v)
    oldest = _num(ob.get("oldest_age_s"))
    return TelemetryFields(
        outbox_depth=_int(ob.get("depth")), outbox_bytes=_int(ob.get("bytes")),
        outbox_oldest_age_s=oldest if oldest is None or oldest >= 0 else None,
        low_water=_int(p.get("low_water")), evicted_records=_int(ob.get("evicted_records")),
        cpu_percent=_num(host.get("cpu_percent")), mem_percent=mem, rss_bytes=_int(host.get("rss_bytes")),
        temperature_c=max(temps) if temps else None, mqtt_state=_text(mq.get("state")),
        receipt_settled=_int(rc.get("settled")),
        receipt_time_ms=_time_ms(rc.get("time")),
        latency_p50_us=max(p50s) if p50s else None, latency_p99_us=max(p99s) if p99s else None)


def _time_ms(v: Any) -> int | None:
    """A time as the agent writes it (ISO 8601 text; or seconds / milliseconds since the epoch)."""
    if isinstance(v, str) and len(v) <= 40:
        try:
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return int(t.timestamp() * 1000)
    f = _num(v)
    if f is None or f < 0:
        return None
    return int(f * 1000) if f < 1e11 else int(f)


@dataclass(frozen=True)
class ResultPoint:
    """One result record, as the device page plots it."""

    t_ms: int
    label: str | None
    latency_us: float | None


def result_point(capture_ms: int, payload: Any) -> ResultPoint:
    """A result payload (``agent.pipeline.result_payload``) as a plot point."""
    p = _map(payload)
    lat = _num(p.get("latency_us"))
    return ResultPoint(capture_ms, _text(p.get("label")), lat if lat is None or lat >= 0 else None)

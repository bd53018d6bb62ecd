"""The telemetry payload (pure) from snapshots, rates, the host reading (psutil), and the FIELDS contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.telemetry import FIELDS, PIPELINE_FIELDS, TelemetryBuilder, host_health, rates_between, telemetry_payload

HOST = {"cpu_percent": 12.5, "agent_cpu_percent": 3.0, "load": [0.5, 0.4, 0.3], "rss_bytes": 60_000_000,
        "mem_available_bytes": 1_000_000_000, "mem_total_bytes": 2_000_000_000, "temperatures_c": {},
        "disk_free_bytes": 5_000_000}


def snapshot(results: int = 100, committed: int = 120, uptime: float = 10.0,
             source: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "device_id": "dev-1", "epoch": 3, "uptime_s": uptime, "pid": 1,
        "outbox": {"path": "/tmp/x/outbox.db", "depth": 7, "bytes": 2100, "max_bytes": 65536, "last_seq": 120,
                   "acked_seq": 113, "evicted_records": 2, "evicted_bytes": 600, "refused_oversize": 1,
                   "errors": 4, "healthy": False, "last_error": "database or disk is full", "committed": committed},
        "mqtt": {"connected": True, "connects": 3, "disconnects": 2, "connect_failures": 5, "published": 130,
                 "dead_link_detected": 1, "resends": 9, "publish_rejected": 0, "last_error": None},
        "pipelines": {"vibration": {"windows": results, "results": results, "errors": 0,
                                    "latencies_us": [float(x) for x in range(1, 101)],
                                    "source": source if source is not None else {
                                        "frame_errors": 6, "frame_errors_crc": 4, "frame_errors_cobs": 2,
                                        "lost_frames": 3}}},
        "queue_depth": 0,
    }


def get(doc: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        assert part in doc, f"missing {dotted}"
        doc = doc[part]
    return doc


def test_payload_has_every_field_and_maps_counters() -> None:
    p = telemetry_payload(snapshot(), HOST, {"outbox": 12.0, "pipeline:vibration": 10.0})
    for f in FIELDS:
        get(p, f)
    for f in PIPELINE_FIELDS:
        get(p["pipelines"]["vibration"], f)
    assert p["host"] == HOST
    assert p["mqtt"]["reconnects"] == 2, "the first connect is not a reconnect"
    assert p["mqtt"]["dead_links"] == 1
    assert p["outbox"]["healthy"] is False and "disk is full" in p["outbox"]["last_error"]
    assert p["outbox"]["records_per_s"] == 12.0
    v = p["pipelines"]["vibration"]
    assert v["records_per_s"] == 10.0
    assert v["frame_errors"] == 6, "the total, not total + per-kind counters"
    assert v["lost_frames"] == 3
    assert v["latency_us"] == {"p50": 50.5, "p99": 99.0}


def test_frame_errors_from_per_kind_counters_only_and_none_at_all() -> None:
    p = telemetry_payload(snapshot(source={"frame_errors_crc": 2, "frame_errors_length": 1}), HOST, {})
    assert p["pipelines"]["vibration"]["frame_errors"] == 3
    p = telemetry_payload(snapshot(source={"blocks": 5}), HOST, {})
    assert p["pipelines"]["vibration"]["frame_errors"] == 0
    assert p["pipelines"]["vibration"]["lost_frames"] == 0


def test_no_latency_samples_yields_zero_percentiles() -> None:
    s = snapshot()
    s["pipelines"]["vibration"]["latencies_us"] = []
    assert telemetry_payload(s, HOST, {})["pipelines"]["vibration"]["latency_us"] == {"p50": 0.0, "p99": 0.0}


def test_payload_is_cbor_encodable() -> None:
    p = telemetry_payload(snapshot(), HOST, {})
    assert cbor2.loads(cbor2.dumps(p)) == p


def test_builder_reports_rates_since_the_previous_build() -> None:
    t = [100.0]
    b = TelemetryBuilder(clock=lambda: t[0])
    first = b.build(snapshot(results=100, committed=120, uptime=10.0), HOST)
    assert first["pipelines"]["vibration"]["records_per_s"] == 10.0, "first build: average since start"
    t[0] += 5.0
    second = b.build(snapshot(results=150, committed=180, uptime=15.0), HOST)
    assert second["pipelines"]["vibration"]["records_per_s"] == 10.0
    assert second["outbox"]["records_per_s"] == 12.0


@given(st.dictionaries(st.text(max_size=5), st.integers(0, 10**9)),
       st.dictionaries(st.text(max_size=5), st.integers(0, 10**9)),
       st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
def test_rates_are_never_negative_and_cover_every_current_counter(prev: dict[str, int], cur: dict[str, int],
                                                                   dt: float) -> None:
    r = rates_between(prev, cur, dt)
    assert set(r) == set(cur)
    assert all(v >= 0 for v in r.values())


def test_host_health_reads_this_host(tmp_path: Path) -> None:
    h = host_health(str(tmp_path / "outbox.db"))
    assert set(h) == {f.split(".", 1)[1] for f in FIELDS if f.startswith("host.")}
    assert h["rss_bytes"] > 10_000_000
    assert 0 < h["mem_available_bytes"] <= h["mem_total_bytes"]
    assert h["disk_free_bytes"] > 0
    assert len(h["load"]) == 3
    assert isinstance(h["temperatures_c"], dict), "empty on hosts without sensors, which is normal"
    assert all(isinstance(v, float) for v in h["temperatures_c"].values())


def test_host_health_with_a_missing_outbox_directory_reports_minus_one() -> None:
    assert host_health("/nonexistent/dir/outbox.db")["disk_free_bytes"] == -1


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12), min_size=1,
                max_size=300),
       st.sampled_from([0.0, 1.0, 25.0, 50.0, 90.0, 99.0, 99.9, 100.0]))
def test_percentile_is_numpys_linear_percentile(values: list[float], q: float) -> None:
    """The pure-Python percentile (no numpy.ma import in the agent) equals numpy's, bit for bit."""
    import numpy as np

    from agent.telemetry import percentile

    assert percentile(sorted(values), q) == float(np.percentile(np.asarray(values, dtype=np.float64), q))

"""Agent metrics (pure part): families from a snapshot, parsed back with prometheus-client's parser, named by
the Prometheus conventions; the latency histogram; the ``[metrics]`` config section."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from agent.config import parse_config
from agent.errors import ConfigError
from agent.link_health import CAUSES
from agent.metrics import LATENCY_BUCKETS_S, LatencyHistogram, families
from tests.support.prom import parse, sample_names, violations
from tests.unit.test_telemetry import snapshot

REPO = Path(__file__).resolve().parents[2]
PREFIXES = ("edge_agent", "process_")


class _Static:
    def __init__(self, fams: list[Any]) -> None:
        self.fams = fams

    def collect(self) -> Any:
        return iter(self.fams)


def exposition(snap: dict[str, Any], **kw: Any) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Static(families(snap, version="9.9.9", now=1_700_000_000.0, **kw)))
    return generate_latest(reg).decode()


def full_snapshot() -> dict[str, Any]:
    snap = snapshot()
    h = LatencyHistogram()
    for us in (4.0, 8.0, 12.0, 900.0, 2_000_000.0):
        h.observe_us(us)
    snap["pipelines"]["vibration"]["latency_histogram"] = h.snapshot()
    snap["outbox"].update(delivered=40, file_bytes=123_456, disk_free_bytes=9_000_000)
    snap["mqtt"].update(connect_failures_by_cause={"tls_alert": 3}, receipts=7, receipts_stale=1, receipts_duplicate=2,
                        receipts_invalid={"bad_signature": 2, "untrusted": 1}, records_rejected={"bad_sig": 1},
                        rejected_reasons={"Not authorized": 4}, unconnected_s=12.5)
    snap["receipt"] = {"delivery": "aggregator"}
    return snap


def test_every_family_follows_the_naming_conventions() -> None:
    text = exposition(full_snapshot(), clock_synced=True, healthy=False)
    assert violations(text, PREFIXES) == []


def test_the_checker_catches_what_the_conventions_forbid() -> None:
    bad = ("# HELP edge_agent_latency_ms x\n# TYPE edge_agent_latency_ms gauge\nedge_agent_latency_ms 1\n"
           "# HELP edge_agent_things x\n# TYPE edge_agent_things counter\nedge_agent_things 1\n"
           "# HELP edge_agent_rows_total x\n# TYPE edge_agent_rows_total gauge\nedge_agent_rows_total 1\n"
           "# HELP other_size x\n# TYPE other_size gauge\nother_size 1\n")
    found = "\n".join(violations(bad, PREFIXES))
    for expected in ("'ms' is not a base unit", "edge_agent_latency_ms: measures time",
                     "edge_agent_rows_total: _total on", "other_size: no application prefix",
                     "other_size: measures size"):
        assert expected in found, found


def test_values_map_from_the_snapshot() -> None:
    fams = parse(exposition(full_snapshot(), clock_synced=False, healthy=True))

    def value(name: str, **labels: str) -> float:
        for s in fams[name].samples:
            if s.labels == labels and not s.name.endswith("_created"):
                return float(s.value)
        raise AssertionError(f"{name}{labels} not found in {fams[name].samples}")

    assert value("edge_agent_outbox_rows") == 7
    assert value("edge_agent_outbox_bytes") == 2100
    assert value("edge_agent_records_committed") == 120
    assert value("edge_agent_records_delivered") == 40
    assert value("edge_agent_records_evicted") == 2
    assert value("edge_agent_outbox_writable") == 0, "the snapshot's outbox is unhealthy (disk full)"
    assert value("edge_agent_healthy") == 1 and value("edge_agent_clock_synchronized") == 0
    assert value("edge_agent_mqtt_connect_failures", cause="tls_alert") == 3
    assert {s.labels["cause"] for s in fams["edge_agent_mqtt_connect_failures"].samples} == set(CAUSES), \
        "every cause is exported from the start (0), so rate() works before the first failure"
    assert value("edge_agent_receipts", result="valid") == 7
    assert value("edge_agent_receipts", result="invalid") == 3
    assert value("edge_agent_receipts_invalid", reason="bad_signature") == 2
    assert value("edge_agent_mqtt_unconnected_seconds") == 12.5
    assert value("edge_agent_start_time_seconds") == 1_700_000_000.0 - 10.0
    info = fams["edge_agent_info"]
    assert info.type == "gauge" and info.samples[0].value == 1
    assert info.samples[0].labels == {"version": "9.9.9", "device_id": "dev-1", "delivery": "aggregator"}
    hist = fams["edge_agent_inference_latency_seconds"]
    assert hist.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert buckets["+Inf"] == 5 and buckets["1e-05"] == 2 and buckets["0.001"] == 4 and buckets["1.0"] == 4
    count = [s.value for s in hist.samples if s.name.endswith("_count")]
    assert count == [5]


def test_an_empty_snapshot_still_renders() -> None:
    text = exposition({"device_id": "d", "outbox": {}, "mqtt": {}, "pipelines": {}})
    assert violations(text, PREFIXES) == []
    assert "edge_agent_outbox_rows 0.0" in text


@given(st.lists(st.floats(min_value=0, max_value=5e6, allow_nan=False), max_size=200))
def test_histogram_buckets_are_cumulative_and_agree_with_count(values: list[float]) -> None:
    h = LatencyHistogram()
    for v in values:
        h.observe_us(v)
    snap = h.snapshot()
    counts = [n for _, n in snap["buckets"]]
    assert counts == sorted(counts), "cumulative"
    assert snap["buckets"][-1] == ("+Inf", len(values)) and snap["count"] == len(values)
    assert abs(snap["sum_s"] - sum(values) / 1e6) <= 1e-9 * max(1.0, sum(values))
    for (le, n) in snap["buckets"][:-1]:
        assert n == sum(1 for v in values if v / 1e6 <= float(le)), "le is inclusive"


def test_histogram_refuses_unsorted_bounds() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        LatencyHistogram((0.1, 0.01))
    assert list(LATENCY_BUCKETS_S) == sorted(LATENCY_BUCKETS_S)


# ----- [metrics] config ---------------------------------------------------------------------------------

def base(**metrics: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"device_id": "dev-1", "key_uri": "file:/tmp/k.key",
                         "pipeline": [{"stream": "v", "model": "m.tflite", "window": 128,
                                       "source": {"type": "simulated"}}],
                         "outbox": {"path": "/tmp/o/outbox.db"}}
    if metrics:
        d["metrics"] = metrics
    return d


def test_metrics_defaults_to_off_with_a_loopback_port() -> None:
    cfg = parse_config(base(), "/etc/edge-agent/agent.toml")
    assert (cfg.metrics.mode, cfg.metrics.bind, cfg.metrics.port) == ("off", "127.0.0.1", 9464)


def test_metrics_textfile_path_is_resolved_against_the_config() -> None:
    cfg = parse_config(base(mode="textfile", textfile_path="prom/edge.prom"), "/etc/edge-agent/agent.toml")
    assert cfg.metrics.textfile_path == "/etc/edge-agent/prom/edge.prom"


@pytest.mark.parametrize(("metrics", "key", "message"), [
    ({"mode": "push"}, "metrics.mode", "must be one of 'off', 'http', 'textfile'"),
    ({"mode": "http", "bind": "0.0.0.0"}, "metrics.bind", "must be a loopback address"),
    ({"mode": "http", "bind": "192.168.1.5"}, "metrics.bind", "must be a loopback address"),
    ({"mode": "http", "port": 0}, "metrics.port", "must be 1..65535"),
    ({"mode": "textfile", "textfile_path": "/var/lib/x/edge.txt"}, "metrics.textfile_path", "*.prom"),
    ({"interval_s": 0.5}, "metrics.interval_s", "must be 1..3600"),
    ({"prot": 1}, "metrics.prot", "unknown key"),
])
def test_metrics_mistakes_name_the_key(metrics: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(base(**metrics), "/etc/edge-agent/agent.toml")
    assert (key, ) == (e.value.problems[0][0],) and message in e.value.problems[0][1], e.value.problems


def test_ipv6_loopback_is_accepted() -> None:
    assert parse_config(base(mode="http", bind="::1"), "/x/agent.toml").metrics.bind == "::1"


# ----- docs and dashboard --------------------------------------------------------------------------------

def _exported_names() -> set[str]:
    return sample_names(exposition(full_snapshot(), clock_synced=True, healthy=True))


def test_docs_list_every_agent_metric_and_nothing_else() -> None:
    doc = (REPO / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(edge_agent_[a-z0-9_]+)`", doc, re.MULTILINE))
    fams = parse(exposition(full_snapshot(), clock_synced=True, healthy=True))
    exported = set()
    for f in fams.values():
        if not f.name.startswith("edge_agent"):
            continue
        exported.add(f.name + ("_total" if f.type == "counter" else ""))
    assert documented == exported, (f"undocumented: {sorted(exported - documented)}; "
                                    f"documented but not exported: {sorted(documented - exported)}")


def test_grafana_dashboard_queries_only_metrics_that_exist() -> None:
    dash = json.loads((REPO / "docs" / "grafana-agent.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    names = _exported_names() | {"process_cpu_seconds_total", "process_resident_memory_bytes"}
    used = {n for e in exprs for n in re.findall(r"\b((?:edge_agent|process)_[a-z0-9_]+)", e)}
    assert used, exprs
    missing = sorted(used - names)
    assert not missing, f"the dashboard queries metrics the agent does not export: {missing}"
    for v in dash.get("templating", {}).get("list", []):
        for n in re.findall(r"\b(edge_agent_[a-z0-9_]+)", str(v.get("query", ""))):
            assert n in names, n

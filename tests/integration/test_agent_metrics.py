"""The running agent's metrics, scraped for real: ``/metrics`` on a loopback port and the node-exporter textfile,
both parsed with prometheus-client's parser, names checked against the conventions, values moving."""

from __future__ import annotations

import os
import stat
import urllib.request
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProcess, agent_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.prom import parse, violations
from tests.support.wait import free_port, port_open, wait_for

pytestmark = pytest.mark.integration
PREFIXES = ("edge_agent", "process_")


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name`` (as exposed: ``x_total`` for counters) with exactly ``labels``."""
    for fam in parse(text).values():
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"{name}{labels} not in the exposition")


def hist_count(text: str, stream: str) -> float:
    fam = parse(text)["edge_agent_inference_latency_seconds"]
    return sum(float(s.value) for s in fam.samples if s.name.endswith("_count") and s.labels["stream"] == stream)


def test_http_metrics_on_loopback(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    port = free_port()
    cfg = agent_config(tmp_path, f"dev-{unique_id}", mosquitto.url,
                       pipeline=[{"stream": "vibration", "model": str(Path(__file__).resolve().parents[2] / "models"
                                                                         / "vibration-int8.tflite"),
                                  "window": 128, "hop": 128,
                                  "source": {"type": "simulated", "fault": "imbalance", "rate_hz": 2000.0}}],
                       metrics={"mode": "http", "port": port})
    agent = AgentProcess(write_config(tmp_path / "agent.toml", cfg)).start()
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: port_open(port), timeout=30, what=f"metrics port\n{agent.log()[-2000:]}")

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=5) as r:
                assert r.status == 200
                assert r.headers["Content-Type"].startswith("text/plain")
                return str(r.read().decode())

        def delivering() -> str | None:
            text = scrape()
            ok = (value(text, "edge_agent_records_delivered_total") > 0 and hist_count(text, "vibration") > 0
                  and value(text, "edge_agent_mqtt_connected") == 1)
            return text if ok else None

        text = wait_for(delivering, timeout=30, what="records delivered and latencies observed")
        assert text is not None
        assert violations(text, PREFIXES) == []
        first_committed = value(text, "edge_agent_records_committed_total")
        assert first_committed > 0
        assert value(text, "edge_agent_info", version=value_label(text, "version"), device_id=f"dev-{unique_id}",
                     delivery="broker") == 1
        assert value(text, "edge_agent_mqtt_connect_failures_total", cause="tls_alert") == 0
        assert value(text, "edge_agent_outbox_limit_bytes") == 64 * 1024 * 1024
        assert value(text, "edge_agent_outbox_file_bytes") > 0
        assert value(text, "process_resident_memory_bytes") > 10_000_000
        wait_for(lambda: value(scrape(), "edge_agent_records_committed_total") > first_committed, timeout=20,
                 what="the counter moves between scrapes")
        assert agent.terminate() == 0
        assert not port_open(port), "the port closes with the agent"
    finally:
        agent.stop()
    assert "Traceback" not in agent.log()


def value_label(text: str, label: str) -> str:
    return str(parse(text)["edge_agent_info"].samples[0].labels[label])


def test_textfile_is_written_atomically_for_node_exporter(tmp_path: Path, mosquitto: Mosquitto,
                                                          unique_id: str) -> None:
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    prom = textdir / "edge_agent.prom"
    cfg = agent_config(tmp_path, f"dev-{unique_id}", mosquitto.url,
                       metrics={"mode": "textfile", "textfile_path": str(prom), "interval_s": 1.0})
    agent = AgentProcess(write_config(tmp_path / "agent.toml", cfg)).start()
    try:
        wait_for(prom.exists, timeout=30, what=f"textfile\n{agent.log()[-2000:]}")
        first = prom.read_text()
        assert violations(first, PREFIXES) == []
        t0 = value(first, "edge_agent_records_committed_total")
        seen = [first]

        def rewritten() -> bool:
            text = prom.read_text()  # every read is a whole file: parse() raises on a torn one
            parse(text)
            seen.append(text)
            return value(text, "edge_agent_records_committed_total") > t0
        wait_for(rewritten, timeout=20, what="a rewrite with new counts")
        assert stat.S_IMODE(os.stat(prom).st_mode) == 0o644, "node-exporter runs as another user"
        assert agent.terminate() == 0
    finally:
        agent.stop()
    final = prom.read_text()
    last_seen = max(value(t, "edge_agent_records_committed_total") for t in seen)
    assert value(final, "edge_agent_records_committed_total") >= last_seen, "the final write holds the final counts"
    assert value(final, "edge_agent_mqtt_connected") == 0, "written after the link stopped"
    assert sorted(p.name for p in textdir.iterdir()) == ["edge_agent.prom"], "no temp file left behind"


def test_a_metrics_port_in_use_does_not_stop_the_agent(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    status_path = tmp_path / "status.json"
    cfg = agent_config(tmp_path, f"dev-{unique_id}", mosquitto.url, metrics={"mode": "http", "port": port},
                       status={"path": str(status_path), "interval_s": 0.3})
    agent = AgentProcess(write_config(tmp_path / "agent.toml", cfg)).start()
    try:
        wait_for(lambda: "cannot listen on 127.0.0.1" in agent.log(), timeout=30, what="the metrics error logged")
        wait_for(status_path.exists, timeout=10, what="status file: the agent runs on")
        assert agent.alive()
        assert agent.terminate() == 0
    finally:
        agent.stop()
        blocker.close()

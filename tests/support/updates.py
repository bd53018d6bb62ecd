"""Agents with ``[updates]`` for the signed-update tests: config, in-process agent, records by digest."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.config import load_config
from agent.service import Agent
from envelope import open_record
from tests.support.agent_proc import agent_config, to_toml, write_config
from tests.support.mqtt_sub import Message

FAST_HEALTH = {"health_window_s": 1.0, "health_min_windows": 3}


def updates_config(tmp: Path, device: str, broker_url: str, repo_url: str, root: Path, *,
                   source: dict[str, Any] | None = None, **updates: Any) -> dict[str, Any]:
    cfg = agent_config(tmp, device, broker_url, source=source or {
        "type": "simulated", "fault": "normal", "realtime": True, "rate_hz": 4000.0, "block_samples": 64})
    cfg["updates"] = {"repository_url": repo_url, "root": str(root), "poll_interval_s": 0.2, **FAST_HEALTH,
                      **updates}
    cfg["status"] = {"interval_s": 0.2}
    return cfg


def write(tmp: Path, cfg: dict[str, Any]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    return write_config(tmp / "agent.toml", cfg)


@contextmanager
def running_agent(conf: Path) -> Iterator[Agent]:
    agent = Agent(load_config(str(conf)))
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()


def results_by_seq(msgs: list[Message]) -> list[tuple[int, bytes, dict[str, Any]]]:
    """(seq, model digest, payload) of every result record received, in seq order, deduplicated."""
    out = {}
    for m in msgs:
        if "/result/" not in m.topic:
            continue
        rec = open_record(m.payload)
        assert rec.model_sha256 is not None
        out[rec.seq] = (rec.seq, bytes(rec.model_sha256), rec.payload())
    return [out[k] for k in sorted(out)]


__all__ = ["FAST_HEALTH", "results_by_seq", "running_agent", "to_toml", "updates_config", "write"]

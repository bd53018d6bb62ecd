"""Agents with ``[updates]`` for the signed-update tests: config, in-process agent, records by digest."""

from __future__ import annotations

import threading
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




class UpdaterRig:
    """A pipeline (vibration model v1, simulated source in real time) and a ModelUpdater on a repository, in
    process and without a broker: drafts are collected, the wall clock and receipt time can be injected."""

    def __init__(self, tmp: Path, repo_url: str, root: Path, *, device_id: str = "dev-rig-0001",
                 wall: Any = None, receipt_time: Any = None, model: Path | None = None, **updates: Any) -> None:
        import queue
        import time

        from agent.inference import Model
        from agent.model_meta import load_model_meta
        from agent.pipeline import PipelineRunner
        from agent.settings import PipelineConfig, SimulatedSourceConfig, UpdatesConfig
        from agent.sources import make_source
        from agent.updates.state import UpdateState
        from agent.updates.updater import ModelUpdater, startup_model
        from tests.support.tuf_repo import MODEL_V1

        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        src = SimulatedSourceConfig(realtime=True, rate_hz=4000.0, fault="normal", seed=5)
        model_path = model or MODEL_V1
        self.pc = PipelineConfig(stream="vibration", source=src, model=str(model_path),
                                 metadata=str(model_path.with_suffix(".json")), window=128, hop=128)
        kw = {"poll_interval_s": 0.1, **FAST_HEALTH, "fetch_timeout_s": 5.0, **updates}
        self.cfg = UpdatesConfig(repository_url=repo_url, root=str(root), dir=str(tmp / "updates"), **kw)
        self.state = UpdateState.load(str(tmp / "updates" / "state.json"))
        (tmp / "updates").mkdir(exist_ok=True)
        shipped = load_model_meta(self.pc.metadata)
        sm = startup_model(self.pc, shipped, self.cfg, self.state)
        self.out: queue.Queue[Any] = queue.Queue(maxsize=256)
        self.runner = PipelineRunner(self.pc, sm.meta, Model.load(sm.path, sm.meta), make_source("vibration", src),
                                     "t/result/vibration", self.out, lambda: 0)
        self.runner.model_id = shipped.name
        self.updater = ModelUpdater(self.cfg, device_id, [self.runner], self.state,
                                    load=lambda p, m, r: Model.load(p, m),
                                    receipt_time_s=receipt_time or (lambda: None), wall=wall or time.time)
        self.drafts: list[Any] = []
        self._stop = threading.Event()
        self._drain = threading.Thread(target=self._drain_loop, daemon=True)

    def _drain_loop(self) -> None:
        import queue

        while not self._stop.is_set():
            try:
                self.drafts.append(self.out.get(timeout=0.05))
            except queue.Empty:
                pass

    def start(self, *, updater: bool = True) -> UpdaterRig:
        """Start the pipeline (and the updater thread unless ``updater=False``: then the test calls poll())."""
        if self._drain.ident is not None:
            return self
        self._drain.start()
        self.runner.start()
        if updater:
            self.updater.start()
        return self

    def stop(self) -> None:
        self.updater.stop()
        self.runner.stop()
        self.runner.join(10)
        self._stop.set()
        self._drain.join(10)

    def __enter__(self) -> UpdaterRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def digests(self) -> list[bytes]:
        return [d.model_sha256 for d in list(self.drafts)]

    def model_sha(self) -> bytes:
        return self.runner.model.model_sha256


__all__ = ["FAST_HEALTH", "UpdaterRig", "results_by_seq", "running_agent", "to_toml", "updates_config", "write"]

"""One pipeline thread: source → windowing → inference → result drafts on the committer's queue.

The thread owns its source iterator, its ``Windower`` and its TFLite interpreter (interpreters are not
thread-safe). Results leave as ``Draft``s (not yet signed: the seq is assigned at commit) through a bounded
queue, so a slow disk slows the pipeline instead of growing memory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agent.errors import AgentError
from agent.inference import Model
from agent.model_meta import ModelMeta
from agent.outbox import Draft
from agent.settings import PipelineConfig
from agent.sources.base import Source
from agent.windowing import Window, Windower

log = logging.getLogger(__name__)

UNCERTAIN = "uncertain"


@dataclass
class PipelineStats:
    """Counters and a latency sample ring for telemetry."""

    windows: int = 0
    results: int = 0
    skipped_blocks: int = 0
    errors: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    latencies_us: list[float] = field(default_factory=list)

    def record_latency(self, us: float) -> None:
        lat = self.latencies_us
        if len(lat) >= 2048:
            del lat[:1024]
        lat.append(us)


def result_payload(labels: tuple[str, ...], scores: np.ndarray, threshold: float, latency_us: float,
                   window: Window) -> dict[str, object]:
    """The CBOR payload of one result: top label (or ``uncertain``), its score and all scores."""
    top = int(np.argmax(scores))
    score = float(scores[top])
    label = labels[top] if score >= threshold else UNCERTAIN
    return {
        "label": label,
        "score": round(score, 4),
        "scores": [round(float(s), 4) for s in scores],
        "labels": list(labels),
        "latency_us": int(latency_us),
        "t0_ms": window.t_start_us // 1000,
        "n": int(window.data.shape[0]),
    }


class PipelineRunner:
    """Runs one pipeline on its own thread until its source ends or ``stop()``."""

    def __init__(self, cfg: PipelineConfig, meta: ModelMeta, model: Model, source: Source, topic: str,
                 out: queue.Queue[Draft], clock_state: Callable[[], int]) -> None:
        self.cfg = cfg
        self.meta = meta
        self.model = model
        self.source = source
        self.topic = topic
        self._out = out
        self._clock_state = clock_state
        self.labels = cfg.labels or meta.labels
        if len(self.labels) != len(meta.labels):
            raise AgentError(f"pipeline {cfg.stream}: {len(self.labels)} labels configured, the model "
                             f"{cfg.model} has {len(meta.labels)} outputs")
        self.windower = Windower(cfg.stream, cfg.window, cfg.hop, meta.channels)
        self.stats = PipelineStats()
        self._stop = threading.Event()
        self.done = threading.Event()
        self.failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"pipeline-{cfg.stream}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.source.close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _put(self, draft: Draft) -> bool:
        while not self._stop.is_set():
            try:
                self._out.put(draft, timeout=0.2)
                return True
            except queue.Full:
                self.stats.last_progress = time.monotonic()  # blocked downstream, not stalled here
        return False

    def _run(self) -> None:
        stats = self.stats
        try:
            for block in self.source.blocks():
                stats.last_progress = time.monotonic()
                try:
                    windows = self.windower.push(block)
                except ValueError as e:
                    stats.skipped_blocks += 1
                    log.warning("pipeline %s: skipping block: %s", self.cfg.stream, e)
                    continue
                for w in windows:
                    inf = self.model.infer(w.data)
                    stats.windows += 1
                    stats.record_latency(inf.latency_us)
                    draft = Draft(
                        kind="result",
                        stream=self.cfg.stream,
                        topic=self.topic,
                        payload=result_payload(self.labels, inf.scores, self.cfg.score_threshold,
                                               inf.latency_us, w),
                        capture_ms=w.t_end_us // 1000,
                        clock_state=max(w.clock_state, self._clock_state()),
                        model_sha256=inf.model_sha256,
                        input_sha256=inf.input_sha256,
                    )
                    if not self._put(draft):
                        return
                    stats.results += 1
                if self._stop.is_set():
                    return
        except Exception as e:
            stats.errors += 1
            self.failed = e
            log.exception("pipeline %s failed", self.cfg.stream)
        finally:
            self.done.set()

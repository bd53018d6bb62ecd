"""What the watchdog calls a stalled pipeline: a silent microcontroller is not a stall, a stuck step is."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pytest

from agent.inference import Model
from agent.model_meta import load_model_meta
from agent.outbox import Draft
from agent.pipeline import PipelineRunner
from agent.settings import PipelineConfig, SimulatedSourceConfig
from agent.sources.base import SampleBlock, Source
from tests.support.agent_proc import MODEL
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


class SilentSource(Source):
    """Yields nothing until closed, like a paused microcontroller."""

    def __init__(self, idle_ok: bool) -> None:
        self.idle_ok = idle_ok
        self.waiting = threading.Event()
        self._closed = threading.Event()

    def blocks(self) -> Iterator[SampleBlock]:
        self.waiting.set()
        self._closed.wait()
        yield from ()

    def close(self) -> None:
        self._closed.set()


def runner_for(source: Source) -> PipelineRunner:
    meta = load_model_meta(str(MODEL.with_suffix(".json")))
    cfg = PipelineConfig(stream="vibration", source=SimulatedSourceConfig(), model=str(MODEL),
                         metadata=str(MODEL.with_suffix(".json")), window=128, hop=128)
    q: queue.Queue[Draft] = queue.Queue(maxsize=4)
    return PipelineRunner(cfg, meta, Model.load(str(MODEL), meta), source, "t/result/vibration", q, lambda: 0)


@pytest.mark.parametrize("idle_ok", [True, False])
def test_silence_is_a_stall_only_for_sources_that_must_deliver(idle_ok: bool) -> None:
    source = SilentSource(idle_ok)
    runner = runner_for(source)
    runner.start()
    try:
        wait_for(source.waiting.is_set, timeout=5, what="the pipeline waiting on its source")
        later = time.monotonic() + 600
        if idle_ok:
            assert runner.stalled_for(later) == 0.0
        else:
            assert runner.stalled_for(later) >= 599
    finally:
        runner.stop()
        runner.join(5)

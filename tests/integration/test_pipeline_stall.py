"""What the watchdog calls a stalled pipeline: a silent microcontroller is not a stall, a stuck step is."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
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


class OneBlockSource(Source):
    """Yields one window's worth of samples, then falls silent until closed (an MCU that paused)."""

    def __init__(self, idle_ok: bool) -> None:
        self.idle_ok = idle_ok
        self.silent = threading.Event()
        self._closed = threading.Event()

    def blocks(self) -> Iterator[SampleBlock]:
        yield SampleBlock(1_700_000_000_000_000, 1000.0, np.zeros((128, 3), dtype=np.float32))
        self.silent.set()
        self._closed.wait()

    def close(self) -> None:
        self._closed.set()


def hang_inference(runner: PipelineRunner) -> tuple[threading.Event, threading.Event]:
    """Fault injection: the next ``infer`` blocks until released (a stuck step of our own pipeline)."""
    entered, release = threading.Event(), threading.Event()
    real = runner.model.infer

    def stuck(x: Any) -> Any:
        entered.set()
        release.wait(30)
        return real(x)

    runner.model.infer = stuck  # type: ignore[method-assign]
    return entered, release


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


@pytest.mark.parametrize("idle_ok", [True, False])
def test_a_stuck_step_is_a_stall_for_every_source(idle_ok: bool) -> None:
    """The case that makes the idle_ok=True test above able to fail: an idle-tolerant source does not hide
    a step that hangs while processing its block; once the step finishes and the source falls silent,
    only the source that must deliver counts as stalled."""
    source = OneBlockSource(idle_ok)
    runner = runner_for(source)
    entered, release = hang_inference(runner)
    runner.start()
    try:
        wait_for(entered.is_set, timeout=10, what="the pipeline inside its (hung) inference")
        later = time.monotonic() + 600
        assert runner.stalled_for(later) >= 599  # stuck inside a block: a stall whatever the source
        release.set()
        wait_for(source.silent.is_set, timeout=10, what="the block processed and the source silent")
        wait_for(lambda: runner.stats.busy_since is None, timeout=10, what="the pipeline back waiting on its source")
        later = time.monotonic() + 600
        if idle_ok:
            assert runner.stalled_for(later) == 0.0
        else:
            assert runner.stalled_for(later) >= 599
    finally:
        release.set()
        runner.stop()
        runner.join(5)

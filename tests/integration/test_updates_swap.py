"""Swap without loss at the pipeline: the switch falls between two windows, every window is processed exactly
once (in order, none skipped), the digest changes at one boundary; an invoke error on the new model reverts at
once and that window is run again on the old model. Both pipeline modes: inline (vibration model) and split
(MobileNetV2: prepare on the pipeline thread, invoke on the owner thread)."""

from __future__ import annotations

import itertools
import queue
import threading
from pathlib import Path
from typing import Any

import cbor2
import pytest

from agent.inference import FAULT_ENV, Model
from agent.model_meta import load_model_meta
from agent.outbox import Draft
from agent.pipeline import PipelineRunner, Trial
from agent.settings import PipelineConfig, ReplaySourceConfig, SimulatedSourceConfig
from agent.sources import make_source
from bench.bench_pipeline import FrameSource, _mobilenet_meta
from bench.common import MOBILENET_MODEL
from tests.support.tuf_repo import MODEL_V1, MODEL_V2, make_model_version
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


class Harness:
    """A running PipelineRunner whose drafts are collected by a thread."""

    def __init__(self, runner: PipelineRunner, out: queue.Queue[Draft]) -> None:
        self.runner = runner
        self.out = out
        self.drafts: list[Draft] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._drain, daemon=True)

    def _drain(self) -> None:
        while not self._stop.is_set() or not self.out.empty():
            try:
                self.drafts.append(self.out.get(timeout=0.05))
            except queue.Empty:
                pass

    def __enter__(self) -> Harness:
        self._t.start()
        self.runner.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()
        self.runner.join(10)
        self._stop.set()
        self._t.join(10)

    def count(self) -> int:
        return len(self.drafts)


def vibration_runner(model: Model) -> tuple[PipelineRunner, queue.Queue[Draft]]:
    meta = model.meta
    src = SimulatedSourceConfig(realtime=False, fault="normal", seed=3)
    cfg = PipelineConfig(stream="vibration", source=src, model=str(MODEL_V1), metadata="", window=128, hop=64)
    out: queue.Queue[Draft] = queue.Queue(maxsize=64)
    return PipelineRunner(cfg, meta, model, make_source("vibration", src), "t/result/vibration", out,
                          lambda: 0), out


def camera_runner(model: Model) -> tuple[PipelineRunner, queue.Queue[Draft]]:
    meta = model.meta
    cfg = PipelineConfig(stream="camera", source=ReplaySourceConfig(path="(in memory)"), model="", metadata="",
                         window=96 * 96, hop=96 * 96)
    out: queue.Queue[Draft] = queue.Queue(maxsize=64)
    return PipelineRunner(cfg, meta, model, FrameSource(meta.sample_rate_hz), "t/result/camera", out,  # type: ignore[arg-type]
                          lambda: 0), out


def models(kind: str, tmp: Path) -> tuple[Model, Model]:
    if kind == "inline":
        return (Model.load(str(MODEL_V1), load_model_meta(str(MODEL_V1.with_suffix(".json")))),
                Model.load(str(MODEL_V2), load_model_meta(str(MODEL_V2.with_suffix(".json")))))
    meta = _mobilenet_meta()
    other = tmp / "mobilenet-v2.tflite"
    other.write_bytes(make_model_version(MOBILENET_MODEL.read_bytes(), version=2))
    return Model.load(str(MOBILENET_MODEL), meta), Model.load(str(other), meta)


def payload(d: Draft) -> dict[str, Any]:
    """A result draft's payload (deterministic CBOR, encoded by the pipeline)."""
    out = cbor2.loads(d.payload) if isinstance(d.payload, bytes) else d.payload
    assert isinstance(out, dict)
    return out


def windows_once_in_order(drafts: list[Draft], hop_ms: float) -> list[int]:
    t0 = [int(payload(d)["t0_ms"]) for d in drafts]
    steps = {b - a for a, b in itertools.pairwise(t0)}
    assert len(set(t0)) == len(t0), "no window processed twice"
    assert max(steps) - min(steps) <= 1 and abs(min(steps) - hop_ms) <= 1, f"no window skipped: steps {steps}"
    return t0


def boundaries(drafts: list[Draft]) -> list[int]:
    d = [x.model_sha256 for x in drafts]
    return [i for i in range(1, len(d)) if d[i] != d[i - 1]]


@pytest.mark.parametrize("kind", ["inline", "split"])
def test_switch_between_two_windows_every_window_once(kind: str, tmp_path: Path) -> None:
    old, new = models(kind, tmp_path)
    runner, out = vibration_runner(old) if kind == "inline" else camera_runner(old)
    assert runner._split == (kind == "split")
    with Harness(runner, out) as h:
        wait_for(lambda: h.count() >= 50, timeout=30, what="50 windows on the old model")
        trial: Trial = runner.request_switch(new, new.meta)
        wait_for(lambda: trial.windows >= 50, timeout=30, what="50 windows on the new model")
        runner.request_commit()
        wait_for(lambda: runner.trial is None, timeout=10, what="commit applied")
        n = h.count()
        wait_for(lambda: h.count() >= n + 10, timeout=30, what="windows after commit")
    drafts = h.drafts
    hop_ms = runner.cfg.hop * 1000 / runner.meta.sample_rate_hz
    t0 = windows_once_in_order(drafts, hop_ms)
    b = boundaries(drafts)
    assert len(b) == 1, "one switch"
    assert drafts[b[0]].model_sha256 == new.model_sha256 and drafts[b[0] - 1].model_sha256 == old.model_sha256
    assert t0[b[0]] * 1000 == pytest.approx(trial.first_window_t0_us, abs=1000), "the trial knows its first window"
    assert runner.stats.errors == 0 and not runner.failed


@pytest.mark.parametrize("kind", ["inline", "split"])
def test_invoke_error_on_the_new_model_reverts_and_reruns_that_window_on_the_old(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fault = tmp_path / "fault"
    monkeypatch.setenv(FAULT_ENV, str(fault))
    old, new = models(kind, tmp_path)
    runner, out = vibration_runner(old) if kind == "inline" else camera_runner(old)
    with Harness(runner, out) as h:
        wait_for(lambda: h.count() >= 30, timeout=30, what="windows on the old model")
        trial = runner.request_switch(new, new.meta)
        wait_for(lambda: trial.windows >= 20, timeout=30, what="windows on the new model")
        fault.write_text(f"invoke-error {new.model_sha256.hex()[:12]}\n")
        wait_for(lambda: trial.reverted, timeout=30, what="revert")
        n = h.count()
        wait_for(lambda: h.count() >= n + 30, timeout=30, what="windows after the revert")
        runner.request_revert("updater agrees")  # what the updater does next: a no-op, already reverted
    drafts = h.drafts
    windows_once_in_order(drafts, runner.cfg.hop * 1000 / runner.meta.sample_rate_hz)
    b = boundaries(drafts)
    assert len(b) == 2, "old -> new -> old"
    assert drafts[b[1]].model_sha256 == old.model_sha256
    assert drafts[-1].model_sha256 == old.model_sha256
    assert trial.errors and "injected invoke error" in trial.errors[0]
    assert int(payload(drafts[b[1]])["t0_ms"]) * 1000 == pytest.approx(trial.reverted_at_t0_us, abs=1000)
    assert not runner.failed and runner.stats.errors == 0, "a trial's failure is not a pipeline failure"


def test_outside_a_trial_an_invoke_error_still_fails_the_pipeline(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fault = tmp_path / "fault"
    monkeypatch.setenv(FAULT_ENV, str(fault))
    old, _new = models("inline", tmp_path)
    runner, out = vibration_runner(old)
    with Harness(runner, out) as h:
        wait_for(lambda: h.count() >= 5, timeout=30, what="windows")
        fault.write_text(f"invoke-error {old.model_sha256.hex()[:12]}\n")
        wait_for(runner.done.is_set, timeout=30, what="pipeline failure")
    assert runner.failed is not None and "injected" in str(runner.failed)


def test_switch_refuses_a_model_with_another_input(tmp_path: Path) -> None:
    old, _ = models("inline", tmp_path)
    cam, _ = models("split", tmp_path)
    runner, _out = vibration_runner(old)
    from agent.errors import AgentError

    with pytest.raises(AgentError, match="takes"):
        runner.request_switch(cam, cam.meta)


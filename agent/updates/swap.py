"""Swap without loss: load the new model beside the running one, check it, switch, watch, commit or revert.

Runs on the updater thread; the pipelines keep processing windows on the old model the whole time. Steps:

1. ``prepare``: the target's metadata must fit the pipeline (rate, window, channels, labels); the model is
   loaded from the verified file into its own interpreter (``Model.load`` hashes the exact bytes: they must
   be the signed target's); the golden vectors run on it and must match the release build's outputs within
   the target's tolerance for this runtime and CPU architecture, else the version is refused.
2. ``trial``: each pipeline of the model id switches between two windows (``PipelineRunner.request_switch``),
   then the health window (``policy.judge_health``) watches invoke errors (an error reverts at once, in the
   pipeline thread) and the median latency against the golden run's. Healthy: commit (the old interpreter is
   released). Failed: revert.

Everything that decides is pure (``agent.updates.policy``); this module only moves models and waits.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.errors import AgentError
from agent.inference import Model
from agent.model_meta import ModelMeta
from agent.pipeline import PipelineRunner, Trial
from agent.updates.policy import HealthLimits, HealthVerdict, golden_check, judge_health
from provisioning.model_target import ModelTarget

log = logging.getLogger(__name__)

__all__ = ["Prepared", "SwapRefused", "prepare", "run_trial"]


class SwapRefused(AgentError):
    """The new version cannot run here (``cause``: metadata, load, golden); the message says why."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause
        self.detail = detail


@dataclass
class Prepared:
    """A new model per pipeline, loaded and golden-checked, not yet switched in."""

    target: ModelTarget
    items: list[tuple[PipelineRunner, Model, ModelMeta]]
    golden_latency_us: float
    golden_max_diff: int


def _fits(runner: PipelineRunner, meta: ModelMeta, t: ModelTarget) -> None:
    old = runner.meta
    problems = []
    if meta.sample_rate_hz != old.sample_rate_hz:
        problems.append(f"sample rate {meta.sample_rate_hz:g} Hz, the pipeline runs at {old.sample_rate_hz:g} Hz")
    if meta.channels != old.channels:
        problems.append(f"{meta.channels} channels, the pipeline has {old.channels}")
    if meta.window != old.window or meta.input_shape != old.input_shape:
        problems.append(f"input {list(meta.input_shape)}, the pipeline feeds {list(old.input_shape)}")
    if runner.cfg.labels and len(runner.cfg.labels) != len(meta.labels):
        problems.append(f"{len(meta.labels)} labels, the pipeline config names {len(runner.cfg.labels)}")
    if meta.name != runner.model_id:
        problems.append(f"model name {meta.name!r}, the pipeline runs {runner.model_id!r}")
    if problems:
        raise SwapRefused("does_not_fit", f"{t.path}: " + "; ".join(problems))


def prepare(target: ModelTarget, model_path: str, runners: Sequence[PipelineRunner], runtime: str | None,
            arch: str, load: Callable[[str, ModelMeta, PipelineRunner], Model]) -> Prepared:
    """Load ``model_path`` once per pipeline and check it; raises ``SwapRefused`` with the reason.

    The golden vectors are judged for the runtime the new model really runs on (``Model.runtime_id``: its
    delegate's name, or ``cpu`` also after a delegate fell back), unless ``runtime`` overrides it.
    """
    try:
        meta = ModelMeta.from_dict(json.loads(target.metadata_json), f"target {target.path}: metadata")
    except ValueError as e:
        raise SwapRefused("bad_metadata", str(e)) from e
    items: list[tuple[PipelineRunner, Model, ModelMeta]] = []
    latencies: list[float] = []
    worst = 0
    for runner in runners:
        _fits(runner, meta, target)
        try:
            model = load(model_path, meta, runner)
        except AgentError as e:
            raise SwapRefused("load_failed", str(e)) from e
        rt = runtime or model.runtime_id
        expected = target.golden.outputs_for(rt)
        if expected is None:
            raise SwapRefused("no_golden", f"{target.path}: no golden vectors for runtime {rt} or cpu")
        tol = target.golden.tolerance_for(rt, arch)
        if model.model_sha256.hex() != target.sha256:
            raise SwapRefused("digest_mismatch", f"{model_path}: sha256 {model.model_sha256.hex()} is not the "
                                                 f"signed target's {target.sha256}")
        got = []
        try:
            for tensor in target.golden.inputs:
                out, lat = model.run_raw(tensor)
                got.append(out)
                latencies.append(lat)
        except AgentError as e:
            raise SwapRefused("golden_failed", f"golden vectors of {target.path}: {e}") from e
        res = golden_check(expected, got, tol)
        if not res.ok:
            raise SwapRefused("golden_mismatch", f"golden vectors of {target.path} on {rt}/{arch}: {res.detail}")
        worst = max(worst, res.max_diff)
        items.append((runner, model, meta))
    return Prepared(target, items, statistics.median(latencies) if latencies else 0.0, worst)


def run_trial(prep: Prepared, limits: HealthLimits, stop: threading.Event,
              on_switched: Callable[[], None] = lambda: None, poll_s: float = 0.05) -> HealthVerdict:
    """Switch every pipeline, watch the health window, then commit or revert all of them together.

    Returns ``healthy`` (committed), ``failed`` (reverted, reason given) or ``watching`` when ``stop`` was
    set first (the agent is stopping: the new model stays until the process ends; the next start runs the
    committed model and the trial is retried).
    """
    trials: list[tuple[PipelineRunner, Trial]] = []
    for runner, model, meta in prep.items:
        trials.append((runner, runner.request_switch(model, meta)))
    on_switched()
    verdict = HealthVerdict("watching")
    while not stop.wait(poll_s):
        now = time.monotonic()
        states = []
        for runner, tr in trials:
            if tr.reverted:
                states.append(HealthVerdict("failed", tr.revert_reason))
                continue
            if runner.done.is_set():
                states.append(HealthVerdict("failed", f"pipeline {runner.cfg.stream} stopped during the health "
                                                      f"window: {runner.failed or 'source ended'}"))
                continue
            if tr.applied_at is None:
                states.append(HealthVerdict("watching"))
                continue
            states.append(judge_health(now - tr.applied_at, tr.windows, tuple(tr.errors), tuple(tr.latencies_us),
                                       prep.golden_latency_us, limits))
        failed = [v for v in states if v.state == "failed"]
        if failed:
            verdict = failed[0]
            for runner, _tr in trials:
                runner.request_revert(verdict.reason)
            break
        if all(v.state == "healthy" for v in states):
            verdict = HealthVerdict("healthy")
            for runner, _tr in trials:
                runner.request_commit()
            break
    if verdict.state != "watching":
        _wait_applied([r for r, _ in trials], stop, poll_s)
    return verdict


def _wait_applied(runners: Sequence[PipelineRunner], stop: threading.Event, poll_s: float,
                  timeout_s: float = 10.0) -> None:
    """Until each pipeline has taken the commit or revert (at its next window): then what the updater
    persists is what runs. A pipeline whose source is silent takes it with its next window anyway."""
    deadline = time.monotonic() + timeout_s
    while any(r.trial is not None and not r.done.is_set() for r in runners) and time.monotonic() < deadline:
        if stop.wait(poll_s):
            return


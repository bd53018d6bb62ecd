"""The updater thread: poll the signed repository, take a new model version when the policy says so, swap it.

One thread, woken every ``[updates] poll_interval_s``. Each poll: the reference time (latest of the system
clock, the persisted last good time and the aggregator's signed receipt time), a verified refresh, the
policy's choice per model id, then for a chosen version: download within the size limit into staging,
verify again and move into the model store, ``swap.prepare`` (load beside the running model, golden
vectors), persist the trial, ``swap.run_trial`` (switch, health window), persist the outcome.

A repository that cannot be reached (or that serves data that fails verification) changes nothing on the
device: the current models keep running. The log gets one line per change of that condition (unreachable
since, refused because, reachable again), never one per poll, so a device cut off for days does not fill
its journal. What the updater knows is in ``status_doc()`` (telemetry, ``edge-agent status``, birth).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.errors import AgentError
from agent.inference import Model
from agent.model_meta import ModelMeta, load_model_meta
from agent.pipeline import PipelineRunner
from agent.settings import PipelineConfig, UpdatesConfig
from agent.updates.policy import HealthLimits, PipelineFit, choose, reference_time
from agent.updates.repository import RepositoryClient, RepositoryRefused, RepositoryUnreachable, Snapshot
from agent.updates.state import MAX_TRIAL_ATTEMPTS, Committed, ModelState, UpdateState
from agent.updates.swap import SwapRefused, prepare, run_trial
from provisioning.model_target import InvalidTarget, ModelTarget

log = logging.getLogger(__name__)

__all__ = ["ModelUpdater", "StartupModel", "startup_model"]

LAST_GOOD_SAVE_S = 60.0  # persist the last good time when it moved at least this much (SD card wear)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


def _version(meta: ModelMeta) -> int:
    try:
        return int(meta.version)
    except ValueError:
        return 0


class StartupModel:
    """Which file a pipeline loads at start: the committed update, or the image's shipped model."""

    def __init__(self, path: str, meta: ModelMeta, source: str, note: str = "") -> None:
        self.path = path
        self.meta = meta
        self.source = source  # "shipped" or "update"
        self.note = note


def startup_model(pc: PipelineConfig, shipped_meta: ModelMeta, cfg: UpdatesConfig | None,
                  state: UpdateState | None) -> StartupModel:
    """The model a pipeline starts with. An unfinished trial (kill -9, power cut) counts one attempt."""
    shipped = StartupModel(pc.model, shipped_meta, "shipped")
    if cfg is None or state is None:
        return shipped
    ms = state.models.get(shipped_meta.name)
    if ms is None:
        return shipped
    if ms.trial:
        v, attempts = int(ms.trial.get("version", 0)), int(ms.trial.get("attempts", 1))
        if attempts >= MAX_TRIAL_ATTEMPTS:
            ms.refused[v] = f"interrupted {attempts} times during its health window (crash or power cut)"
            ms.trial = None
            log.error("model %s version %d: %s; not retrying it", shipped_meta.name, v, ms.refused[v])
        else:
            log.warning("model %s version %d: its health window was interrupted (attempt %d of %d); running the "
                        "committed model, the update will be tried again", shipped_meta.name, v, attempts,
                        MAX_TRIAL_ATTEMPTS)
        state.save()
    c = ms.committed
    if c is None or c.version <= _version(shipped_meta):
        return shipped
    path, meta_path = os.path.join(cfg.dir, c.file), os.path.join(cfg.dir, c.metadata)
    try:
        meta = load_model_meta(meta_path)
    except ValueError as e:
        return StartupModel(pc.model, shipped_meta, "shipped", f"committed version {c.version} unusable: {e}")
    if meta.sha256 != c.sha256:
        return StartupModel(pc.model, shipped_meta, "shipped",
                            f"committed version {c.version}: {meta_path} names sha256 {meta.sha256}, "
                            f"state.json {c.sha256}")
    return StartupModel(path, meta, "update")


class ModelUpdater:
    """Polls the repository and swaps models of the given pipelines (see the module docstring)."""

    def __init__(self, cfg: UpdatesConfig, device_id: str, runners: Sequence[PipelineRunner], state: UpdateState,
                 *, load: Callable[[str, ModelMeta, PipelineRunner], Model],
                 receipt_time_s: Callable[[], float | None] = lambda: None,
                 on_change: Callable[[], None] = lambda: None, runtime: str | None = None,
                 arch: str | None = None, wall: Callable[[], float] = time.time,
                 before_switch: Callable[[], None] = lambda: None) -> None:
        self.cfg = cfg
        self.device_id = device_id
        self.runners = list(runners)
        self.state = state
        self.client = RepositoryClient(cfg)
        self._load = load
        self._receipt_time = receipt_time_s
        self._on_change = on_change
        self.runtime = runtime
        self.arch = arch or platform.machine()
        self._wall = wall
        self._before_switch = before_switch
        self.limits = HealthLimits(cfg.health_window_s, cfg.health_min_windows, cfg.latency_factor,
                                   cfg.latency_slack_us)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="updater", daemon=True)
        # condition of the repository: (kind, cause), since when; counters
        self.condition: tuple[str, str] = ("never_checked", "")
        self.condition_detail = ""
        self.condition_since: float | None = None
        self.last_check: float | None = None
        self.last_success: float | None = None
        self.last_reference_time: float | None = None
        self.checks = 0
        self.failures = 0
        self.poll_cpu_s = 0.0  # thread CPU time spent polling (bench: updater idle CPU)
        self.pending: dict[str, dict[str, Any]] = {}
        self.not_taken: dict[str, dict[int, str]] = {}
        self.download_failures: dict[str, str] = {}
        self.bad_targets: dict[str, str] = {}
        self._condition_set = False

    # ----- lifecycle ----------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def start(self) -> None:
        self.client.clean_staging()
        (Path(self.cfg.dir) / "models").mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def poll_now(self) -> None:
        """Wake the thread for a poll now (tests; a future "check for updates" command)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.thread_time()
            try:
                self.poll()
            except Exception:  # a bug must not end the thread: the models keep running, we say so once
                log.exception("model update poll failed")
                self._set_condition("error", "internal", "see the log")
            self.poll_cpu_s += time.thread_time() - t0
            self._wake.wait(self.cfg.poll_interval_s)
            self._wake.clear()

    # ----- one poll -----------------------------------------------------------------------------------
    def reference_time(self) -> float:
        rt = self._receipt_time()
        return reference_time(self._wall(), self.state.last_good_time, rt)

    def poll(self) -> None:
        """One refresh and, when the policy chooses a version, its download, checks and swap."""
        now = self._wall()
        self.last_check = now
        self.checks += 1
        t_ref = self.reference_time()
        self.last_reference_time = t_ref
        try:
            snap = self.client.refresh(t_ref)
        except (RepositoryUnreachable, RepositoryRefused) as e:
            self.failures += 1
            kind = "unreachable" if isinstance(e, RepositoryUnreachable) else "refused"
            self._set_condition(kind, e.cause, e.detail)
            return
        except AgentError as e:
            self.failures += 1
            self._set_condition("error", "local", str(e))
            return
        self.last_success = now
        self._condition_set = False
        if self.state.last_good_time is None or t_ref >= self.state.last_good_time + LAST_GOOD_SAVE_S:
            self.state.last_good_time = t_ref
            self.state.save()
        targets = self._parse_targets(snap)
        for model_id in sorted({r.model_id for r in self.runners}):
            if self._stop.is_set():
                return
            self._consider(model_id, [r for r in self.runners if r.model_id == model_id], targets, snap)
        if not self._condition_set:  # a download or the model store may have said otherwise
            self._set_condition("ok", "")

    def _parse_targets(self, snap: Snapshot) -> list[ModelTarget]:
        out = []
        bad = {}
        for path, tf in snap.targets.items():
            try:
                out.append(ModelTarget.from_target(path, tf.length, tf.hashes, tf.custom))
            except InvalidTarget as e:
                bad[path] = str(e)
        if bad != self.bad_targets:
            for path, why in bad.items():
                if self.bad_targets.get(path) != why:
                    log.error("signed target %s is not a model this agent understands: %s", path, why)
            self.bad_targets = bad
        return out

    def _set_condition(self, kind: str, cause: str, detail: str = "") -> None:
        self._condition_set = True
        key = (kind, cause)
        self.condition_detail = detail
        if key == self.condition:
            return
        prev, prev_since = self.condition, self.condition_since
        self.condition, self.condition_since = key, self._wall()
        url = self.cfg.repository_url
        if kind == "ok":
            if prev[0] in ("unreachable", "refused", "error"):
                gone = self.condition_since - (prev_since or self.condition_since)
                log.info("model repository %s usable again (was %s %s for %.0f s)", url, prev[0], prev[1], gone)
            else:
                log.info("model repository %s verified", url)
        elif kind == "unreachable":
            log.warning("model repository %s unreachable (%s: %s): the current models keep running; retrying "
                        "every %g s, next message when this changes", url, cause, detail, self.cfg.poll_interval_s)
        elif kind == "refused":
            log.error("model repository %s refused (%s): %s; the current models keep running", url, cause, detail)
        else:
            log.error("model updates: %s: %s", cause, detail)

    def _current_version(self, runners: Sequence[PipelineRunner]) -> int:
        return min(_version(r.meta) for r in runners)

    def _consider(self, model_id: str, runners: list[PipelineRunner], targets: list[ModelTarget],
                  snap: Snapshot) -> None:
        ms = self.state.model(model_id)
        current = self._current_version(runners)
        r0 = runners[0]
        fit = PipelineFit(window=r0.cfg.window, channels=r0.meta.channels, agent_version=__version__)
        choice = choose(targets, model_id, current, ms.floor, ms.never(), self.device_id, fit)
        newer = {v: why for v, why in choice.skipped if v > current}
        if newer != self.not_taken.get(model_id, {}):
            for v, why in sorted(newer.items()):
                if self.not_taken.get(model_id, {}).get(v) != why:
                    log.info("model %s version %d not taken: %s", model_id, v, why)
            self.not_taken[model_id] = newer
        t = choice.target
        if t is None:
            return
        self._set_pending(model_id, t, "downloading")
        try:
            path = self._fetch(snap, t)
        except RepositoryUnreachable as e:
            self._set_pending(model_id, None)
            self._set_condition("unreachable", e.cause, e.detail)
            return
        except RepositoryRefused as e:
            self._set_pending(model_id, None)
            if e.cause == "too_large":  # the signed length itself: this version will never fit
                self._refuse(ms, model_id, t.version, f"download: {e}")
            elif self.download_failures.get(t.path) != str(e):
                # The signed target is fine, these bytes are not (a bad mirror, a tampering proxy): try again
                # next poll rather than refusing the release for good.
                log.error("model %s version %d: downloaded bytes refused (%s); will retry", model_id, t.version, e)
                self.download_failures[t.path] = str(e)
            return
        except (AgentError, OSError) as e:  # our own disk (full, read-only): say it once, retry next poll
            self._set_pending(model_id, None)
            self._set_condition("error", "local", f"model store {self.cfg.dir}: {e}")
            return
        self.download_failures.pop(t.path, None)
        self._set_pending(model_id, t, "verifying")
        try:
            prep = prepare(t, str(path), runners, self.runtime, self.arch, self._load)
        except SwapRefused as e:
            self._set_pending(model_id, None)
            self._refuse(ms, model_id, t.version, str(e))
            return
        attempts = int(ms.trial.get("attempts", 0)) + 1 if ms.trial and ms.trial.get("version") == t.version else 1
        ms.trial = {"version": t.version, "sha256": t.sha256, "attempts": attempts}
        self.state.save()
        self._before_switch()
        if self._stop.is_set():
            self._set_pending(model_id, None)
            return
        self._set_pending(model_id, t, "health_window")
        log.info("model %s version %d passed its golden vectors (max diff %d steps, golden latency %.0f µs): "
                 "switching, health window %g s", model_id, t.version, prep.golden_max_diff, prep.golden_latency_us,
                 self.cfg.health_window_s)
        verdict = run_trial(prep, self.limits, self._stop, on_switched=self._on_change)
        self._set_pending(model_id, None)
        if verdict.state == "healthy":
            ms.committed = Committed(t.version, t.sha256, f"models/{t.sha256}.tflite", f"models/{t.sha256}.json")
            ms.floor = max(ms.floor, t.version)
            ms.trial = None
            self.state.save()
            self._collect_garbage(ms)
            log.info("model %s version %d committed (floor now %d)", model_id, t.version, ms.floor)
            self._on_change()
        elif verdict.state == "failed":
            ms.reverted[t.version] = verdict.reason
            ms.trial = None
            self.state.save()
            log.error("model %s version %d reverted: %s; never retrying it", model_id, t.version, verdict.reason)
            self._on_change()
        else:  # stopping cleanly during the health window: not the model's fault, no attempt counted
            ms.trial = None
            self.state.save()

    def _refuse(self, ms: ModelState, model_id: str, version: int, reason: str) -> None:
        ms.refused[version] = reason
        self.state.save()
        log.error("model %s version %d refused: %s; never retrying it", model_id, version, reason)
        self._on_change()

    def _fetch(self, snap: Snapshot, t: ModelTarget) -> Path:
        """The target's verified bytes in the model store (``models/<sha256>.tflite`` and its metadata)."""
        from provisioning import atomic_write  # noqa: PLC0415

        store = Path(self.cfg.dir) / "models"
        store.mkdir(parents=True, exist_ok=True)
        dest = store / f"{t.sha256}.tflite"
        if not (dest.exists() and hashlib.sha256(dest.read_bytes()).hexdigest() == t.sha256):
            staged = self.client.download(snap, t.path)
            data = staged.read_bytes()
            if hashlib.sha256(data).hexdigest() != t.sha256 or len(data) != t.length:
                raise RepositoryRefused("hash_mismatch", f"{staged} changed after verification")
            atomic_write(dest, data, mode=0o644)
            staged.unlink(missing_ok=True)
        atomic_write(store / f"{t.sha256}.json", t.metadata_json.encode(), mode=0o644)
        return dest

    def _collect_garbage(self, ms: ModelState) -> None:
        keep = {f"{c.sha256}.{ext}" for c in [ms.committed] if c for ext in ("tflite", "json")}
        for other in self.state.models.values():
            if other.committed:
                keep |= {f"{other.committed.sha256}.tflite", f"{other.committed.sha256}.json"}
        for p in (Path(self.cfg.dir) / "models").iterdir():
            if p.name not in keep:
                p.unlink(missing_ok=True)

    def _set_pending(self, model_id: str, t: ModelTarget | None, what: str = "") -> None:
        with self._lock:
            if t is None:
                self.pending.pop(model_id, None)
            else:
                self.pending[model_id] = {"version": t.version, "sha256": t.sha256, "state": what,
                                          "since": _iso(self._wall())}

    # ----- introspection ------------------------------------------------------------------------------
    def status_doc(self) -> dict[str, Any]:
        """What telemetry, ``edge-agent status`` and the birth record say about updates."""
        with self._lock:
            pending = {k: dict(v) for k, v in self.pending.items()}
        models = {}
        for model_id in sorted({r.model_id for r in self.runners}):
            runners = [r for r in self.runners if r.model_id == model_id]
            ms = self.state.models.get(model_id) or ModelState()
            models[model_id] = {
                "running": self._current_version(runners),
                "sha256": runners[0].model.model_sha256.hex(),
                "floor": ms.floor,
                "pending": pending.get(model_id),
                "refused": {str(v): r for v, r in sorted(ms.refused.items())},
                "reverted": {str(v): r for v, r in sorted(ms.reverted.items())},
                "not_taken": {str(v): r for v, r in sorted(self.not_taken.get(model_id, {}).items())},
            }
        kind, cause = self.condition
        return {
            "enabled": True,
            "repository": self.cfg.repository_url,
            "state": kind,
            "cause": cause or None,
            "detail": self.condition_detail[:200] or None,
            "since": _iso(self.condition_since),
            "last_check": _iso(self.last_check),
            "last_success": _iso(self.last_success),
            "reference_time": _iso(self.last_reference_time),
            "checks": self.checks,
            "failures": self.failures,
            "models": models,
        }

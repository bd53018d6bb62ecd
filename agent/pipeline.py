"""One pipeline thread: source → windowing → inference → result drafts on the committer's queue.

The thread owns its source iterator, its ``Windower`` and its TFLite interpreter (interpreters are not
thread-safe). Results leave as ``Draft``s (not yet signed: the seq is assigned at commit) through a bounded
queue, so a slow disk slows the pipeline instead of growing memory.

Model swaps (signed updates, ``agent.updates``): the updater loads and checks the new model on its own thread,
then ``request_switch`` hands it over; this thread applies it between two windows (the window before ran on
the old model, the next runs on the new one: the windower and its samples are untouched, so no sample is
dropped or seen twice). While the ``Trial`` lasts the old model stays loaded: a window whose invoke fails on
the new model is run again on the old one and the pipeline reverts at once, so that window is still
processed exactly once. The updater judges the trial (``policy.judge_health``) and commits or reverts it.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agent.errors import AgentError
from agent.inference import Inference, Model, PreparedInput
from agent.metrics import LatencyHistogram
from agent.model_meta import ModelMeta
from agent.outbox import Draft
from agent.settings import PipelineConfig
from agent.sources.base import Source
from agent.windowing import Window, Windower
from envelope import cbor_det

log = logging.getLogger(__name__)

UNCERTAIN = "uncertain"
SPLIT_MIN_INPUT_ELEMENTS = 4096  # from this input size on, prepare and invoke() run on two threads (_Invoker)


@dataclass
class PipelineStats:
    """Counters and a latency sample ring for telemetry."""

    windows: int = 0
    results: int = 0
    skipped_blocks: int = 0
    errors: int = 0
    last_progress: float = field(default_factory=time.monotonic)  # last block taken from the source
    busy_since: float | None = None  # set while a block is being processed (None: waiting on the source)
    latencies_us: list[float] = field(default_factory=list)
    latency_histogram: LatencyHistogram = field(default_factory=LatencyHistogram)  # every observation (metrics)

    def record_latency(self, us: float) -> None:
        self.latency_histogram.observe_us(us)
        lat = self.latencies_us
        if len(lat) >= 2048:
            del lat[:1024]
        lat.append(us)


@dataclass
class Trial:
    """A switch under watch: the new model runs, the previous one stays loaded to revert to.

    Written by the pipeline thread (counts, errors, latencies, ``reverted``), read by the updater thread.
    """

    new: Model
    new_meta: ModelMeta
    prev: Model
    prev_meta: ModelMeta
    applied_at: float | None = None  # monotonic time the first window ran on the new model's turn
    first_window_t0_us: int | None = None  # start of the first window the new model processed
    windows: int = 0
    latencies_us: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reverted: bool = False
    revert_reason: str = ""
    reverted_at_t0_us: int | None = None  # start of the first window the old model processed again


def result_payload(labels: tuple[str, ...], scores: np.ndarray, threshold: float, latency_us: float,
                   window: Window) -> dict[str, object]:
    """The CBOR payload of one result: top label (or ``uncertain``), its score and all scores."""
    values = scores.tolist()  # Python floats, exactly float(s) each: one call instead of one per score
    top = int(scores.argmax())
    score = values[top]
    label = labels[top] if score >= threshold else UNCERTAIN
    return {
        "label": label,
        "score": round(score, 4),
        "scores": [round(v, 4) for v in values],
        "labels": list(labels),
        "latency_us": int(latency_us),
        "t0_ms": window.t_start_us // 1000,
        "n": int(window.data.shape[0]),
    }


class ResultEncoder:
    """The deterministic CBOR of ``result_payload(...)``, byte for byte, from parts cached per pipeline.

    The key order, the label strings and the labels array are the same for every result of a pipeline, and
    the scores come from a 256-entry dequantization table, so ``round(score, 4)`` takes few values: their
    encodings are cached. ``cbor_det.dumps(result_payload(...))`` cost ≈ 17 µs per result on the
    committer's thread (a third of sealing); this costs ≈ 3 µs (docs/benchmarks.md, B2). Equality with the
    generic encoder is a property test (tests/unit/test_pipeline_encoder.py).
    """

    FLOAT_CACHE_MAX = 4096
    _KEYS = ("label", "score", "scores", "labels", "latency_us", "t0_ms", "n")

    def __init__(self, labels: tuple[str, ...]) -> None:
        dumps = cbor_det.dumps
        self._label_enc = [dumps(label) for label in labels]
        self._uncertain = dumps(UNCERTAIN)
        self._labels_enc = dumps(list(labels))
        self._scores_head = dumps([None] * len(labels))[: -len(labels) or None]  # None is one byte each
        self._floats: dict[float, bytes] = {}
        self._n_enc: dict[int, bytes] = {}
        # [map head, key, value, key, value, ...] in encoded-key order; encode() fills the value slots
        order = sorted(self._KEYS, key=dumps)
        self._parts: list[bytes] = [dumps(dict.fromkeys(self._KEYS, 0))[:1]]
        slot_of = {}
        for k in order:
            self._parts += [dumps(k), b""]
            slot_of[k] = len(self._parts) - 1
        self._slots = tuple(slot_of[k] for k in self._KEYS)  # value slot of each key, in _KEYS order

    def _score(self, v: float) -> bytes:
        """CBOR of ``round(v, 4)``; cached except for zeros (0.0 == -0.0 as dict keys) and NaN."""
        enc = self._floats.get(v)
        if enc is None:
            enc = cbor_det.float_(round(v, 4))
            if v != 0.0 and not math.isnan(v) and len(self._floats) < self.FLOAT_CACHE_MAX:
                self._floats[v] = enc
        elif v == 0.0:
            enc = cbor_det.float_(round(v, 4))
        return enc

    def encode(self, scores: np.ndarray, threshold: float, latency_us: float, window: Window) -> bytes:
        """Equal to ``cbor_det.dumps(result_payload(labels, scores, threshold, latency_us, window))``."""
        values = scores.tolist()
        top = int(scores.argmax())
        score = values[top]
        enc = self._score
        n = int(window.data.shape[0])
        n_enc = self._n_enc.get(n)
        if n_enc is None:
            n_enc = self._n_enc.setdefault(n, cbor_det.dumps(n)) if len(self._n_enc) < 64 else cbor_det.dumps(n)
        vals = (
            self._label_enc[top] if score >= threshold else self._uncertain,
            enc(score),
            self._scores_head + b"".join([enc(v) for v in values]),
            self._labels_enc,
            cbor_det.dumps(int(latency_us)),
            cbor_det.dumps(window.t_start_us // 1000),
            n_enc,
        )
        parts = self._parts
        for slot, value in zip(self._slots, vals, strict=True):
            parts[slot] = value
        return b"".join(parts)


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
        self._encoder = ResultEncoder(tuple(self.labels))
        # An image model takes (H, W, C): a window of H*W samples of C channels is that image, row-major.
        self._in_shape: tuple[int, ...] | None = None
        if tuple(model.input_shape) != (cfg.window, meta.channels):
            if int(np.prod(model.input_shape)) != cfg.window * meta.channels:
                raise AgentError(f"pipeline {cfg.stream}: a window of {cfg.window} samples x {meta.channels} "
                                 f"channels does not fit the model input {list(model.input_shape)} of {cfg.model}")
            self._in_shape = tuple(model.input_shape)
        # Big inputs: quantize + sha256 on this thread, invoke() on an owner thread (_Invoker), overlapped.
        self._split = int(np.prod(model.input_shape)) >= SPLIT_MIN_INPUT_ELEMENTS
        self.stats = PipelineStats()
        self.model_id = meta.name  # the shipped model's id: signed updates of this id replace it
        self.trial: Trial | None = None
        self._commands: collections.deque[tuple[str, Trial | str | None]] = collections.deque()
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
        if self._thread.ident is not None:  # started (an aborted Agent.start may not have started it)
            self._thread.join(timeout)

    # ----- model swaps (called by the updater thread) -----------------------------------------------------
    def request_switch(self, model: Model, meta: ModelMeta) -> Trial:
        """Switch to ``model`` before the next window; the returned trial fills in as windows run."""
        if tuple(model.input_shape) != tuple(self.model.input_shape):
            raise AgentError(f"pipeline {self.cfg.stream}: the new model takes {list(model.input_shape)}, the "
                             f"running one {list(self.model.input_shape)}")
        if len(self.cfg.labels or meta.labels) != len(meta.labels):
            raise AgentError(f"pipeline {self.cfg.stream}: {len(self.cfg.labels)} labels configured, the new "
                             f"model has {len(meta.labels)} outputs")
        trial = Trial(new=model, new_meta=meta, prev=self.model, prev_meta=self.meta)
        self._commands.append(("switch", trial))
        return trial

    def request_revert(self, reason: str) -> None:
        """Go back to the previous model before the next window (no-op when already reverted)."""
        self._commands.append(("revert", reason))

    def request_commit(self) -> None:
        """Keep the new model: the previous one is released before the next window."""
        self._commands.append(("commit", None))

    def _apply_commands(self, w: Window) -> None:
        """Run on this thread, between two windows (``w`` is the next one)."""
        while self._commands:
            cmd, arg = self._commands.popleft()
            trial = self.trial
            if cmd == "switch" and isinstance(arg, Trial):
                self.trial = arg
                self._use(arg.new, arg.new_meta)
                arg.applied_at = time.monotonic()
                arg.first_window_t0_us = w.t_start_us
                log.info("pipeline %s: switched to model %s version %s (sha256 %s) from window t0 %d ms",
                         self.cfg.stream, arg.new_meta.name, arg.new_meta.version, arg.new.model_sha256.hex()[:16],
                         w.t_start_us // 1000)
            elif cmd == "revert" and trial is not None:
                self._revert(trial, str(arg), w)
                self.trial = None
            elif cmd == "commit" and trial is not None:
                self.trial = None

    def _use(self, model: Model, meta: ModelMeta) -> None:
        self.model = model
        self.meta = meta
        labels = self.cfg.labels or meta.labels
        if tuple(labels) != tuple(self.labels):  # the payload encoder caches the label strings
            self._encoder = ResultEncoder(tuple(labels))
        self.labels = labels

    def _revert(self, trial: Trial, reason: str, w: Window) -> None:
        if trial.reverted:
            return
        trial.reverted = True
        trial.revert_reason = reason
        trial.reverted_at_t0_us = w.t_start_us
        self._use(trial.prev, trial.prev_meta)
        log.warning("pipeline %s: reverted to model %s version %s from window t0 %d ms: %s", self.cfg.stream,
                    trial.prev_meta.name, trial.prev_meta.version, w.t_start_us // 1000, reason)

    def _infer(self, w: Window) -> Inference:
        """One window on the current model; during a trial an invoke error reverts and reruns it on the old one."""
        model = self.model
        try:
            inf = model.infer(self._model_input(w))
        except Exception as e:
            trial = self.trial
            if trial is None or trial.reverted or model is not trial.new:
                raise
            trial.errors.append(f"{type(e).__name__}: {e}")
            self._revert(trial, f"invoke error on the new model: {e}", w)
            return self.model.infer(self._model_input(w))
        trial = self.trial
        if trial is not None and model is trial.new:
            trial.windows += 1
            trial.latencies_us.append(inf.latency_us)
        return inf

    def _put(self, draft: Draft) -> bool:
        while not self._stop.is_set():
            try:
                self._out.put(draft, timeout=0.2)
                return True
            except queue.Full:
                now = time.monotonic()  # blocked downstream (the committer's health covers that), not stalled
                self.stats.last_progress = self.stats.busy_since = now
        return False

    def _draft(self, w: Window, inf: Inference) -> Draft:
        """The unsigned result record of one window."""
        return Draft(
            kind="result",
            stream=self.cfg.stream,
            topic=self.topic,
            payload=self._encoder.encode(inf.scores, self.cfg.score_threshold, inf.latency_us, w),
            capture_ms=w.t_end_us // 1000,
            clock_state=max(w.clock_state, self._clock_state()),
            model_sha256=inf.model_sha256,
            input_sha256=inf.input_sha256,
        )

    def stalled_for(self, now: float) -> float:
        """Seconds this pipeline has been stuck, 0 when it is fine.

        A source whose silence is legitimate (``Source.idle_ok``: a microcontroller may pause) only counts
        time spent processing a block; other sources must deliver blocks too.
        """
        st = self.stats
        if getattr(self.source, "idle_ok", False):
            return 0.0 if st.busy_since is None else now - st.busy_since
        return now - st.last_progress

    def _windows(self) -> Iterator[Window]:
        """Windows cut from the source's blocks; marks the pipeline busy while a block is being processed."""
        stats = self.stats
        for block in self.source.blocks():
            stats.last_progress = stats.busy_since = time.monotonic()
            try:
                windows = self.windower.push(block)
            except ValueError as e:
                stats.skipped_blocks += 1
                log.warning("pipeline %s: skipping block: %s", self.cfg.stream, e)
                continue
            yield from windows
            stats.busy_since = None
            if self._stop.is_set():
                return

    def _model_input(self, w: Window) -> npt.NDArray[np.float32]:
        return w.data if self._in_shape is None else w.data.reshape(self._in_shape)

    def _run(self) -> None:
        if self._split:
            self._run_split()
            return
        stats = self.stats
        try:
            for w in self._windows():
                if self._commands:
                    self._apply_commands(w)
                inf = self._infer(w)
                stats.windows += 1
                stats.record_latency(inf.latency_us)
                if not self._put(self._draft(w, inf)):
                    return
                stats.results += 1
        except Exception as e:
            stats.errors += 1
            self.failed = e
            log.exception("pipeline %s failed", self.cfg.stream)
        finally:
            self.done.set()

    # ----- split mode: this thread prepares, the _Invoker thread runs the interpreter -------------------------
    def _run_split(self) -> None:
        stats = self.stats
        invoker = _Invoker(f"invoke-{self.cfg.stream}")
        try:
            for w in self._windows():
                if self._commands:
                    self._apply_commands(w)
                model = self.model
                if not invoker.submit(w, model.prepare(self._model_input(w)), model, self._stop):
                    return
                ok, invoker = self._emit(invoker)
                if not ok:
                    return
            invoker.close()
            self._emit(invoker)
        except Exception as e:
            stats.errors += 1
            self.failed = e
            log.exception("pipeline %s failed", self.cfg.stream)
        finally:
            invoker.close()
            self.done.set()

    def _emit(self, invoker: _Invoker) -> tuple[bool, _Invoker]:
        """Turn the invoker's finished results into drafts (in order): (False when stopping, the invoker).

        An invoke error of the new model during a trial reverts: the invoker is drained and closed, that
        window and every later one the new model was given run again on the old model here (the invoker
        thread is gone, so this thread is the only one touching an interpreter), and a fresh invoker goes on.
        """
        results = invoker.results
        while results:
            w, model, inf, err = results.popleft()
            trial = self.trial
            if err is not None:
                if trial is None or trial.reverted or model is not trial.new:
                    raise err
                trial.errors.append(f"{type(err).__name__}: {err}")
                self._revert(trial, f"invoke error on the new model: {err}", w)
                invoker.close()
                redo = [(w, model, None, err), *results]
                results.clear()
                for w2, m2, inf2, _e in redo:
                    if m2 is trial.new or inf2 is None:
                        inf2 = self.model.infer(self._model_input(w2))
                    if not self._emit_one(w2, inf2):
                        return False, invoker
                return True, _Invoker(f"invoke-{self.cfg.stream}")
            assert inf is not None
            if trial is not None and model is trial.new:
                trial.windows += 1
                trial.latencies_us.append(inf.latency_us)
            if not self._emit_one(w, inf):
                return False, invoker
        return True, invoker

    def _emit_one(self, w: Window, inf: Inference) -> bool:
        stats = self.stats
        stats.windows += 1
        stats.record_latency(inf.latency_us)
        if not self._put(self._draft(w, inf)):
            return False
        stats.results += 1
        return True


class _Invoker:
    """The interpreter's owner thread in split mode: runs prepared inputs in order, nothing else.

    With MobileNetV2 (invoke ≈ 220 µs) quantizing and hashing the 27 KB input costs ≈ 35 µs and windowing,
    payload and queueing ≈ 60 µs more; done inline that is 0.62 of the raw invoke() rate (docs/benchmarks.md,
    B1). ``invoke()`` releases the GIL, so that work overlaps with it when it runs on another thread; this
    thread keeps only the hand-offs (a queue get, a deque append) next to ``invoke()``.
    """

    def __init__(self, name: str) -> None:
        self._in: queue.Queue[tuple[Window, PreparedInput, Model] | None] = queue.Queue(maxsize=2)
        # (window, model it ran on, inference or None, error or None), in submission order
        self.results: collections.deque[tuple[Window, Model, Inference | None, BaseException | None]] = \
            collections.deque()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, w: Window, p: PreparedInput, model: Model, stop: threading.Event) -> bool:
        """Queue one prepared input for ``model`` (blocks while two are waiting); False when stopping."""
        while not stop.is_set():
            try:
                self._in.put((w, p, model), timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        """Let the queued inputs finish, then end the thread."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + 5.0
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                self._in.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        get, out = self._in.get, self.results.append
        while (item := get()) is not None:
            w, p, model = item
            try:
                out((w, model, model.run(p), None))
            except Exception as e:  # reported (and judged) by the pipeline thread (_emit)
                out((w, model, None, e))

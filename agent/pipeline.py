"""One pipeline thread: source → windowing → inference → result drafts on the committer's queue.

The thread owns its source iterator, its ``Windower`` and its TFLite interpreter (interpreters are not
thread-safe). Results leave as ``Draft``s (not yet signed: the seq is assigned at commit) through a bounded
queue, so a slow disk slows the pipeline instead of growing memory.
"""

from __future__ import annotations

import collections
import logging
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
            payload=result_payload(self.labels, inf.scores, self.cfg.score_threshold, inf.latency_us, w),
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
                inf = self.model.infer(self._model_input(w))
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
        invoker = _Invoker(self.model, f"invoke-{self.cfg.stream}")
        try:
            for w in self._windows():
                if not invoker.submit(w, self.model.prepare(self._model_input(w)), self._stop) \
                        or not self._emit(invoker):
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

    def _emit(self, invoker: _Invoker) -> bool:
        """Turn the invoker's finished results into drafts (in order); False when stopping."""
        if invoker.error is not None:
            raise invoker.error
        results = invoker.results
        stats = self.stats
        while results:
            w, inf = results.popleft()
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

    def __init__(self, model: Model, name: str) -> None:
        self._model = model
        self._in: queue.Queue[tuple[Window, PreparedInput] | None] = queue.Queue(maxsize=2)
        self.results: collections.deque[tuple[Window, Inference]] = collections.deque()
        self.error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, w: Window, p: PreparedInput, stop: threading.Event) -> bool:
        """Queue one prepared input (blocks while two are waiting); False when stopping or failed."""
        while not stop.is_set() and self.error is None:
            try:
                self._in.put((w, p), timeout=0.2)
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
        get, run, out = self._in.get, self._model.run, self.results.append
        try:
            while (item := get()) is not None:
                out((item[0], run(item[1])))
        except Exception as e:  # reported by the pipeline thread (_emit)
            self.error = e

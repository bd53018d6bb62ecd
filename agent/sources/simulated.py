"""A sensor source that plays the vibration signal model (``firmware_bridge.signal_model``).

It lets the agent, its demo and its tests run end to end without hardware, on the same physics the model
was trained on, and it knows the truth: the machine condition ("fault class") of every sample it produced,
so accuracy can be scored on what the agent publishes.

Fault classes: a fixed class from the config, or ``"cycle"``: ``CLASSES`` in turn, ``cycle_s`` seconds of
*sample time* each (so a non-realtime run that produces an hour of samples in a minute still cycles). A
class change falls exactly on the sample at ``k * cycle_s``; blocks are cut there, so every block holds one
class. The ``fault`` property can also be set from another thread (the demo's "break the machine"
button); that switches to a fixed class from the next block on (realtime) or within 1024 samples (not
realtime: samples are synthesised in chunks of that size, a class change inside a chunk waits for its end).

Truth: ``current_fault`` is the class of the block last yielded. ``fault_at(t_us)`` gives the class of the
sample captured at ``t_us`` and ``fault_during(t_start_us, t_end_us)`` the class of a whole half-open
interval (a window's ``[t_start_us, t_end_us)``) or None when it straddles a change. They look up a short
history of class changes (the last ``HISTORY`` changes), keyed by capture time: the same time stamps the
windows carry, so no side channel between source and pipeline is needed.

Time: ``t0_us`` of a block = the ``clock()`` reading at the first ``blocks()`` call plus sample time
(index / rate), so timestamps never drift from the rate. ``realtime=True`` yields each block when its last
sample would have been captured (pacing against ``clock``, waiting on an event so ``close()`` is noticed
at once); ``realtime=False`` yields as fast as the consumer takes blocks. The host clock is not known to be
synchronised, so blocks carry ``CLOCK_UNSYNCED``.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from agent.settings import SimulatedSourceConfig
from agent.sources.base import CLOCK_UNSYNCED, SampleBlock, Source
from firmware_bridge import CLASSES, VibrationStream

__all__ = ["HISTORY", "SimulatedSource"]

log = logging.getLogger(__name__)

HISTORY = 4096  # class changes remembered for fault_at / fault_during
_FAST_CHUNK = 1024  # samples synthesised at once when not realtime (amortises the model's per-call cost)
_MAX_WAIT_S = 0.5  # longest single wait, so a stuck clock cannot hide close()


class SimulatedSource(Source):
    """Blocks of ``(n, 3)`` float32 samples in g from the signal model; see the module docstring."""

    name = "simulated"

    def __init__(
        self, stream: str, cfg: SimulatedSourceConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        if cfg.fault != "cycle" and cfg.fault not in CLASSES:
            raise ValueError(f"simulated source {stream!r}: fault: expected one of {[*CLASSES, 'cycle']}, "
                             f"got {cfg.fault!r}")
        if not (cfg.cycle_s > 0 and math.isfinite(cfg.cycle_s)):
            raise ValueError(f"simulated source {stream!r}: cycle_s: expected > 0, got {cfg.cycle_s!r}")
        if cfg.block_samples < 1:
            raise ValueError(
                f"simulated source {stream!r}: block_samples: expected >= 1, got {cfg.block_samples!r}"
            )
        self.stream = stream
        self.cfg = cfg
        self._clock = clock
        self._cycling = cfg.fault == "cycle"
        self._fixed = CLASSES[0] if self._cycling else cfg.fault
        self._signal = VibrationStream(self._fixed, np.random.default_rng(cfg.seed), rate_hz=cfg.rate_hz)
        self._rate = float(cfg.rate_hz)
        self._cycle_n = max(1, round(cfg.cycle_s * self._rate))  # samples per class when cycling
        self._closed = threading.Event()
        self._lock = threading.Lock()  # guards the history, read from other threads
        self._index = 0  # absolute index of the next sample
        self._t0_us: int | None = None  # capture time of sample 0
        self._history_t: deque[int] = deque(maxlen=HISTORY)  # capture time where each class starts
        self._history_f: deque[str] = deque(maxlen=HISTORY)
        self._current: str | None = None
        self._blocks = 0
        self._samples = 0

    # -- truth ------------------------------------------------------------------------------------------

    @property
    def current_fault(self) -> str | None:
        """The class of the samples last yielded (None before the first block)."""
        return self._current

    @property
    def fault(self) -> str:
        """The class produced next: the cycle's or the fixed one."""
        return self._class_for(self._index)

    @fault.setter
    def fault(self, value: str) -> None:
        """Switch to a fixed class (stops cycling) from the next block on; callable from any thread."""
        if value not in CLASSES:
            raise ValueError(f"fault: expected one of {list(CLASSES)}, got {value!r}")
        self._fixed = value
        self._cycling = False

    def fault_at(self, t_us: int) -> str | None:
        """The class of the sample captured at ``t_us`` (None: before the stream or beyond the history)."""
        with self._lock:
            ts, fs = list(self._history_t), list(self._history_f)
        i = bisect.bisect_right(ts, t_us) - 1
        if i < 0 or (i == 0 and len(ts) == HISTORY):  # earlier than the remembered history
            return None
        return fs[i]

    def fault_during(self, t_start_us: int, t_end_us: int) -> str | None:
        """The single class of every sample in ``[t_start_us, t_end_us)``; None if it changes inside."""
        with self._lock:
            ts, fs = list(self._history_t), list(self._history_f)
        i = bisect.bisect_right(ts, t_start_us) - 1
        if i < 0 or (i == 0 and len(ts) == HISTORY):
            return None
        if i + 1 < len(ts) and ts[i + 1] < t_end_us:
            return None
        return fs[i]

    # -- Source -----------------------------------------------------------------------------------------

    def blocks(self) -> Iterator[SampleBlock]:
        """Yield blocks until ``close()``; never ends by itself."""
        now = self._clock()
        if self._t0_us is None:
            self._t0_us = round(now * 1e6)
        start_wall = now - self._index / self._rate
        block_n = self.cfg.block_samples
        chunk_n = block_n if self.cfg.realtime else max(block_n, _FAST_CHUNK // block_n * block_n)
        while not self._closed.is_set():
            fault = self._class_for(self._index)
            n = chunk_n
            if self._cycling:
                n = min(n, self._cycle_n - self._index % self._cycle_n)  # cut at the class change
            if self._signal.fault != fault or not self._history_f:
                self._signal.fault = fault
                self._note_change(self._index, fault)
            chunk = self._signal.next(n)
            for off in range(0, n, block_n):
                samples = chunk[off : off + block_n]
                first = self._index
                self._index += samples.shape[0]
                if self.cfg.realtime and not self._wait_until(start_wall + self._index / self._rate):
                    return
                if self._closed.is_set():
                    return
                self._current = fault
                self._blocks += 1
                self._samples += samples.shape[0]
                yield SampleBlock(self._time_us(first), self._rate, samples, CLOCK_UNSYNCED)

    def close(self) -> None:
        """Stop ``blocks()`` at its next step (at once if it is waiting for the wall clock)."""
        self._closed.set()

    def counters(self) -> dict[str, int]:
        """``blocks`` and ``samples`` yielded so far."""
        return {"blocks": self._blocks, "samples": self._samples}

    # -- internals --------------------------------------------------------------------------------------

    def _class_for(self, index: int) -> str:
        if self._cycling:
            return CLASSES[(index // self._cycle_n) % len(CLASSES)]
        return self._fixed

    def _time_us(self, index: int) -> int:
        assert self._t0_us is not None
        return self._t0_us + round(index * 1e6 / self._rate)

    def _note_change(self, index: int, fault: str) -> None:
        with self._lock:
            self._history_t.append(self._time_us(index))
            self._history_f.append(fault)
        log.debug("stream %s: simulated fault %s from sample %d", self.stream, fault, index)

    def _wait_until(self, due: float) -> bool:
        """Sleep until ``clock() >= due``; False if closed meanwhile."""
        while True:
            remaining = due - self._clock()
            if remaining <= 0:
                return True
            if self._closed.wait(min(remaining, _MAX_WAIT_S)):
                return False

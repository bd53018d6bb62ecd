"""Cut a stream of sample blocks into fixed-length model inputs (pure: no I/O, no clock).

A source delivers ``SampleBlock``s of any size; the model wants windows of exactly ``window`` samples,
one every ``hop`` samples (``hop > window`` decimates: the samples between windows are skipped). The
``Windower`` is the only place that decides what a discontinuity means, so every source gets the same
policy:

* **gap** - a block starts later than expected by more than ``gap_tolerance`` sample periods: the partial
  window is dropped and windowing restarts at the block (window 0 of the new segment starts at its first
  sample);
* **reorder** - a block starts earlier than expected by more than ``gap_tolerance`` periods (it overlaps
  what was already consumed): the block is dropped;
* **reset** - ``block.reset`` is set (the source knows of a discontinuity): the partial window is dropped;
* **rate change** - ``block.rate_hz`` differs from the segment's rate: the partial window is dropped.

Each is counted. Within a segment, window *k* starts at sample ``k * hop``. Time stamps come from the
segment's time anchor: ``t(i) = t_anchor + round((i - i_anchor) * 1e6 / rate)`` (integer anchor, so
epoch-sized µs values keep full precision). The anchor is the segment's first
block and moves to a later block only when that block's ``t0_us`` differs from the prediction by more than
1 µs, so integer rounding of ``t0_us`` never moves it (windows do not depend on how samples are split into
blocks) while a source clock that drifts against its nominal rate is followed. A window covers the
half-open interval ``[t_start_us, t_end_us)``: ``t_end_us - t_start_us == window * 1e6 / rate`` (rounded).

Cost: no per-sample Python loop. Samples are appended to one growable float32 buffer (compacted only when
it runs out of room); each window is a contiguous float32 copy, so later blocks can never change a window
already handed out, and its array is read-only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agent.sources.base import SampleBlock

__all__ = ["Window", "Windower"]

log = logging.getLogger(__name__)

_REANCHOR_US = 1.0  # re-anchor the time base only for deviations beyond integer rounding of t0_us


@dataclass(frozen=True, eq=False, slots=True)
class Window:
    """One model input: ``data`` has shape ``(window, channels)``, float32, C-contiguous, read-only.

    ``t_start_us`` is the capture time of the first sample, ``t_end_us`` the end of the last sample's
    period (half-open interval), both µs since the Unix epoch as the source tells them; ``clock_state`` is
    the source's (``agent.sources.base.CLOCK_*``) for the block the window ends in.
    """

    stream: str
    t_start_us: int
    t_end_us: int
    data: npt.NDArray[np.float32]
    clock_state: int


class Windower:
    """Sliding windows over one stream's sample blocks; counts gaps, reorders, resets and rate changes.

    Not thread-safe: one pipeline thread pushes into it.
    """

    def __init__(
        self, stream: str, window: int, hop: int, channels: int, *, gap_tolerance: float = 0.5
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 sample, got {window}")
        if hop < 1:
            raise ValueError(f"hop must be >= 1 sample, got {hop}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if not (gap_tolerance > 0 and math.isfinite(gap_tolerance)):
            raise ValueError(f"gap_tolerance must be > 0 sample periods, got {gap_tolerance}")
        self.stream = stream
        self.window = window
        self.hop = hop
        self.channels = channels
        self.gap_tolerance = gap_tolerance
        self.windows = 0
        self.gaps = 0
        self.reorders = 0
        self.resets = 0
        self.rate_changes = 0
        self._buf: npt.NDArray[np.float32] = np.empty((max(2 * window, 256), channels), dtype=np.float32)
        self._head = 0  # row of self._buf holding segment sample self._buf_idx0
        self._len = 0  # rows buffered
        self._buf_idx0 = 0  # segment index of the first buffered sample
        self._seg_n = 0  # samples received in this segment (index of the next one)
        self._next = 0  # segment index where the next window starts
        self._rate = 0.0  # 0: no segment yet
        self._period_us = 0.0
        self._t_anchor = 0  # µs; integer so that epoch-sized times lose no precision
        self._i_anchor = 0
        self._clock_state = 0
        self._offsets = np.arange(window, dtype=np.intp)

    def counters(self) -> dict[str, int]:
        """Monotonic counters for telemetry."""
        return {
            "windows": self.windows,
            "gaps": self.gaps,
            "reorders": self.reorders,
            "resets": self.resets,
            "rate_changes": self.rate_changes,
        }

    def push(self, block: SampleBlock) -> list[Window]:
        """Consume one block; return the windows it completes (possibly none), oldest first.

        Raises ``ValueError`` (expected vs got) for samples of the wrong shape or a rate that is not a
        positive number; the windower's state is unchanged then, so the caller can count and skip.
        """
        x = block.samples
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"stream {self.stream!r}: expected samples of shape (n, {self.channels}), got shape {x.shape}"
            )
        rate = block.rate_hz
        if (rate != self._rate or self._rate == 0.0) and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"stream {self.stream!r}: expected a positive sample rate, got {rate!r}")
        n = x.shape[0]
        if n == 0:
            return []
        t0 = block.t0_us
        if self._rate == 0.0:
            self._start(t0, rate)
        elif block.reset:
            self.resets += 1
            self._start(t0, rate)
        elif rate != self._rate:
            self.rate_changes += 1
            log.info("stream %s: rate changed from %s Hz to %s Hz", self.stream, self._rate, rate)
            self._start(t0, rate)
        else:
            expected = self._t_anchor + (self._seg_n - self._i_anchor) * self._period_us
            dev = t0 - expected
            tol = self.gap_tolerance * self._period_us
            if dev > tol:
                self.gaps += 1
                log.debug("stream %s: gap of %.1f µs before t0=%d", self.stream, dev, t0)
                self._start(t0, rate)
            elif dev < -tol:
                self.reorders += 1
                log.debug("stream %s: block at t0=%d is %.1f µs early; dropped", self.stream, t0, -dev)
                return []
            elif abs(dev) > _REANCHOR_US:
                self._t_anchor = int(t0)
                self._i_anchor = self._seg_n
        self._clock_state = block.clock_state
        return self._append_and_cut(x)

    def _start(self, t0: int, rate: float) -> None:
        """Begin a new segment at ``t0``: drop whatever partial window was buffered."""
        self._rate = float(rate)
        self._period_us = 1e6 / rate
        self._t_anchor = int(t0)
        self._i_anchor = 0
        self._seg_n = 0
        self._next = 0
        self._head = 0
        self._len = 0
        self._buf_idx0 = 0

    def _append_and_cut(self, x: npt.NDArray[np.float32]) -> list[Window]:
        n = x.shape[0]
        end = self._seg_n + n
        skip = self._next - self._seg_n  # > 0 only when decimating (hop > window) with an empty buffer
        self._seg_n = end
        if skip >= n:
            self._head = 0
            self._len = 0
            self._buf_idx0 = end
            return []
        if skip > 0:
            x = x[skip:]
            n -= skip
            self._buf_idx0 = self._next
        tail = self._head + self._len
        if tail + n > self._buf.shape[0]:
            self._reserve(n)
            tail = self._len
        self._buf[tail : tail + n] = x  # casts to float32 if the source gave another float dtype
        self._len += n
        if self._next + self.window > end:
            return []
        return self._cut(end)

    def _reserve(self, n: int) -> None:
        """Make room for ``n`` more rows after the buffered ones (compact, then grow if needed)."""
        need = self._len + n
        if need <= self._buf.shape[0]:
            if self._len:
                self._buf[: self._len] = self._buf[self._head : self._head + self._len]
        else:
            grown = np.empty((max(need, 2 * self._buf.shape[0]), self.channels), dtype=np.float32)
            grown[: self._len] = self._buf[self._head : self._head + self._len]
            self._buf = grown
        self._head = 0

    def _cut(self, end: int) -> list[Window]:
        window, hop = self.window, self.hop
        k = (end - window - self._next) // hop + 1
        first = self._head + (self._next - self._buf_idx0)  # buffer row of the first window's start
        period, t_a, i_a = self._period_us, self._t_anchor, self._i_anchor
        span = window * period
        start = self._next
        if k == 1:  # the steady state: one window per block
            data = self._buf[first : first + window].copy()
            data.flags.writeable = False
            off = (start - i_a) * period
            out = [Window(self.stream, t_a + round(off), t_a + round(off + span), data, self._clock_state)]
            start += hop
        else:
            rows = (first + hop * np.arange(k, dtype=np.intp))[:, np.newaxis] + self._offsets
            batch = self._buf[rows]  # fancy indexing: one contiguous (k, window, channels) copy
            batch.flags.writeable = False
            out = []
            for j in range(k):
                off = (start - i_a) * period
                out.append(
                    Window(self.stream, t_a + round(off), t_a + round(off + span), batch[j], self._clock_state)
                )
                start += hop
        self._next = start
        self.windows += k
        # Forget samples no later window needs.
        keep_from = min(self._next, end)
        drop = keep_from - self._buf_idx0
        self._head += drop
        self._len -= drop
        self._buf_idx0 = keep_from
        if self._len == 0:
            self._head = 0
        return out

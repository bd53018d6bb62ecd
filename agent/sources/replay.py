"""A sensor source that replays a recorded CSV file, for field recordings and reproducible tests.

Format: a header row naming the columns, then one sample per row. A column named ``t_us`` (any case)
holds the capture time in microseconds; every other column is a channel, in file order. Without ``t_us``
the config's ``rate_hz`` is required and sample *i* is captured at ``start + i / rate``. With ``t_us`` and no
``rate_hz``, the rate is the median step of the first rows.

``t_us`` values are absolute (µs since the Unix epoch) when the first one is at least ``ABSOLUTE_T_US``
(September 2001), else relative to the replay start (the ``clock()`` reading when ``blocks()`` starts).
Rows are grouped into blocks of consecutive samples; a block is cut wherever ``t_us`` does not advance by
one sample period (within half a period), so the windower sees recorded gaps and reorders as such.

Bad rows (wrong column count, a value that is not a finite number) are counted in ``bad_rows`` and
skipped, never raised; blank lines are ignored. With ``loop`` the file restarts at its end: time keeps
advancing (the next pass starts one period after the last sample of the previous one) and the first block
of each pass carries ``reset`` (the signal is discontinuous there). ``realtime`` paces blocks at the
recorded rate (a block is yielded when its last sample would have been captured); otherwise blocks come
as fast as the consumer takes them. A file that cannot be opened, lacks a header or a channel column, or
gives no way to know the rate is refused at construction with ``SourceError`` naming the file.
"""

from __future__ import annotations

import csv
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt

from agent.errors import SourceError
from agent.settings import ReplaySourceConfig
from agent.sources.base import CLOCK_UNSYNCED, SampleBlock, Source

__all__ = ["ABSOLUTE_T_US", "ReplaySource"]

log = logging.getLogger(__name__)

ABSOLUTE_T_US = 1_000_000_000_000_000  # 2001-09-09: smaller t_us values are relative to the replay start
_REALTIME_ROWS = 64  # rows per block when pacing (64 ms at 1 kHz)
_FAST_ROWS = 1024  # rows per block when not pacing
_RATE_PROBE_ROWS = 1024
_MAX_WAIT_S = 0.5


class ReplaySource(Source):
    """Blocks of float32 samples from a CSV file; see the module docstring for the format and policy."""

    name = "replay"

    def __init__(self, stream: str, cfg: ReplaySourceConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.stream = stream
        self.cfg = cfg
        self._clock = clock
        self._closed = threading.Event()
        self._blocks = 0
        self._samples = 0
        self._bad_rows = 0
        self._passes = 0
        try:
            with open(cfg.path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None:
                    raise SourceError(f"{cfg.path}: expected a CSV header row, got an empty file")
                names = [h.strip() for h in header]
                t_cols = [i for i, h in enumerate(names) if h.lower() == "t_us"]
                if len(t_cols) > 1:
                    raise SourceError(f"{cfg.path}: expected at most one t_us column, got {len(t_cols)}")
                self._t_col: int | None = t_cols[0] if t_cols else None
                self._ncols = len(names)
                self.channel_names = tuple(h for i, h in enumerate(names) if i != self._t_col)
                if not self.channel_names:
                    raise SourceError(f"{cfg.path}: expected at least one channel column, got header {names}")
                self._ch_idx = np.array([i for i in range(self._ncols) if i != self._t_col], dtype=np.intp)
                rate = cfg.rate_hz if cfg.rate_hz is not None else self._probe_rate(reader)
        except OSError as e:
            raise SourceError(f"{cfg.path}: cannot read replay file: {e.strerror or e}") from e
        except UnicodeDecodeError as e:
            raise SourceError(f"{cfg.path}: expected a UTF-8 CSV file: {e}") from e
        if not (rate > 0 and math.isfinite(rate)):
            raise SourceError(f"{cfg.path}: expected a positive sample rate, got {rate!r}")
        self.rate_hz = float(rate)
        self._period_us = 1e6 / self.rate_hz

    @property
    def channels(self) -> int:
        """Number of channel columns."""
        return len(self.channel_names)

    def close(self) -> None:
        """Stop ``blocks()`` at its next step (at once if it is waiting for the wall clock)."""
        self._closed.set()

    def counters(self) -> dict[str, int]:
        """``blocks``, ``samples``, ``bad_rows`` (skipped) and ``passes`` (completed passes over the file)."""
        return {
            "blocks": self._blocks,
            "samples": self._samples,
            "bad_rows": self._bad_rows,
            "passes": self._passes,
        }

    def blocks(self) -> Iterator[SampleBlock]:
        """Yield the file's samples as blocks; ends at end of file unless ``loop``, or at ``close()``."""
        rows_per_block = _REALTIME_ROWS if self.cfg.realtime else _FAST_ROWS
        start_clock = self._clock()
        start_us = round(start_clock * 1e6)
        offset_us = 0.0  # added to every time stamp of the current pass (grows by one pass per loop)
        first_rel: float | None = None  # time of the file's first sample on the replay timeline, µs
        reset = False
        absolute = False
        while not self._closed.is_set():
            next_rel = 0.0  # without t_us: time of the next sample relative to the pass start
            last_rel: float | None = None
            try:
                f = open(self.cfg.path, newline="", encoding="utf-8")  # noqa: SIM115 (closed below)
            except OSError as e:
                raise SourceError(f"{self.cfg.path}: cannot read replay file: {e.strerror or e}") from e
            with f:
                reader = csv.reader(f)
                next(reader, None)  # the header, checked at construction
                for recorded, values in self._chunks(reader, rows_per_block):
                    if recorded is None:
                        times = next_rel + self._period_us * np.arange(values.shape[0], dtype=np.float64)
                        next_rel = float(times[-1]) + self._period_us
                    else:
                        times = recorded
                    for t_rel, samples in self._split(times, values):
                        if first_rel is None:
                            first_rel = float(t_rel[0])
                            absolute = first_rel >= ABSOLUTE_T_US
                        last_rel = float(t_rel[-1])
                        t0 = float(t_rel[0]) + offset_us
                        if self.cfg.realtime:
                            due = start_clock + (t0 - first_rel + samples.shape[0] * self._period_us) / 1e6
                            if not self._wait_until(due):
                                return
                        if self._closed.is_set():
                            return
                        t0_us = round(t0) if absolute else start_us + round(t0)
                        self._blocks += 1
                        self._samples += samples.shape[0]
                        yield SampleBlock(t0_us, self.rate_hz, samples, CLOCK_UNSYNCED, reset)
                        reset = False
            self._passes += 1
            if not self.cfg.loop or last_rel is None or first_rel is None:
                if last_rel is None:
                    log.warning("replay %s: %s holds no valid rows", self.stream, self.cfg.path)
                return
            offset_us += last_rel + self._period_us - first_rel
            reset = True

    # -- internals --------------------------------------------------------------------------------------

    def _probe_rate(self, reader: Iterator[list[str]]) -> float:
        """Median step of ``t_us`` over the first rows; needs the t_us column."""
        if self._t_col is None:
            raise SourceError(f"{self.cfg.path}: rate_hz is required when the CSV has no t_us column")
        steps: list[float] = []
        for times, _ in self._chunks(reader, _RATE_PROBE_ROWS, count=False):
            assert times is not None
            steps.extend(np.diff(times).tolist())
            break
        positive = [s for s in steps if s > 0]
        if not positive:
            raise SourceError(f"{self.cfg.path}: cannot derive the sample rate: expected at least two rows "
                              f"with increasing t_us, got {len(steps) + 1 if steps else 'fewer'}")
        return 1e6 / float(np.median(positive))

    def _chunks(
        self, reader: Iterator[list[str]], rows: int, *, count: bool = True
    ) -> Iterator[tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float32]]]:
        """Valid rows from ``reader`` (past the header) in chunks: (t_us column or None, channel values)."""
        ncols = self._ncols
        pending: list[list[float]] = []
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if len(row) != ncols:
                if count:
                    self._bad_rows += 1
                continue
            try:
                pending.append([float(v) for v in row])
            except ValueError:
                if count:
                    self._bad_rows += 1
                continue
            if len(pending) >= rows:
                yield self._to_arrays(pending, count)
                pending = []
        if pending:
            yield self._to_arrays(pending, count)

    def _to_arrays(
        self, pending: list[list[float]], count: bool
    ) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float32]]:
        a = np.array(pending, dtype=np.float64)
        ok = np.isfinite(a).all(axis=1)
        if not ok.all():
            if count:
                self._bad_rows += int((~ok).sum())
            a = a[ok]
        values = a[:, self._ch_idx].astype(np.float32)
        times = None if self._t_col is None else a[:, self._t_col]
        return times, values

    def _split(
        self, times: npt.NDArray[np.float64], values: npt.NDArray[np.float32]
    ) -> Iterator[tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]]:
        """Cut a chunk where consecutive times are not one period apart (within half a period)."""
        if times.shape[0] == 0:
            return
        steps = np.diff(times)
        cuts = np.flatnonzero(np.abs(steps - self._period_us) > 0.5 * self._period_us) + 1
        start = 0
        for cut in [*cuts.tolist(), times.shape[0]]:
            yield times[start:cut], values[start:cut]
            start = cut

    def _wait_until(self, due: float) -> bool:
        """Sleep until ``clock() >= due``; False if closed meanwhile."""
        while True:
            remaining = due - self._clock()
            if remaining <= 0:
                return True
            if self._closed.wait(min(remaining, _MAX_WAIT_S)):
                return False

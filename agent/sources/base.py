"""The one small interface every sensor source implements, and the block of samples it produces.

A source turns some outside stream (a signal model, a CSV file, a serial microcontroller) into
``SampleBlock``s with wall-clock capture times. Windowing (pure) cuts blocks into model inputs.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

CLOCK_UNSYNCED = 0
CLOCK_NTP = 1
CLOCK_GNSS = 2


@dataclass(frozen=True)
class SampleBlock:
    """Consecutive samples of one stream at a fixed rate.

    ``t0_us`` is the capture time of the first sample in microseconds since the Unix epoch (as well as the
    source can tell: see ``clock_state``). ``samples`` has shape ``(n, channels)``, dtype float32, in the
    sensor's physical unit. ``reset`` is set on the first block after a discontinuity the source knows of
    (MCU reset, reconnect, file restart): windowing then drops any partial window.
    """

    t0_us: int
    rate_hz: float
    samples: npt.NDArray[np.float32]
    clock_state: int = CLOCK_UNSYNCED
    reset: bool = False


class Source(abc.ABC):
    """A stream of sample blocks for one pipeline.

    ``blocks()`` yields until the source ends or ``close()`` is called from another thread; it may block
    while waiting for data but must notice ``close()`` within about 0.5 s. Errors that the source can recover
    from (a corrupt frame, an unplugged cable) are counted in ``counters()`` and never raised.
    """

    name: str = "source"
    idle_ok: bool = False
    """True when silence is legitimate (a microcontroller may pause): the watchdog then only counts time
    spent processing a block as a stall, not time waiting for one."""

    @abc.abstractmethod
    def blocks(self) -> Iterator[SampleBlock]:
        """Yield blocks in capture order."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop producing; safe to call from any thread, more than once."""

    def counters(self) -> dict[str, int]:
        """Monotonic counters for telemetry (frames, errors, reconnects...)."""
        return {}

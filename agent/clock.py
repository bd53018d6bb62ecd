"""Is the system clock synchronised? Asked of the kernel (adjtimex), so NTP, chrony and GNSS-disciplined
clocks all count, without talking to any daemon."""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def _adjtimex_synced() -> bool | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols include libc's adjtimex
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)


class ClockState:
    """Caches the kernel's sync flag for ``refresh_s`` so the hot path pays nothing.

    ``probe`` (the kernel's verdict: True, False or None for no answer) and ``clock`` (monotonic seconds)
    are passed in so tests can drive the cache without clock tricks.
    """

    def __init__(self, refresh_s: float = 60.0, *, probe: Callable[[], bool | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._refresh_s = refresh_s
        self._probe = probe or _adjtimex_synced
        self._clock = clock
        self._checked: float | None = None
        self._state = 0

    def get(self) -> int:
        """0 unsynced (or unknown), 1 synchronised (NTP or better), per the envelope's clock-state values."""
        now = self._clock()
        if self._checked is None or now - self._checked >= self._refresh_s:
            self._checked = now
            self._state = 1 if self._probe() else 0
        return self._state


def kernel_synced() -> bool | None:
    """The kernel's verdict right now: True synchronised, False not, None when adjtimex gives no answer."""
    return _adjtimex_synced()

"""agent.clock: the kernel's sync verdict (a real adjtimex call) and the cache the hot path reads."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.clock import ClockState, _Timex, kernel_synced


@pytest.mark.skipif(sys.platform != "linux", reason="adjtimex is Linux's")
def test_the_kernel_answers() -> None:
    """On Linux adjtimex with modes 0 only reads: the answer is a bool, never "no answer"."""
    assert isinstance(kernel_synced(), bool)


@pytest.mark.skipif(sys.platform != "linux" or shutil.which("gcc") is None, reason="needs Linux and gcc")
def test_timex_matches_the_c_library_struct(tmp_path: Path) -> None:
    """The ctypes layout equals glibc's <sys/timex.h> (compiled here): a wrong layout would read the sync flag
    from another field, or let adjtimex write past the buffer."""
    src = tmp_path / "t.c"
    src.write_text('#include <sys/timex.h>\n#include <stdio.h>\n#include <stddef.h>\nint main(void) {'
                   'printf("%zu %zu %zu", sizeof(struct timex), offsetof(struct timex, status), '
                   'offsetof(struct timex, tai)); return 0; }\n')
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True, capture_output=True, timeout=60)
    size, status, tai = map(int, subprocess.run([str(exe)], check=True, capture_output=True, text=True,
                                                timeout=10).stdout.split())
    assert ctypes.sizeof(_Timex) >= size  # ours may be padded, never shorter
    assert (_Timex.status.offset, _Timex.tai.offset) == (status, tai)


class Probe:
    def __init__(self, *answers: bool | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> bool | None:
        self.calls += 1
        return self.answers.pop(0)


def test_state_maps_the_verdict_to_the_envelope_values() -> None:
    for answer, state in ((True, 1), (False, 0), (None, 0)):
        assert ClockState(probe=Probe(answer), clock=lambda: 0.0).get() == state


def test_the_verdict_is_cached_for_refresh_s() -> None:
    now = [1000.0]
    probe = Probe(True, False, True)
    cs = ClockState(60.0, probe=probe, clock=lambda: now[0])
    assert cs.get() == 1 and probe.calls == 1  # the first read asks, whatever the clock says
    now[0] += 59.9
    assert cs.get() == 1 and probe.calls == 1  # cached
    now[0] += 0.1
    assert cs.get() == 0 and probe.calls == 2  # exactly refresh_s later: asked again
    now[0] += 30
    assert cs.get() == 0 and probe.calls == 2
    now[0] += 30
    assert cs.get() == 1 and probe.calls == 3


def test_first_read_asks_even_at_clock_zero() -> None:
    probe = Probe(True)
    assert ClockState(probe=probe, clock=lambda: 0.0).get() == 1 and probe.calls == 1

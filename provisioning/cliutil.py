"""Conventions every command-line tool of the project follows (``edge-agent``, ``edge-aggregator``,
``edge-provision``), written once.

Here rather than in each CLI because all three import ``provisioning`` (the lowest package with I/O) and
nothing else they share. Kept free of heavy imports: ``--help`` of every tool loads it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

__all__ = ["EXIT_BROKEN_PIPE", "run_main"]

EXIT_BROKEN_PIPE = 128 + int(signal.SIGPIPE)  # 141: what a shell reports for a tool killed by SIGPIPE


def run_main(body: Callable[[], int]) -> int:
    """Run a CLI's body and return its exit code; when the reader of stdout went away (``... | head``),
    stop quietly with 141 as Unix tools do, instead of a BrokenPipeError traceback.

    stdout is flushed inside the guard, and on a broken pipe pointed at /dev/null, so the interpreter's
    final flush does not print "Exception ignored ... BrokenPipeError" either.
    """
    try:
        code = body()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # stdout without a file descriptor (embedded, tests)
            pass
        return EXIT_BROKEN_PIPE


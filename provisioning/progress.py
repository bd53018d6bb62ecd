"""A dependency-free progress bar on stderr for bulk commands (``fleet sign``).

On a terminal it is redrawn in place with ``\\r`` at most ~100 times per run; when stderr is a file or a pipe
(journald, CI logs) it prints one line per 10 %, so logs stay readable.
"""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """``label [#####.....] done/total  (n rejected)`` on ``stream``."""

    def __init__(self, total: int, label: str, *, stream: TextIO | None = None, enabled: bool = True,
                 width: int = 30) -> None:
        self.total = max(total, 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.width = width
        self.done = 0
        self.rejected = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._step = max(1, self.total // (100 if self._tty else 10))

    def advance(self, *, rejected: bool = False) -> None:
        self.done += 1
        if rejected:
            self.rejected += 1
        if self.done == self.total or self.done % self._step == 0:
            self._draw()

    def render(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = round(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        tail = f"  ({self.rejected} rejected)" if self.rejected else ""
        return f"{self.label} [{bar}] {self.done}/{self.total}{tail}"

    def _draw(self) -> None:
        if self.enabled:
            self.stream.write(("\r" + self.render()) if self._tty else (self.render() + "\n"))
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self._tty:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
        elif self.enabled and self.done % self._step != 0 and self.done != self.total:
            self._draw()

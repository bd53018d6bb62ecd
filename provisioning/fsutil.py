"""Atomic file writes (temp file in the same directory, fsync, ``os.replace``, fsync of the directory).

Every file the tools write goes through here, so a power cut or a refused check never leaves half a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically, with permission bits ``mode`` from the start.

    ``durable=False`` skips the fsyncs: for files rewritten every few seconds on tmpfs (the agent's status
    snapshot), where readers still never see half a file but a power cut may keep the previous version.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}-", dir=p.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

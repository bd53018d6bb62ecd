"""Build the no-op external delegate (tests/support/delegate/noop_delegate.c) with the system C compiler."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "delegate" / "noop_delegate.c"
CC = shutil.which("cc") or shutil.which("gcc")


def build_noop_delegate(out_dir: Path) -> Path:
    """``libnoop_delegate.so`` in ``out_dir`` (the caller skips when there is no C compiler)."""
    assert CC is not None
    lib = out_dir / "libnoop_delegate.so"
    subprocess.run([CC, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(lib), str(SOURCE)], check=True,
                   capture_output=True, timeout=60)
    return lib

"""The platforms the project supports, said once: the sentence the docs quote, the installer and the agent print.

Why a check at all: every runtime dependency has 64-bit ARM and x86_64 wheels, but there is no TFLite runtime
for 32-bit ARM on Python 3.10+ (``ai-edge-litert`` has no armv7l wheel, ``tflite-runtime`` stops at Python
3.9), so on a 32-bit Raspberry Pi OS image the install ends in a resolver error about a package the user never
asked for. The check looks at the interpreter, not the kernel: a 32-bit Raspberry Pi OS often runs a 64-bit
kernel (``uname -m`` says aarch64) under a 32-bit userland, and only the pointer size tells them apart.

Standard library only: ``setup.py`` loads this file by path, before anything is installed.
"""

from __future__ import annotations

import platform
import struct

__all__ = ["SUPPORTED_MACHINES", "SUPPORTED_PLATFORMS", "platform_problem", "this_platform_problem"]

SUPPORTED_PLATFORMS = (
    "depin-edge-agent supports 64-bit Linux only: devices on 64-bit Raspberry Pi OS or Debian (aarch64) or NVIDIA "
    "JetPack 6, aggregators and development machines on x86_64. 32-bit ARM (armv7l, armhf images such as 32-bit "
    "Raspberry Pi OS) cannot work: there is no TFLite runtime for it on Python 3.10 or later. Install the 64-bit "
    "OS image (docs/install.md)."
)

SUPPORTED_MACHINES = frozenset({"aarch64", "arm64", "x86_64", "amd64"})


def platform_problem(machine: str, pointer_bits: int) -> str | None:
    """Why ``machine`` (``platform.machine()``) with ``pointer_bits``-bit pointers is unsupported, or None."""
    m = machine.lower()
    if pointer_bits != 64:
        what = f"a {pointer_bits}-bit Python on {machine or 'an unknown machine'}"
        if m in SUPPORTED_MACHINES:
            what += " (a 64-bit kernel under a 32-bit userland)"
        return f"unsupported platform: {what}. {SUPPORTED_PLATFORMS}"
    if m not in SUPPORTED_MACHINES:
        return f"unsupported platform: {machine or 'unknown machine'}. {SUPPORTED_PLATFORMS}"
    return None


def this_platform_problem() -> str | None:
    """``platform_problem`` for the running interpreter (its own word size, whatever the kernel's)."""
    bits = platform.architecture()[0]  # "64bit" / "32bit" of this interpreter's binary
    return platform_problem(platform.machine(), int(bits[:2]) if bits[:2].isdigit() else struct.calcsize("P") * 8)

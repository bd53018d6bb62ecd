"""Supported platforms (issue 12 item 10): one sentence, the same in the docs, the installer and the agent."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from agent.platform_support import SUPPORTED_PLATFORMS, platform_problem

REPO = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.mark.parametrize(("machine", "bits", "ok", "says"), [
    ("aarch64", 64, True, ""),                 # 64-bit Raspberry Pi OS / Debian arm64, JetPack 6
    ("x86_64", 64, True, ""),                  # aggregators, development
    ("AMD64", 64, True, ""),
    ("arm64", 64, True, ""),                   # what macOS and some tools call aarch64
    ("armv7l", 32, False, "32-bit Python on armv7l"),   # 32-bit Raspberry Pi OS
    ("armv6l", 32, False, "32-bit Python on armv6l"),   # Pi Zero / Pi 1
    ("aarch64", 32, False, "64-bit kernel under a 32-bit userland"),  # 32-bit Pi OS on a 64-bit kernel
    ("x86_64", 32, False, "32-bit"),
    ("i686", 32, False, "32-bit Python on i686"),
    ("riscv64", 64, False, "unsupported platform: riscv64"),  # 64-bit, but no TFLite wheel
    ("ppc64le", 64, False, "ppc64le"),
    ("", 64, False, "unknown machine"),
])
def test_platform_table(machine: str, bits: int, ok: bool, says: str) -> None:
    problem = platform_problem(machine, bits)
    if ok:
        assert problem is None
    else:
        assert problem is not None and says in problem and problem.endswith(SUPPORTED_PLATFORMS)


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_docs_state_the_same_sentence() -> None:
    assert _flat(SUPPORTED_PLATFORMS) in _flat((REPO / "docs" / "install.md").read_text())


def test_the_tflite_runtime_is_required_on_every_linux_machine() -> None:
    """So a wheel install on 32-bit ARM fails in the resolver (no ai-edge-litert wheel there) instead of
    succeeding without a runtime; docs/install.md maps that error to this cause."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    deps = [Requirement(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    (litert,) = [r for r in deps if r.name == "ai-edge-litert"]
    for machine in ("armv7l", "armv6l", "aarch64", "x86_64", "riscv64"):
        env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
        env.update(platform_machine=machine, platform_system="Linux")
        assert litert.marker is None or litert.marker.evaluate(env), machine
    assert "ai-edge-litert>=1.2" in (REPO / "docs" / "install.md").read_text()

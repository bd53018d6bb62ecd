"""An unsupported platform stops the install and the agent with the supported-platforms sentence (item 10).

The machine is played by replacing ``platform.machine`` and ``platform.architecture`` in a fresh interpreter before
``setup.py`` or the agent runs: the code under test is the real one, only the answer about the CPU changes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.platform_support import SUPPORTED_PLATFORMS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

PRETEND = ("import platform\n"
           "platform.machine = lambda: {machine!r}\n"
           "platform.architecture = lambda *a, **k: ('{bits}bit', 'ELF')\n")


def pretend(machine: str, bits: int, then: str) -> subprocess.CompletedProcess[str]:
    code = PRETEND.format(machine=machine, bits=bits) + then
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)


CASES = [("armv7l", 32), ("aarch64", 32), ("riscv64", 64)]


@pytest.mark.parametrize(("machine", "bits"), CASES)
def test_a_source_install_stops_before_building(machine: str, bits: int) -> None:
    res = pretend(machine, bits, "import runpy, sys\nsys.argv = ['setup.py', '--version']\n"
                                 "runpy.run_path('setup.py', run_name='__main__')\n")
    assert res.returncode != 0
    assert SUPPORTED_PLATFORMS in res.stderr and "Traceback" not in res.stderr, res.stderr


@pytest.mark.parametrize(("machine", "bits"), CASES)
@pytest.mark.parametrize("command", [["run", "--config", "/nonexistent.toml"], ["demo", "--seconds", "1"],
                                     ["check-config", "/nonexistent.toml"]])
def test_the_agent_refuses_to_start(machine: str, bits: int, command: list[str]) -> None:
    res = pretend(machine, bits, f"from agent.cli import main\nraise SystemExit(main({command!r}))\n")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("edge-agent: unsupported platform") and SUPPORTED_PLATFORMS in res.stderr


def test_a_supported_platform_builds() -> None:
    res = pretend("aarch64", 64, "import runpy, sys\nsys.argv = ['setup.py', '--version']\n"
                                 "runpy.run_path('setup.py', run_name='__main__')\n")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "0.1.0"

"""Refuse to build or install on a platform the project cannot run on, with the sentence docs/install.md gives.

Everything else is declared in pyproject.toml. This runs whenever pip builds from source (``pip install .``,
a git URL, an sdist) on the target machine; installs of the built wheel are guarded by the ``ai-edge-litert``
requirement in pyproject.toml (no wheel for 32-bit ARM) and by the agent's own check at start.
"""

import runpy
from pathlib import Path

from setuptools import setup

_support = runpy.run_path(str(Path(__file__).resolve().parent / "agent" / "platform_support.py"))
_problem = _support["this_platform_problem"]()
if _problem:
    raise SystemExit(f"depin-edge-agent: {_problem}")

setup()

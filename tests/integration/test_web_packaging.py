"""The built wheel: its metadata keeps the web stack in the ``web`` extra (a device install pulls none of it)
and it ships the templates, the vendored htmx and uPlot and their licenses."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
WEB_STACK = {"starlette", "uvicorn", "sse-starlette", "jinja2"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"cannot build the wheel here (pip needs setuptools>=68 and wheel from an index): "
                    f"{proc.stderr.strip().splitlines()[-1:]}")
    return next(out.glob("depin_edge_agent-*.whl"))


def test_wheel_metadata_keeps_the_web_stack_optional(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    base, web = set(), set()
    for line in meta.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = line.split(":", 1)[1].strip()
        name = re.split(r"[<>=!~;\[ (]", req, maxsplit=1)[0].lower().replace("_", "-")
        if "extra ==" not in req:
            base.add(name)
        elif re.search(r"extra == ['\"]web['\"]", req):
            web.add(name)
    assert not base & WEB_STACK, f"base install pulls {base & WEB_STACK}"
    assert web >= WEB_STACK
    assert "prometheus-client" in base, "the agent's metrics add at most prometheus-client"


def test_wheel_ships_templates_vendored_libraries_and_licenses(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("aggregator/web/templates/fleet.html", "aggregator/web/templates/device.html",
              "aggregator/web/static/app.js", "aggregator/web/static/app.css",
              "aggregator/web/static/vendor/htmx/htmx.min.js", "aggregator/web/static/vendor/htmx/LICENSE",
              "aggregator/web/static/vendor/uplot/uPlot.iife.min.js", "aggregator/web/static/vendor/uplot/LICENSE",
              "aggregator/web/static/vendor/VENDOR.md"):
        assert f in names, f

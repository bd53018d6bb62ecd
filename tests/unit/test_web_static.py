"""What the browser loads is in the package: vendored htmx 2 and uPlot unmodified (sums in VENDOR.md) with
their licenses, templates without external URLs or inline code (the CSP forbids them), and the web stack an
optional extra (a base install, and the agent, import none of it)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

from aggregator.web.app import CSP

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

WEB = Path(__file__).resolve().parents[2] / "aggregator" / "web"
VENDOR = WEB / "static" / "vendor"
WEB_STACK = ("starlette", "uvicorn", "sse_starlette", "jinja2")


def test_vendored_files_match_their_recorded_sums_and_carry_licenses() -> None:
    text = (VENDOR / "VENDOR.md").read_text()
    sums = dict((path, digest) for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, re.M))
    assert set(sums) == {"htmx/htmx.min.js", "uplot/uPlot.iife.min.js", "uplot/uPlot.min.css"}
    for path, digest in sums.items():
        assert hashlib.sha256((VENDOR / path).read_bytes()).hexdigest() == digest, path
    assert "Zero-Clause BSD" in (VENDOR / "htmx" / "LICENSE").read_text()
    assert "MIT License" in (VENDOR / "uplot" / "LICENSE").read_text()
    assert 'version:"2.' in (VENDOR / "htmx" / "htmx.min.js").read_text(), "htmx 2"


def test_templates_load_nothing_from_elsewhere_and_hold_no_inline_code() -> None:
    for tpl in (WEB / "templates").glob("*.html"):
        html = tpl.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", html), f"{tpl.name}: external URL"
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{tpl.name}: inline script"
        assert "<style" not in html and " style=" not in html, f"{tpl.name}: inline style"
        assert not re.search(r"\son[a-z]+=", html), f"{tpl.name}: inline event handler"
        assert "hx-on" not in html and "hx-vars" not in html, f"{tpl.name}: htmx eval features"
    assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP


def test_app_js_has_no_network_access_beyond_its_origin() -> None:
    js = (WEB / "static" / "app.js").read_text()
    assert "http://" not in js and "https://" not in js and "eval(" not in js


def test_base_dependencies_exclude_the_web_stack(repo_root: str) -> None:
    project = tomllib.loads((Path(repo_root) / "pyproject.toml").read_text())["project"]
    base = [re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in project["dependencies"]]
    for name in ("starlette", "uvicorn", "sse-starlette", "jinja2", "fastapi", "flask"):
        assert name not in base, f"{name} is a base dependency: a device install would pull it"
    web = " ".join(project["optional-dependencies"]["web"]).lower()
    assert all(n in web for n in ("starlette", "uvicorn", "sse-starlette", "jinja2"))
    assert "aggregator.web" in Path(repo_root, "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1]


def test_agent_and_aggregator_core_import_without_the_web_stack() -> None:
    """With starlette, uvicorn, sse-starlette and jinja2 unimportable, the agent, the aggregator, its CLI and
    the fleet tracker still import (a worker without the extra can track the fleet for the others)."""
    code = (
        "import sys\n"
        f"for m in {WEB_STACK!r}: sys.modules[m] = None\n"
        "import agent, agent.cli, agent.service, aggregator, aggregator.cli, aggregator.web\n"
        "from aggregator.web.tracker import FleetTracker\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{WEB_STACK!r} and sys.modules[m] is not None)\n"
        "assert not loaded, loaded\n"
        "try:\n"
        "    import aggregator.web.app\n"
        "except ImportError:\n"
        "    print('app needs the extra')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(WEB.parents[1]))
    assert out.returncode == 0, out.stderr
    assert "app needs the extra" in out.stdout

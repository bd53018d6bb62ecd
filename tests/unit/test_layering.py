"""Package layering (issue 12 item 20): read from the source, so a lazy import inside a function counts too.

- ``agent/`` never imports ``aggregator``, nor ``demo`` (the package that wires the aggregator in): an agent
  host installs and loads only its half. ``edge-agent demo`` reaches the demo by entry point.
- Code outside ``firmware_bridge`` imports only names the package exports (its ``__all__``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import firmware_bridge

ROOT = Path(__file__).resolve().parents[2]
# Packages agent/ must never load: the aggregator, and the demo that imports it.
FORBIDDEN_IN_AGENT = frozenset({"aggregator", "demo"})
# Product code that consumes firmware_bridge (its own unit tests may open a submodule directly).
FIRMWARE_BRIDGE_USERS = ("agent", "aggregator", "provisioning", "envelope", "demo", "bench", "tools")


def imported_modules(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """Every absolute module name ``source`` imports, anywhere (module level, functions, ``TYPE_CHECKING``
    blocks), with its line: ``import a.b``, ``from a.b import c`` (as ``a.b`` and ``a.b.c``: ``c`` may be a
    submodule), and ``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a literal name."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def forbidden_imports(source: str, forbidden: frozenset[str], filename: str = "<source>") -> list[str]:
    return [f"{filename}:{line}: {mod}" for line, mod in imported_modules(source, filename)
            if mod.split(".")[0] in forbidden]


def test_the_scanner_sees_every_form_of_import() -> None:
    """The rule can fail: each form below is one way a module could pull the aggregator in."""
    cases = {
        "import aggregator": True,
        "import aggregator.verifier as v": True,
        "from aggregator import AggregatorService": True,
        "from aggregator.store import Store": True,
        "def f():\n    from aggregator import x  # noqa: PLC0415\n": True,
        "class C:\n    def m(self):\n        import aggregator.cli\n": True,
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from aggregator import A\n": True,
        "import importlib\nimportlib.import_module('aggregator.cli')": True,
        "from importlib import import_module\nimport_module('demo.run')": True,
        "__import__('aggregator')": True,
        "from demo.cli import main": True,
        "try:\n    import demo\nexcept ImportError:\n    pass\n": True,
        "import aggregators_of_other_kinds": False,
        "from agent.topics import Topics": False,
        "from . import aggregator": False,  # relative: a module of agent itself
        "x = 'aggregator'": False,
        "import provisioning.cliutil": False,
    }
    for source, bad in cases.items():
        assert bool(forbidden_imports(source, FORBIDDEN_IN_AGENT)) is bad, source


def test_nothing_in_agent_imports_the_aggregator_or_the_demo() -> None:
    files = sorted((ROOT / "agent").rglob("*.py"))
    assert len(files) > 20
    problems = [p for f in files
                for p in forbidden_imports(f.read_text(encoding="utf-8"), FORBIDDEN_IN_AGENT,
                                           str(f.relative_to(ROOT)))]
    assert not problems, "agent/ must not import these (use an entry point):\n" + "\n".join(problems)


def test_building_the_agent_cli_loads_no_aggregator_module() -> None:
    """At run time too: ``edge-agent --help`` (which registers the demo subcommand by entry point) leaves
    ``aggregator`` unloaded; the demo's heavy half loads only when the demo runs."""
    code = ("import sys, agent.cli\n"
            "agent.cli.build_parser()\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'aggregator' or m == 'demo.run')\n"
            "print(' '.join(bad))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_edge_agent_demo_is_the_demo_packages_entry_point() -> None:
    from agent.cli import COMMANDS_GROUP, build_parser
    from demo.cli import cmd_demo

    eps = {ep.name: ep.value for ep in entry_points(group=COMMANDS_GROUP)}
    assert eps.get("demo") == "demo.cli:add_subcommand"
    args = build_parser().parse_args(["demo", "--seconds", "3", "--json"])
    assert args.func is cmd_demo and args.seconds == 3.0 and args.json and args.prog == "edge-agent demo"
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("edge-demo") == "demo.cli:main"


def test_the_demo_usage_error_names_the_command_it_was_called_as() -> None:
    for argv, prog in (([sys.executable, "-m", "agent", "demo"], "edge-agent demo"),
                       ([sys.executable, "-m", "demo"], "edge-demo")):
        proc = subprocess.run([*argv, "--seconds", "0"], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert proc.returncode == 2
        assert f"{prog}: --seconds must be > 0" in proc.stderr


def _names_imported_from_firmware_bridge(source: str) -> list[tuple[int, str, str]]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] == "firmware_bridge":
            out += [(node.lineno, node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, "") for a in node.names
                    if a.name.startswith("firmware_bridge.")]
    return out


@pytest.mark.parametrize("package", FIRMWARE_BRIDGE_USERS)
def test_outside_code_imports_only_what_firmware_bridge_exports(package: str) -> None:
    """``from firmware_bridge.signal_model import CLASSES`` reached past the package's API; every name used
    from outside must be in ``firmware_bridge.__all__`` and imported from the package itself."""
    exported = set(firmware_bridge.__all__)
    problems = []
    for f in sorted((ROOT / package).rglob("*.py")):
        for line, module, name in _names_imported_from_firmware_bridge(f.read_text(encoding="utf-8")):
            where = f"{f.relative_to(ROOT)}:{line}"
            if module != "firmware_bridge":
                problems.append(f"{where}: imports {module} (use `from firmware_bridge import ...`)")
            elif name not in exported:
                problems.append(f"{where}: {name} is not in firmware_bridge.__all__")
    assert not problems, "\n".join(problems)


def test_firmware_bridge_exports_the_signal_model() -> None:
    from firmware_bridge import signal_model

    assert set(signal_model.__all__) <= set(firmware_bridge.__all__)
    for name in signal_model.__all__:
        assert getattr(firmware_bridge, name) is getattr(signal_model, name)

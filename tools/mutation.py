"""Mutation testing of the pure cores with mutmut (docs/mutation.md): each module against its own unit tests.

    python tools/mutation.py                      # every module in MODULES
    python tools/mutation.py agent/retention.py   # one module (its tests from MODULES)
    python tools/mutation.py --keep               # leave the scratch copies for `mutmut show`

For each module, the project is copied into a scratch directory (mutmut writes ``mutants/`` next to the
code, and needs its own ``setup.cfg``: the checkout is never touched), mutmut 3 mutates that one file and
runs only the module's own unit tests against every mutant, with the "mutation" hypothesis profile (fewer
examples, derandomised: the kill rate is a lower bound). Prints per module: mutants, killed, survived,
timeouts, the kill rate, and the diff of every survivor. Not part of CI: it takes minutes per module.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUTMUT = Path(sys.executable).with_name("mutmut")
COPY = ["agent", "aggregator", "envelope", "firmware_bridge", "provisioning", "tests", "models", "pyproject.toml"]

# module -> its own unit tests
MODULES: dict[str, list[str]] = {
    "agent/retention.py": ["tests/unit/test_retention.py"],
    "aggregator/sequence.py": ["tests/unit/test_agg_sequence.py"],
    "envelope/cbor_det.py": ["tests/unit/test_cbor_det.py"],
    "firmware_bridge/cobs.py": ["tests/unit/test_cobs.py"],
}


def run_module(module: str, tests: list[str], keep: bool) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="mutation-"))
    try:
        for name in COPY:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
            elif src.exists():
                shutil.copy2(src, work / name)
        package = module.split("/", maxsplit=1)[0]
        (work / "setup.cfg").write_text(
            "[mutmut]\n"
            f"source_paths={package}\n"
            f"only_mutate={module}\n"
            "pytest_add_cli_args_test_selection=" + "\n    ".join(tests) + "\n"
            "pytest_add_cli_args=-p no:cacheprovider -q -x\n")
        env = {**os.environ, "HYPOTHESIS_PROFILE": "mutation", "PYTHONDONTWRITEBYTECODE": "1"}
        subprocess.run([str(MUTMUT), "run"], cwd=work, env=env, check=False, capture_output=True, timeout=7200)
        out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=work, env=env, capture_output=True,
                             text=True, check=False).stdout
        status = dict(re.findall(r"^\s*(\S+): (\w[\w ]*)$", out, re.M))
        survivors = {}
        for name, state in status.items():
            if state == "survived":
                diff = subprocess.run([str(MUTMUT), "show", name], cwd=work, env=env, capture_output=True,
                                      text=True, check=False).stdout
                survivors[name] = [line for line in diff.splitlines() if re.match(r"^[-+][^-+]", line)]
        counts: dict[str, int] = {}
        for state in status.values():
            counts[state] = counts.get(state, 0) + 1
        total = len(status)
        killed = counts.get("killed", 0) + counts.get("timeout", 0)
        return {"module": module, "tests": tests, "mutants": total, "counts": counts,
                "killed_pct": round(100 * killed / total, 1) if total else None, "survivors": survivors,
                "work": str(work) if keep else None}
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("modules", nargs="*", help="module paths (default: every module in MODULES)")
    p.add_argument("--keep", action="store_true", help="keep the scratch copies (for `mutmut show`)")
    p.add_argument("--json", action="store_true", help="print one JSON object per module")
    args = p.parse_args(argv)
    if not MUTMUT.exists():
        print(f"mutmut not found next to {sys.executable}: pip install 'mutmut>=3'", file=sys.stderr)
        return 2
    for module in args.modules or list(MODULES):
        if module not in MODULES:
            print(f"unknown module {module!r}; known: {', '.join(MODULES)}", file=sys.stderr)
            return 2
        res = run_module(module, MODULES[module], args.keep)
        if args.json:
            print(json.dumps(res, sort_keys=True), flush=True)
            continue
        print(f"{module}: {res['mutants']} mutants, {res['counts']}, killed {res['killed_pct']} %", flush=True)
        for name, lines in res["survivors"].items():  # type: ignore[attr-defined]
            print(f"  survived {name}:")
            for line in lines:
                print(f"    {line}")
        if res["work"]:
            print(f"  scratch copy: {res['work']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

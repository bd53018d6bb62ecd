"""Conventions of every command-line tool, as real processes (issue 12 item 5).

- stdout's reader gone (``... | head``): exit 141 quietly, no traceback, for every tool.
- Read-only commands never create anything: a missing store, state directory or file is exit 2 naming it,
  and the directory tree is exactly as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent.status import FORMAT, write_status
from provisioning.cliutil import EXIT_BROKEN_PIPE
from tests.support.cli import MODULES
from tests.unit.test_agg_support import fleet_with

pytestmark = pytest.mark.integration

PG = "postgresql://postgres@127.0.0.1:5432/test"


def run(tool: str, *args: str, cwd: Path, stdout: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", MODULES[tool], *args], cwd=cwd, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})


def closed_pipe_run(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose reader is already gone: the first write fails with EPIPE."""
    r, w = os.pipe()
    os.close(r)
    try:
        return run(tool, *args, cwd=cwd, stdout=w)
    finally:
        os.close(w)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with records, a fleet CA and a status file: things the tools print a lot about."""
    root = tmp_path_factory.mktemp("cli")
    fleet, (dev,) = fleet_with(root, "dev-pipe")
    from aggregator import TrustStore, Verifier, open_store
    from aggregator.trust import load_certificates

    verifier = Verifier(TrustStore(load_certificates(fleet.ca_cert)))
    store = open_store(str(root / "agg.db"))
    now = int(time.time() * 1000)
    store.commit_batch([verifier.verify(*dev.birth(), now)]
                       + [verifier.verify(*dev.record("result"), now) for _ in range(2000)])
    store.close()
    write_status(str(root / "status.json"), {"format": FORMAT, "written_at": time.time(), "pid": os.getpid(),
                                             "interval_s": 5.0, "healthy": True, "device_id": "dev-pipe",
                                             "telemetry": {f"k{i}": i for i in range(3000)}})
    (root / "ca").symlink_to(fleet.ca_dir)
    return root


PIPE_CASES = [
    ("edge-aggregator", ["export", "--store", "{root}/agg.db"]),
    ("edge-aggregator", ["export", "--store", "{root}/agg.db", "--format", "csv"]),
    ("edge-aggregator", ["stats", "--store", "{root}/agg.db", "--json"]),
    ("edge-agent", ["status", "--file", "{root}/status.json"]),
    ("edge-agent", ["status", "--file", "{root}/status.json", "--json"]),
    ("edge-provision", ["--json", "fleet", "export-registry", "--ca-dir", "{root}/ca", "--out", "/dev/stdout"]),
]


@pytest.mark.parametrize(("tool", "args"), PIPE_CASES, ids=[" ".join([t, *a[:2]]) for t, a in PIPE_CASES])
def test_a_closed_stdout_pipe_exits_141_quietly(world: Path, tool: str, args: list[str]) -> None:
    argv = [a.replace("{root}", str(world)) for a in args]
    res = closed_pipe_run(tool, *argv, cwd=world)
    assert res.returncode == EXIT_BROKEN_PIPE, res.stderr
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr and "Exception ignored" not in res.stderr


READ_ONLY = [
    ("edge-aggregator", ["stats", "--store", "{m}/records.db"], "{m}/records.db"),
    ("edge-aggregator", ["export", "--store", "{m}/records.db"], "{m}/records.db"),
    ("edge-aggregator", ["stats", "--store", "sqlite:{m}/records.db", "--json"], "{m}/records.db"),
    ("edge-aggregator", ["stats", "--store", PG, "--schema", "{schema}"], "{schema}"),
    ("edge-aggregator", ["export", "--store", PG, "--schema", "{schema}"], "{schema}"),
    ("edge-aggregator", ["verify", "{m}/record.cose"], "{m}/record.cose"),
    ("edge-agent", ["status", "--file", "{m}/status.json"], "{m}/status.json"),
    ("edge-agent", ["status", "--config", "{m}/agent.toml"], "{m}/agent.toml"),
    ("edge-agent", ["check-config", "{m}/agent.toml"], "{m}/agent.toml"),
    ("edge-provision", ["ca", "crl", "--check", "--ca-dir", "{m}/ca"], "{m}/ca"),
    ("edge-provision", ["device", "status", "--state-dir", "{m}/state"], "{m}/state"),
    ("edge-provision", ["--json", "device", "status", "--state-dir", "{m}/state"], "{m}/state"),
    ("edge-provision", ["aggregator", "status", "--dir", "{m}/identity"], "{m}/identity"),
]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(("tool", "args", "named"), READ_ONLY, ids=[" ".join([t, *a[:2]]) for t, a, _ in READ_ONLY])
def test_read_only_commands_create_nothing_and_name_what_is_missing(tmp_path: Path, tool: str, args: list[str],
                                                                   named: str) -> None:
    schema = "missing_" + uuid.uuid4().hex[:8]
    fill = {"{m}": str(tmp_path / "missing"), "{schema}": schema}

    def sub(text: str) -> str:
        for k, v in fill.items():
            text = text.replace(k, v)
        return text

    before = tree(tmp_path)
    res = run(tool, *[sub(a) for a in args], cwd=tmp_path, stdout=subprocess.PIPE)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert sub(named) in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert tree(tmp_path) == before
    if "{schema}" in named:
        import psycopg

        with psycopg.connect(PG) as conn:
            assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None

"""Config of the transparency log: aggregator [log], agent [receipts] log_vkey; edge-provision log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.config import parse_config as parse_agent
from agent.errors import ConfigError as AgentConfigError
from aggregator import ConfigError, parse_config
from provisioning.cli import main as provision
from tests.unit.test_config import base_config

VKEY = "acme/log1+d9c67c89+ASNryOAJNL2F8eekuXR5oickP69AbjKTJESWLUAek2a8"


def test_log_section_parses_and_every_mistake_names_its_key() -> None:
    cfg = parse_config({"log": {"key_file": "/k/log.key", "origin": "acme/log1", "checkpoint_interval_s": 2}},
                       "/etc/agg.toml")
    assert (cfg.log.key_file, cfg.log.origin, cfg.log.checkpoint_interval_s) == ("/k/log.key", "acme/log1", 2)
    assert parse_config({}, "x.toml").log.key_file is None
    with pytest.raises(ConfigError) as ei:
        parse_config({"log": {"key_file": "k", "origin": "has space", "checkpoint_interval_s": 0,
                              "integrate_max": 0, "bogus": 1}, "aggregator": {"max_record_bytes": 100_000}},
                     "/etc/agg.toml")
    keys = {k for k, _ in ei.value.problems}
    assert keys == {"log.origin", "log.checkpoint_interval_s", "log.integrate_max", "log.bogus",
                    "aggregator.max_record_bytes"}, ei.value.problems
    assert "/etc/agg.toml: log.origin" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        parse_config({"log": {"origin": "acme/log1"}}, "x.toml")
    assert [k for k, _ in ei.value.problems] == ["log.key_file"]
    relative = parse_config({"log": {"key_file": "log/log.key", "origin": "a/b"}}, "/etc/agg/agg.toml")
    assert relative.log.key_file == "/etc/agg/log/log.key"


def test_agent_log_vkey(tmp_path: Path) -> None:
    doc = base_config(tmp_path)
    doc["receipts"] = {"log_vkey": VKEY}
    assert parse_agent(doc, str(tmp_path / "agent.toml")).receipts.log_vkey == VKEY
    doc["receipts"] = {"log_vkey": VKEY.replace("d9c67c89", "00000000")}
    with pytest.raises(AgentConfigError) as ei:
        parse_agent(doc, str(tmp_path / "agent.toml"))
    assert "receipts.log_vkey" in str(ei.value) and "verifier key" in str(ei.value)


def test_provision_log_init_and_vkey(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "log"
    assert provision(["log", "init", "--dir", str(folder), "--origin", "acme/log1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["vkey"].startswith("acme/log1+") and out["config"][0] == "[log]"
    assert os.stat(folder / "log.key").st_mode & 0o777 == 0o600
    assert (folder / "log.vkey").read_text() == out["vkey"] + "\n"
    assert provision(["log", "vkey", "--dir", str(folder), "--origin", "acme/log1"]) == 0
    assert capsys.readouterr().out.strip() == out["vkey"]
    assert provision(["log", "init", "--dir", str(folder), "--origin", "acme/log1"]) == 1  # never replaced
    assert "refusing to replace" in capsys.readouterr().err
    assert provision(["log", "init", "--dir", str(tmp_path / "x"), "--origin", "no-slash"]) == 2
    assert provision(["log", "init", "--dir", str(tmp_path / "x"), "--origin", "Bad Fleet/log"]) == 2
    from aggregator.tlog import load_log_signer

    assert load_log_signer(str(folder / "log.key"), "acme/log1").vkey == out["vkey"]


def test_log_key_must_be_a_private_ed25519_file(tmp_path: Path) -> None:
    from aggregator.errors import LogError
    from aggregator.tlog import load_log_signer
    from provisioning import create_file_key

    create_file_key(tmp_path / "p256.key", "p256")
    with pytest.raises(LogError, match="Ed25519"):
        load_log_signer(str(tmp_path / "p256.key"), "acme/log1")
    create_file_key(tmp_path / "ed.key", "ed25519")
    os.chmod(tmp_path / "ed.key", 0o644)
    with pytest.raises(LogError, match=r"log\.key_file: .*chmod 600"):
        load_log_signer(str(tmp_path / "ed.key"), "acme/log1")
    with pytest.raises(LogError, match=r"log\.key_file: .*does not exist"):
        load_log_signer(str(tmp_path / "none.key"), "acme/log1")

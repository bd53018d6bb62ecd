"""``[updates]`` and ``[pipeline.delegate]`` config: parsed with the config framework, errors name file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config import check_environment, parse_config
from agent.errors import ConfigError
from tests.unit.test_config import base_config


def with_updates(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    d = base_config(tmp_path)
    d["updates"] = {"repository_url": "http://models.example:8080/repo", "root": "root.json", **kw}
    return d


def test_absent_means_no_updates(tmp_path: Path) -> None:
    assert parse_config(base_config(tmp_path), str(tmp_path / "agent.toml")).updates is None


def test_defaults_and_paths_resolved_against_the_config(tmp_path: Path) -> None:
    cfg = parse_config(with_updates(tmp_path), str(tmp_path / "agent.toml")).updates
    assert cfg is not None
    assert cfg.root == str(tmp_path / "root.json")
    assert cfg.dir == str(tmp_path / "updates"), "next to the outbox"
    assert cfg.poll_interval_s == 3600 and cfg.max_model_bytes == 64 * 1024 * 1024
    assert cfg.health_window_s == 30 and cfg.latency_factor == 4


@pytest.mark.parametrize(("kw", "key", "needle"), [
    ({"repository_url": "ftp://x"}, "updates.repository_url", "expected http(s)://"),
    ({"root": None}, "updates.root", "required"),
    ({"poll_interval_s": 0}, "updates.poll_interval_s", "must be within"),
    ({"max_model_bytes": 10}, "updates.max_model_bytes", "must be within"),
    ({"max_metadata_bytes": 100}, "updates.max_metadata_bytes", "must be within"),
    ({"health_window_s": -1}, "updates.health_window_s", "must be within"),
    ({"latency_factor": 0.5}, "updates.latency_factor", "must be within"),
    ({"colour": "blue"}, "updates.colour", "unknown key"),
])
def test_each_mistake_names_its_key(tmp_path: Path, kw: dict[str, Any], key: str, needle: str) -> None:
    d = with_updates(tmp_path, **{k: v for k, v in kw.items() if v is not None})
    for k, v in kw.items():
        if v is None:
            d["updates"].pop(k)
    with pytest.raises(ConfigError) as e:
        parse_config(d, str(tmp_path / "agent.toml"))
    assert any(k == key and needle in msg for k, msg in e.value.problems), e.value.problems
    assert str(tmp_path / "agent.toml") in str(e.value)


def test_missing_root_is_an_environment_error(tmp_path: Path) -> None:
    cfg = parse_config(with_updates(tmp_path), str(tmp_path / "agent.toml"))
    with pytest.raises(ConfigError) as e:
        check_environment(cfg)
    assert any(k == "updates.root" and "does not exist" in m for k, m in e.value.problems)


def with_delegate(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    d = base_config(tmp_path)
    d["pipeline"][0]["delegate"] = {"library": "libedgetpu.so.1", **kw}
    return d


def test_delegate_defaults_and_options(tmp_path: Path) -> None:
    cfg = parse_config(with_delegate(tmp_path, options={"device": "usb", "threads": 2}), str(tmp_path / "a.toml"))
    dg = cfg.pipelines[0].delegate
    assert dg is not None and dg.library == "libedgetpu.so.1", "a bare soname is left to the dynamic loader"
    assert dg.options == (("device", "usb"), ("threads", "2")) and dg.on_failure == "fail" and dg.name == ""
    rel = parse_config(with_delegate(tmp_path, library="lib/libx.so"), str(tmp_path / "a.toml"))
    assert rel.pipelines[0].delegate is not None and rel.pipelines[0].delegate.library == str(tmp_path / "lib/libx.so")
    assert parse_config(base_config(tmp_path), str(tmp_path / "a.toml")).pipelines[0].delegate is None


@pytest.mark.parametrize(("kw", "key", "needle"), [
    ({"on_failure": "ignore"}, "pipeline[0].delegate.on_failure", "must be one of"),
    ({"library": ""}, "pipeline[0].delegate.library", "must not be empty"),
    ({"options": {"x": [1]}}, "pipeline[0].delegate.options.x", "expected a string or number"),
    ({"name": "bad name"}, "pipeline[0].delegate.name", "must be"),
    ({"colour": 1}, "pipeline[0].delegate.colour", "unknown key"),
])
def test_delegate_mistakes_name_their_key(tmp_path: Path, kw: dict[str, Any], key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(with_delegate(tmp_path, **kw), str(tmp_path / "agent.toml"))
    assert any(k == key and needle in m for k, m in e.value.problems), e.value.problems

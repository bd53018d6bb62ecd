"""The aggregator config: the shipped example validates; mistakes are listed with their key paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator import ConfigError, load_config, parse_config


def test_example_config_is_valid(repo_root: str) -> None:
    cfg = load_config(Path(repo_root) / "examples" / "aggregator.toml")
    assert cfg.mqtt.protocol == "5" and cfg.mqtt.broker_ack == "after_commit"
    assert cfg.store.url == "/var/lib/edge-aggregator/records.db"
    assert cfg.trust.ca_files == ("/etc/edge-aggregator/fleet-ca.pem",)


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    p = tmp_path / "a.toml"
    p.write_text('[store]\nurl = "data/r.db"\n[trust]\nca_files = ["ca.pem"]\n')
    cfg = load_config(p)
    assert cfg.store.url == str(tmp_path / "data/r.db") and cfg.trust.ca_files == (str(tmp_path / "ca.pem"),)


def test_every_mistake_is_reported_with_its_key_path() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"mqtt": {"protocol": "4", "colour": 1, "keepalive_s": "x", "shared_group": "a/b"},
                      "store": {"schema": "Bad-Name"}, "aggregator": {"batch_max": 0}, "extra": {}}, "x.toml")
    keys = {k for k, _ in e.value.problems}
    assert keys == {"mqtt.protocol", "mqtt.colour", "mqtt.keepalive_s", "mqtt.shared_group", "store.schema",
                    "aggregator.batch_max", "extra"}
    assert "x.toml: mqtt.colour: unknown key" in str(e.value)


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "b.toml"
    p.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match=r"b\.toml"):
        load_config(p)

"""The [watchdog] and [status] config tables: defaults, validation with key paths, unknown keys."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import parse_config
from agent.errors import ConfigError
from agent.watchdog import stall_s_for


def base(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "device_id": "dev-1", "key_uri": "file:/k/device.key",
        "pipeline": [{"stream": "v", "model": "/m/model.tflite", "window": 128,
                      "source": {"type": "simulated"}}],
        "outbox": {"path": "/var/lib/edge-agent/outbox.db"},
    }
    doc.update(extra)
    return doc


def test_defaults_put_status_next_to_the_outbox() -> None:
    cfg = parse_config(base(), "/etc/edge-agent/agent.toml")
    assert cfg.status.path == "/var/lib/edge-agent/status.json"
    assert cfg.status.interval_s == 5.0
    assert cfg.watchdog.stall_s is None


def test_explicit_values_relative_status_path_resolves_against_the_config() -> None:
    cfg = parse_config(base(status={"path": "run/status.json", "interval_s": 1}, watchdog={"stall_s": 2.5}),
                       "/etc/edge-agent/agent.toml")
    assert cfg.status.path == "/etc/edge-agent/run/status.json"
    assert cfg.status.interval_s == 1.0
    assert cfg.watchdog.stall_s == 2.5


@pytest.mark.parametrize(("extra", "key", "msg"), [
    ({"watchdog": {"stall_s": 0.1}}, "watchdog.stall_s", "must be >= 0.5"),
    ({"watchdog": {"stall_s": "10"}}, "watchdog.stall_s", "expected float"),
    ({"watchdog": {"interval_s": 3}}, "watchdog.interval_s", "unknown key"),
    ({"status": {"interval_s": 0}}, "status.interval_s", "must be 0.2..3600"),
    ({"status": {"path": ""}}, "status.path", "must not be empty"),
    ({"status": {"file": "/x"}}, "status.file", "unknown key"),
    ({"status": "x"}, "status", "expected a table"),
])
def test_bad_values_name_key_path_and_file(extra: dict[str, Any], key: str, msg: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(base(**extra), "/etc/edge-agent/agent.toml")
    assert any(k == key and msg in m for k, m in ei.value.problems), ei.value.problems
    assert "/etc/edge-agent/agent.toml" in str(ei.value)


def test_stall_threshold_config_then_half_watchdogsec_then_default() -> None:
    assert stall_s_for(7.0, 30.0) == 7.0
    assert stall_s_for(None, 30.0) == 15.0
    assert stall_s_for(None, 0.4) == 0.5
    assert stall_s_for(None, None) == 30.0

"""The ``[doctor]`` config section and the parsing of ``systemctl show`` (what the systemd check reads)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.config import parse_config
from agent.doctor.probes import SYSTEMD_PROPS, parse_systemctl_show
from agent.doctor.verdicts import judge_systemd
from agent.errors import ConfigError


def base(**doctor: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"device_id": "dev-1", "key_uri": "file:/tmp/k.key",
                         "pipeline": [{"stream": "v", "model": "m.tflite", "window": 128,
                                       "source": {"type": "simulated"}}],
                         "outbox": {"path": "/tmp/o/outbox.db"}}
    if doctor:
        d["doctor"] = doctor
    return d


def test_doctor_defaults() -> None:
    cfg = parse_config(base(), "/etc/edge-agent/agent.toml").doctor
    assert (cfg.unit, cfg.wear_budget_bytes_per_day, cfg.probe_timeout_s) == ("edge-agent.service", 1 << 30, 5.0)


def test_doctor_values() -> None:
    cfg = parse_config(base(unit="edge-agent@2.service", wear_budget_bytes_per_day=5 << 30, probe_timeout_s=2),
                       "/x/agent.toml").doctor
    assert (cfg.unit, cfg.wear_budget_bytes_per_day, cfg.probe_timeout_s) == ("edge-agent@2.service", 5 << 30, 2.0)


@pytest.mark.parametrize(("doctor", "key", "message"), [
    ({"unit": "edge-agent"}, "doctor.unit", "systemd service name"),
    ({"unit": "a b.service"}, "doctor.unit", "systemd service name"),
    ({"wear_budget_bytes_per_day": 0}, "doctor.wear_budget_bytes_per_day", "must be > 0"),
    ({"probe_timeout_s": 0.01}, "doctor.probe_timeout_s", "0.1..120"),
    ({"timeout": 3}, "doctor.timeout", "unknown key"),
])
def test_doctor_mistakes_name_the_key(doctor: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(base(**doctor), "/etc/edge-agent/agent.toml")
    assert e.value.problems[0][0] == key and message in e.value.problems[0][1], e.value.problems


SHOW = """LoadState=loaded
ActiveState=active
SubState=running
Result=success
NRestarts=0
WatchdogUSec=30s
"""


def test_systemctl_show_output_is_parsed_and_judged() -> None:
    props = parse_systemctl_show(SHOW)
    assert set(props) == set(SYSTEMD_PROPS)
    r = judge_systemd("edge-agent.service", props)
    assert r.status == "pass" and "watchdog 30s" in r.detail
    looping = parse_systemctl_show(SHOW.replace("ActiveState=active", "ActiveState=activating")
                                   .replace("SubState=running", "SubState=auto-restart").replace("NRestarts=0",
                                                                                                 "NRestarts=12"))
    assert judge_systemd("edge-agent.service", looping).code == "restarting"
    assert parse_systemctl_show("junk\nA=b=c\n") == {"A": "b=c"}

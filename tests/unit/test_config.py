"""Config validation: every mistake named by key path and file; the CLI exits 2 without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config, parse_config
from agent.errors import ConfigError
from agent.settings import SimulatedSourceConfig

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "vibration-int8.tflite"


def base_config(tmp_path: Path, key_mode: int = 0o600) -> dict:
    key = tmp_path / "keys" / "device.key"
    if not key.exists():
        from provisioning import create_file_key

        create_file_key(key)
    os.chmod(key, key_mode)
    return {
        "device_id": "pi-0001",
        "key_uri": f"file:{key}",
        "pipeline": [{
            "stream": "vibration",
            "model": str(MODEL),
            "window": 128,
            "hop": 64,
            "source": {"type": "simulated", "fault": "cycle"},
        }],
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
    }


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_valid_config_parses_with_defaults(tmp_path: Path) -> None:
    cfg = parse_config(base_config(tmp_path), str(tmp_path / "agent.toml"))
    assert cfg.device_id == "pi-0001"
    assert cfg.pipelines[0].metadata.endswith("vibration-int8.json")
    assert isinstance(cfg.pipelines[0].source, SimulatedSourceConfig)
    assert cfg.outbox.delivery == "aggregator"
    assert cfg.mqtt.protocol == "5"


def test_example_config_is_valid_in_shape() -> None:
    cfg = load_config(str(REPO / "examples" / "agent.toml"), check_files=False)
    assert cfg.pipelines[0].model == str(MODEL)


@pytest.mark.parametrize(
    ("mutate", "key_path", "needle"),
    [
        (lambda d: d.update(colour="blue"), "colour", "unknown key"),
        (lambda d: d["outbox"].update(max_bytez=5), "outbox.max_bytez", "unknown key"),
        (lambda d: d["pipeline"][0].update(window="128"), "pipeline[0].window", "expected int, got str"),
        (lambda d: d["pipeline"][0].update(window=-128), "pipeline[0].window", "must be > 0"),
        (lambda d: d["pipeline"][0].update(hop=0), "pipeline[0].hop", "must be > 0"),
        (lambda d: d.update(device_id="Pi_0001"), "device_id", "3-64 characters of a-z"),
        (lambda d: d.pop("key_uri"), "key_uri", "required"),
        (lambda d: d.update(key_uri="/var/lib/key.pem"), "key_uri", "file: or pkcs11:"),
        (lambda d: d["mqtt"].update(url="http://x"), "mqtt.url", "mqtt://"),
        (lambda d: d["mqtt"].update(protocol="4"), "mqtt.protocol", "must be one of"),
        (lambda d: d["outbox"].update(delivery="later"), "outbox.delivery", "must be one of"),
        (lambda d: d["pipeline"][0]["source"].update(type="camera"), "pipeline[0].source.type", "must be one of"),
        (lambda d: d["pipeline"][0]["source"].update(fault="wobble"), "pipeline[0].source.fault", "must be one of"),
        (lambda d: d["pipeline"][0].update(score_threshold=1.5), "pipeline[0].score_threshold", "0..1"),
        (lambda d: d.pop("pipeline"), "pipeline", "at least one"),
        (lambda d: d["mqtt"].update(keepalive_s=True), "mqtt.keepalive_s", "expected int, got bool"),
    ],
)
def test_each_mistake_names_its_key(tmp_path: Path, mutate, key_path: str, needle: str) -> None:
    data = base_config(tmp_path)
    mutate(data)
    with pytest.raises(ConfigError) as err:
        parse_config(data, "/etc/edge-agent/agent.toml")
    keys = [k for k, _ in err.value.problems]
    assert key_path in keys, err.value.problems
    msg = dict(err.value.problems)[key_path]
    assert needle in msg
    assert f"/etc/edge-agent/agent.toml: {key_path}: " in str(err.value)


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    data["colour"] = "blue"
    data["pipeline"][0]["window"] = -1
    data["mqtt"]["keepalive_s"] = 1
    with pytest.raises(ConfigError) as err:
        parse_config(data, "agent.toml")
    assert {k for k, _ in err.value.problems} == {"colour", "pipeline[0].window", "mqtt.keepalive_s"}


def test_missing_model_and_unsafe_key_are_environment_errors(tmp_path: Path) -> None:
    data = base_config(tmp_path, key_mode=0o644)
    data["pipeline"][0]["model"] = str(tmp_path / "nope.tflite")
    text = _to_toml(data)
    path = write_toml(tmp_path / "agent.toml", text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    problems = dict(err.value.problems)
    assert "does not exist" in problems["pipeline[0].model"]
    assert "mode 0644" in problems["key_uri"] and "chmod 600" in problems["key_uri"]


def _to_toml(d: dict) -> str:
    """Tiny TOML writer for the config shapes used here (tests only)."""
    def val(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {val(v)}" for k, v in d.items() if not isinstance(v, (dict, list)) or
             (isinstance(v, list) and not (v and isinstance(v[0], dict)))]
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {val(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines.append(f"[[{k}]]")
                lines += [f"{kk} = {val(vv)}" for kk, vv in item.items() if not isinstance(vv, dict)]
                for kk, vv in item.items():
                    if isinstance(vv, dict):
                        lines.append(f"[{k}.{kk}]")
                        lines += [f"{k2} = {val(v2)}" for k2, v2 in vv.items()]
    return "\n".join(lines) + "\n"


CLI_CASES = {
    "unknown key": ('colour = "blue"\n', "colour: unknown key"),
    "wrong type": None,
    "missing model": None,
    "unreadable key": None,
    "negative window": None,
}


@pytest.mark.parametrize("case", ["unknown key", "wrong type", "missing model", "unsafe key", "negative window",
                                  "not toml"])
def test_check_config_cli_exit_2_one_clear_message(tmp_path: Path, case: str) -> None:
    data = base_config(tmp_path)
    expect_key = ""
    if case == "unknown key":
        data["colour"] = "blue"
        expect_key = "colour"
    elif case == "wrong type":
        data["outbox"]["max_bytes"] = "lots"
        expect_key = "outbox.max_bytes"
    elif case == "missing model":
        data["pipeline"][0]["model"] = str(tmp_path / "missing.tflite")
        expect_key = "pipeline[0].model"
    elif case == "unsafe key":
        os.chmod(tmp_path / "keys" / "device.key", 0o640)
        expect_key = "key_uri"
    elif case == "negative window":
        data["pipeline"][0]["window"] = -5
        expect_key = "pipeline[0].window"
    text = _to_toml(data) if case != "not toml" else "device_id = \n[[pipeline]\n"
    path = write_toml(tmp_path / "agent.toml", text)
    proc = subprocess.run([sys.executable, "-m", "agent", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr
    if expect_key:
        assert f"{path}: {expect_key}: " in proc.stderr
    else:
        assert "not valid TOML" in proc.stderr


def test_check_config_cli_accepts_valid(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "agent.toml", _to_toml(base_config(tmp_path)))
    proc = subprocess.run([sys.executable, "-m", "agent", "check-config", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "valid" in proc.stdout


def test_device_id_from_file_lets_one_config_serve_every_device(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    del data["device_id"]
    data["device_id_file"] = str(tmp_path / "device-id")
    path = write_toml(tmp_path / "agent.toml", _to_toml(data))
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "first-boot" in dict(err.value.problems)["device_id_file"]
    (tmp_path / "device-id").write_text("node-0042\n")
    assert load_config(str(path)).device_id == "node-0042"
    (tmp_path / "device-id").write_text("Not An Id\n")
    with pytest.raises(ConfigError, match="not a device id"):
        load_config(str(path))


def test_device_id_and_file_are_exclusive(tmp_path: Path) -> None:
    data = base_config(tmp_path)
    data["device_id_file"] = "/var/lib/edge-agent/device-id"
    with pytest.raises(ConfigError, match="exactly one of device_id or device_id_file"):
        parse_config(data, "agent.toml")

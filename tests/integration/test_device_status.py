"""``edge-provision device status`` against a provisioned device and a table of agent configs (issue 12 item 6).

Round 1 said the device id did not match with the documented ``device_id_file`` template, said ``ca_file NOT
SET`` when the fleet CA was set in another documented place (or in a bundle at another path), and exited 0
when it had found problems. Exit codes now mean: 0 no problem, 1 problems found (listed), 2 usage (bad
option, a missing state directory or an explicitly given config that is not there). Every config the
checker accepts is also accepted by the agent's own config loader, resolving to this device's files, so
the checker's restated rules cannot drift from the agent's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import load_config
from provisioning.agent_config_check import CHECKS
from tests.support.pki import make_fleet

pytestmark = pytest.mark.integration

EP = [sys.executable, "-m", "provisioning.cli"]


def ep(*args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([*EP, *args], capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in res.stderr, res.stderr
    return res


@dataclass(frozen=True)
class Device:
    root: Path
    state: Path
    ca_bundle: Path  # the broker-config style ca.pem: root + issuing CA, at another path
    other_ca: Path  # another fleet's CA
    model: Path


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> Device:
    root = tmp_path_factory.mktemp("devstatus")
    fleet = make_fleet(root / "fleet", intermediate=True)
    other = make_fleet(root / "other", name="other.fleet")
    state = root / "state"
    for args in (["device", "init", "--state-dir", str(state), "--device-id", "pump-0042", "--ca-cert",
                  str(fleet.ca_cert)],
                 ["ca", "sign", str(state / "device.csr"), "--ca-dir", str(fleet.ca_dir)],
                 ["device", "install-cert", str(state / "device.crt"), "--state-dir", str(state)]):
        res = ep(*args)
        assert res.returncode == 0, res.stderr
    (root / "etc").mkdir()
    bundle = root / "etc" / "broker-ca.pem"
    bundle.write_bytes(fleet.ca_bundle.read_bytes())
    (root / "model.tflite").write_bytes(b"x")
    (root / "model.json").write_text("{}")
    return Device(root, state, bundle, other.ca_cert, root / "model.tflite")


def config(d: Device, **over: object) -> str:
    """The documented fleet template (docs/fleet-install.md) for this device, with overrides (None drops)."""
    keys = d.state / "keys"
    top: dict[str, object] = {"device_id_file": str(d.state / "device-id"), "key_uri": f"file:{keys / 'device.key'}",
                              "certificate": str(keys / "device.crt")}
    mqtt: dict[str, object] = {"url": "mqtts://broker.example:8883", "ca_file": str(d.state / "fleet-ca.pem"),
                               "cert_file": str(keys / "device.crt"), "key_file": str(keys / "device.key")}
    extra: dict[str, dict[str, object]] = {"outbox": {"path": str(d.root / "outbox.db")}}
    for k, v in over.items():
        section, _, name = k.rpartition("__")
        target = top if not section else mqtt if section == "mqtt" else extra.setdefault(section, {})
        if v is None:
            target.pop(name, None)
        else:
            target[name] = v

    def line(k: str, v: object) -> str:
        return f"{k} = {json.dumps(v)}"

    out = [line(k, v) for k, v in top.items()]
    out += ["[[pipeline]]", 'stream = "vib"', line("model", str(d.model)), "window = 128",
            "[pipeline.source]", 'type = "simulated"', "[mqtt]", *[line(k, v) for k, v in mqtt.items()]]
    for section, values in extra.items():
        out += [f"[{section}]", *[line(k, v) for k, v in values.items()]]
    return "\n".join(out) + "\n"


def rel(d: Device) -> str:
    """Relative paths, resolved against the config's directory as the agent does."""
    return config(d, device_id_file="state/device-id", key_uri=f"file:{d.state / 'keys/device.key'}",
                  certificate="state/keys/device.crt", mqtt__ca_file="etc/broker-ca.pem",
                  mqtt__cert_file="state/keys/device.crt", mqtt__key_file="state/keys/device.key")


def copy_cert(d: Device) -> str:
    copy = d.root / "etc" / "device-copy.crt"
    copy.write_bytes((d.state / "keys" / "device.crt").read_bytes())
    return config(d, mqtt__cert_file=str(copy))


def wrong_id_file(d: Device) -> str:
    f = d.root / "etc" / "other-id"
    f.write_text("pump-0043\n")
    return config(d, device_id_file=str(f))


Case = tuple[str, Callable[[Device], str], int, set[str]]
CASES: list[Case] = [
    # name, config, exit code, checks that must fail
    ("documented template (device_id_file)", lambda d: config(d), 0, set()),
    ("device_id literal", lambda d: config(d, device_id_file=None, device_id="pump-0042"), 0, set()),
    ("relative paths", rel, 0, set()),
    ("ca_file is the broker's bundle elsewhere", lambda d: config(d, mqtt__ca_file=str(d.ca_bundle)), 0, set()),
    ("receipts CA set in [receipts]", lambda d: config(d, receipts__ca_file=str(d.ca_bundle)), 0, set()),
    ("cert_file is a copy", copy_cert, 0, set()),
    ("no certificate key (registry fleets)", lambda d: config(d, certificate=None), 0, set()),
    ("delivery broker: no receipts CA needed", lambda d: config(d, outbox__delivery="broker"), 0, set()),
    ("device_id_file of another device", wrong_id_file, 1, {"device_id"}),
    ("device_id of another device", lambda d: config(d, device_id_file=None, device_id="pump-0043"), 1,
     {"device_id"}),
    ("both device_id and device_id_file", lambda d: config(d, device_id="pump-0042"), 1, {"device_id"}),
    ("no device id", lambda d: config(d, device_id_file=None), 1, {"device_id"}),
    ("another key", lambda d: config(d, key_uri=f"file:{d.root / 'other.key'}"), 1, {"key_uri"}),
    ("key_file of another key", lambda d: config(d, mqtt__key_file=str(d.root / "other.key")), 1, {"key_file"}),
    ("cert_file missing under TLS", lambda d: config(d, mqtt__cert_file=None), 1, {"cert_file"}),
    ("another fleet's CA", lambda d: config(d, mqtt__ca_file=str(d.other_ca)), 1, {"ca_file", "receipts_ca"}),
    ("CA file unreadable", lambda d: config(d, mqtt__ca_file=str(d.root / "nope.pem")), 1, {"ca_file", "receipts_ca"}),
    ("plain MQTT", lambda d: config(d, mqtt__url="mqtt://127.0.0.1:1883", mqtt__ca_file=None, mqtt__cert_file=None,
                                    mqtt__key_file=None, receipts__ca_file=str(d.ca_bundle)), 1, {"tls"}),
    ("no fleet CA anywhere", lambda d: config(d, mqtt__ca_file=None), 1, {"ca_file", "receipts_ca"}),
    ("not TOML", lambda d: "device_id = \n", 1, set(CHECKS)),
]


@pytest.mark.parametrize(("name", "make", "code", "failing"), CASES, ids=[c[0] for c in CASES])
def test_device_status_against_agent_configs(device: Device, tmp_path: Path, name: str,
                                             make: Callable[[Device], str], code: int, failing: set[str]) -> None:
    cfg = device.root / f"agent-{abs(hash(name))}.toml"
    cfg.write_text(make(device))
    res = ep("device", "status", "--state-dir", str(device.state), "--config", str(cfg), "--json")
    assert res.returncode == code, (res.stdout, res.stderr)
    doc = json.loads(res.stdout)
    assert doc["ok"] is (code == 0) and doc["healthy"] is (code == 0)
    agent = doc["agent_config"]
    if name == "not TOML":
        assert not agent["readable"] and any("not valid TOML" in p for p in doc["problems"])
        return
    bad = {c["name"] for c in agent["checks"] if not c["ok"] and not c["detail"].startswith(("not set", "not "))}
    assert bad == failing, agent["checks"]
    assert len(doc["problems"]) >= len(failing)
    human = ep("device", "status", "--state-dir", str(device.state), "--config", str(cfg))
    assert human.returncode == code
    assert ("  ! " in human.stdout) is (code != 0), human.stdout
    if code == 0:  # the agent agrees: it loads this config and resolves it to this device's files
        loaded = load_config(str(cfg), check_files=False)
        assert loaded.device_id == "pump-0042"
        assert loaded.mqtt.cert_file is None or Path(loaded.mqtt.cert_file).read_bytes() == \
            (device.state / "keys" / "device.crt").read_bytes()
        assert os.path.realpath(loaded.key_uri.removeprefix("file:")) == \
            os.path.realpath(device.state / "keys" / "device.key")


def test_exit_2_for_usage(device: Device, tmp_path: Path) -> None:
    res = ep("device", "status", "--state-dir", str(device.state), "--config", str(tmp_path / "missing.toml"))
    assert res.returncode == 2 and str(tmp_path / "missing.toml") in res.stderr
    assert ep("device", "status", "--no-such-option").returncode == 2
    assert ep("device", "status", "--state-dir", str(tmp_path / "nothing")).returncode == 2


def test_default_config_missing_is_a_problem(device: Device) -> None:
    """Without --config the packaged path is checked; its absence is a problem of the device (exit 1)."""
    if Path("/etc/edge-agent/agent.toml").exists():
        pytest.skip("this machine has an agent config at the default path")
    res = ep("device", "status", "--state-dir", str(device.state), "--json")
    assert res.returncode == 1
    assert any("no agent config at /etc/edge-agent/agent.toml" in p for p in json.loads(res.stdout)["problems"])

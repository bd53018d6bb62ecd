"""``check-config`` of both tools (issue 12 item 9).

- The shipped examples validate from a fresh checkout with the command their own header gives.
- ``edge-aggregator check-config FILE`` exists.
- Every config mistake exits 2 naming the file and the key path, in both modes: ``--offline`` (the file alone)
  and the full check (also the files the config names, as the service user would meet them). Mistakes of the
  machine (a missing key or CA file) are found by the full check only.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.pki import make_fleet

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOOLS = {"edge-agent": "agent.cli", "edge-aggregator": "aggregator.cli"}


def run(tool: str, *args: str, cwd: Path, pythonpath: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", TOOLS[tool], *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(pythonpath)})


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed tree as a fresh clone has it (``git archive HEAD``), without this worktree's state."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    root = tmp_path_factory.mktemp("clone")
    archive = root / "head.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), "HEAD"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root / "repo", filter="data")
    return root / "repo"


@pytest.mark.parametrize("example", ["agent.toml", "aggregator.toml"])
def test_examples_validate_from_a_fresh_checkout_as_their_header_says(checkout: Path, example: str) -> None:
    header = (checkout / "examples" / example).read_text().split("\n\n", 1)[0]
    (command,) = re.findall(r"^#\s+(?:Validate.*?: )?((?:edge-agent|edge-aggregator) check-config --offline "
                            r"examples/\S+)", header, re.MULTILINE)
    tool, *args = command.split()
    res = run(tool, *args, cwd=checkout, pythonpath=checkout)
    assert res.returncode == 0, res.stderr
    assert "valid" in res.stdout and "Traceback" not in res.stderr


# ---- every mistake: exit 2, file and key path ------------------------------------------------------------


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files a valid config can point at: key, certificate, CA, CRL, model, directories."""
    root = tmp_path_factory.mktemp("machine")
    fleet = make_fleet(root, ["dev-check"])
    dev = fleet.devices["dev-check"]
    (root / "models").mkdir()
    shutil.copy(REPO / "models" / "vibration-int8.tflite", root / "models")
    shutil.copy(REPO / "models" / "vibration-int8.json", root / "models")
    (root / "var").mkdir()
    loose = root / "loose.key"
    loose.write_bytes(dev.key.read_bytes())
    loose.chmod(0o644)
    return {"root": root, "key": dev.key, "cert": dev.cert, "ca": fleet.ca_cert, "crl": fleet.crl,
            "model": root / "models" / "vibration-int8.tflite", "var": root / "var", "loose_key": loose}


def agent_toml(m: dict[str, Path], *, top: str = "", pipeline: str = "", outbox: str = "", mqtt: str = "") -> str:
    return (f'device_id = "dev-check"\nkey_uri = "file:{m["key"]}"\n{top}\n'
            f'[[pipeline]]\nstream = "vib"\nmodel = "{m["model"]}"\nwindow = 128\n{pipeline}\n'
            f'[pipeline.source]\ntype = "simulated"\n'
            f'[outbox]\npath = "{m["var"] / "outbox.db"}"\n{outbox}\n'
            f'[mqtt]\nurl = "mqtts://broker.example:8883"\nca_file = "{m["ca"]}"\ncert_file = "{m["cert"]}"\n'
            f'key_file = "{m["key"]}"\n{mqtt}\n')


def aggregator_toml(m: dict[str, Path], *, agg: str = "", mqtt: str = "", store: str = "", trust: str = "",
                    extra: str = "") -> str:
    return (f"[aggregator]\nmax_skew_s = 300\n{agg}\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n{mqtt}\n"
            f"[store]\nurl = \"{store or m['var'] / 'records.db'}\"\n"
            f"[trust]\nca_files = [\"{m['ca']}\"]\ncrl_files = [\"{m['crl']}\"]\n{trust}\n{extra}")


Make = Callable[[dict[str, Path]], str]
# tool, name, config, key path named, found offline too?
MISTAKES: list[tuple[str, str, Make, str, bool]] = [
    ("edge-agent", "unknown key", lambda m: agent_toml(m, outbox="max_bytez = 1"), "outbox.max_bytez", True),
    ("edge-agent", "wrong type", lambda m: agent_toml(m, mqtt="keepalive_s = \"30\""), "mqtt.keepalive_s", True),
    ("edge-agent", "out of range", lambda m: agent_toml(m, pipeline="num_threads = 99"), "pipeline[0].num_threads",
     True),
    ("edge-agent", "bad choice", lambda m: agent_toml(m, outbox="delivery = \"sometimes\""), "outbox.delivery", True),
    ("edge-agent", "both id keys", lambda m: agent_toml(m, top='device_id_file = "/x"'), "device_id", True),
    ("edge-agent", "bad device id", lambda m: agent_toml(m).replace("dev-check", "Dev_Check"), "device_id", True),
    ("edge-agent", "not TOML", lambda m: "device_id = \n", "(syntax)", True),
    ("edge-agent", "model missing", lambda m: agent_toml(m).replace(str(m["model"]), str(m["root"] / "nope.tflite")),
     "pipeline[0].model", False),
    ("edge-agent", "key missing", lambda m: agent_toml(m).replace(f'file:{m["key"]}', f'file:{m["root"] / "no.key"}'),
     "key_uri", False),
    ("edge-agent", "key readable by others", lambda m: agent_toml(m).replace(f'file:{m["key"]}',
                                                                            f'file:{m["loose_key"]}'), "key_uri",
     False),
    ("edge-agent", "outbox directory missing", lambda m: agent_toml(m).replace(str(m["var"] / "outbox.db"),
                                                                              str(m["root"] / "no/outbox.db")),
     "outbox.path", False),
    ("edge-agent", "CA file missing", lambda m: agent_toml(m).replace(f'ca_file = "{m["ca"]}"',
                                                                     f'ca_file = "{m["root"] / "no.pem"}"'),
     "mqtt.ca_file", False),
    ("edge-aggregator", "unknown table", lambda m: aggregator_toml(m, extra="[extra]\nx = 1\n"), "extra", True),
    ("edge-aggregator", "unknown key", lambda m: aggregator_toml(m, mqtt="portt = 1"), "mqtt.portt", True),
    ("edge-aggregator", "wrong type", lambda m: aggregator_toml(m, agg="batch_max = \"many\""),
     "aggregator.batch_max", True),
    ("edge-aggregator", "out of range", lambda m: aggregator_toml(m, agg="queue_size = 1"), "aggregator.queue_size",
     True),
    ("edge-aggregator", "bad url", lambda m: aggregator_toml(m).replace("mqtt://127.0.0.1:1883", "http://x"),
     "mqtt.url", True),
    ("edge-aggregator", "not TOML", lambda m: "[aggregator\n", "not valid TOML", True),
    ("edge-aggregator", "CA file missing", lambda m: aggregator_toml(m).replace(str(m["ca"]), str(m["root"] / "x")),
     "trust.ca_files[0]", False),
    ("edge-aggregator", "CRL not a CRL", lambda m: aggregator_toml(m).replace(str(m["crl"]), str(m["ca"])),
     "trust.crl_files[0]", False),
    ("edge-aggregator", "identity key readable by others",
     lambda m: aggregator_toml(m, extra=f'[identity]\nkey = "file:{m["loose_key"]}"\ncert_file = "{m["cert"]}"\n'),
     "identity.key", False),
    ("edge-aggregator", "store directory missing",
     lambda m: aggregator_toml(m, store=str(m["root"] / "no" / "records.db")), "store.url", False),
]


@pytest.mark.parametrize("offline", [False, True], ids=["full", "offline"])
@pytest.mark.parametrize(("tool", "name", "make", "key", "offline_too"), MISTAKES,
                         ids=[f"{t}: {n}" for t, n, *_ in MISTAKES])
def test_every_mistake_exits_2_naming_file_and_key(machine: dict[str, Path], tool: str, name: str, make: Make,
                                                   key: str, offline_too: bool, offline: bool) -> None:
    cfg = machine["root"] / f"{tool}-{abs(hash(name))}.toml"
    cfg.write_text(make(machine))
    res = run(tool, "check-config", *(["--offline"] if offline else []), str(cfg), cwd=machine["root"])
    assert "Traceback" not in res.stderr
    if offline and not offline_too:
        assert res.returncode == 0, res.stderr  # a fact of this machine, not of the file
        return
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert str(cfg) in res.stderr and key in res.stderr, res.stderr


@pytest.mark.parametrize("tool", TOOLS)
def test_valid_configs_pass_both_modes(machine: dict[str, Path], tool: str) -> None:
    cfg = machine["root"] / f"{tool}-valid.toml"
    cfg.write_text(agent_toml(machine) if tool == "edge-agent" else aggregator_toml(machine))
    for mode in ([], ["--offline"]):
        res = run(tool, "check-config", *mode, str(cfg), cwd=machine["root"])
        assert res.returncode == 0, res.stderr
        assert "valid" in res.stdout
    res = run(tool, "check-config", str(machine["root"] / "missing.toml"), cwd=machine["root"])
    assert res.returncode == 2 and str(machine["root"] / "missing.toml") in res.stderr

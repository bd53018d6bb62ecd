"""The systemd units, sysusers and tmpfiles files, checked by systemd's own tools in a temporary root.

`systemd-analyze verify` needs ExecStart's binary to exist, so the units are verified against an installed
tree: a temporary root holding systemd's own units (/usr/lib/systemd/system), our units in
/etc/systemd/system and the real console scripts of this checkout at /opt/edge-agent/bin (where
docs/install.md puts them). `systemd-analyze security --offline=true` scores the agent unit; the figure is
parsed and must be 2.0 or lower. MemoryDenyWriteExecute= is justified by running the real agent (TFLite
with XNNPACK) under PR_SET_MDWE, the kernel's own form of the same rule.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agent_proc import REPO, agent_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

UNITS = REPO / "systemd"
ANALYZE = shutil.which("systemd-analyze")
SCRIPTS = {"edge-agent.service": "edge-agent", "edge-aggregator.service": "edge-aggregator"}
needs_systemd_tools = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def installed_root(tmp_path: Path, *, with_binaries: bool = True) -> Path:
    """A minimal installed tree: systemd's units, ours, and the real console scripts at /opt/edge-agent/bin."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in SCRIPTS:
        shutil.copy(UNITS / unit, root / "etc/systemd/system" / unit)
    bindir = root / "opt/edge-agent/bin"
    bindir.mkdir(parents=True)
    if with_binaries:
        for script in SCRIPTS.values():
            # The real console script of this checkout (its shebang is this venv's python), not a stub.
            shutil.copy2(Path(sys.executable).parent / script, bindir / script)
    return root


def verify(root: Path, unit: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, "verify", f"--root={root}", "--man=no", unit], capture_output=True, text=True,
                          timeout=60)


@needs_systemd_tools
@pytest.mark.parametrize("unit", sorted(SCRIPTS))
def test_unit_verifies_cleanly_in_an_installed_tree(tmp_path: Path, unit: str) -> None:
    r = verify(installed_root(tmp_path), unit)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", f"systemd-analyze verify warned:\n{r.stderr}"


@needs_systemd_tools
def test_verify_does_catch_a_missing_binary(tmp_path: Path) -> None:
    r = verify(installed_root(tmp_path, with_binaries=False), "edge-agent.service")
    assert r.returncode != 0
    assert "/opt/edge-agent/bin/edge-agent" in r.stderr


def exposure(unit: str) -> float:
    assert ANALYZE is not None
    r = subprocess.run([ANALYZE, "security", "--offline=true", str(UNITS / unit)], capture_output=True, text=True,
                       timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, f"no exposure figure in:\n{r.stdout}\n{r.stderr}"
    return float(m.group(1))


@needs_systemd_tools
def test_agent_unit_security_exposure_is_at_most_2() -> None:
    score = exposure("edge-agent.service")
    print(f"edge-agent.service exposure {score}")
    assert score <= 2.0


@needs_systemd_tools
def test_aggregator_unit_security_exposure_is_at_most_2() -> None:
    score = exposure("edge-aggregator.service")
    print(f"edge-aggregator.service exposure {score}")
    assert score <= 2.0


def unit_settings(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (UNITS / unit).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_agent_unit_has_what_a_field_device_needs() -> None:
    s = unit_settings("edge-agent.service")
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert int(s["WatchdogSec"][0]) > 0 and s["Restart"] == ["on-failure"]
    assert s["User"] == ["edge-agent"] and s["SupplementaryGroups"] == ["dialout"]
    assert s["StateDirectory"] == ["edge-agent"] and s["ConfigurationDirectory"] == ["edge-agent"]
    assert s["CapabilityBoundingSet"] == [""] and s["NoNewPrivileges"] == ["yes"]
    assert s["ProtectSystem"] == ["strict"] and s["ProtectHome"] == ["yes"] and s["PrivateTmp"] == ["yes"]
    assert s["SystemCallFilter"][0] == "@system-service"
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert s["DevicePolicy"] == ["closed"]
    assert {"char-ttyACM rw", "char-ttyUSB rw", "char-ttyAMA rw"} <= set(s["DeviceAllow"])
    assert "/etc/edge-agent/agent.toml" in s["ExecStart"][0]


SYSUSERS = shutil.which("systemd-sysusers")
TMPFILES = shutil.which("systemd-tmpfiles")


@pytest.mark.skipif(SYSUSERS is None or TMPFILES is None, reason="systemd-sysusers/tmpfiles not installed")
def test_sysusers_and_tmpfiles_create_users_and_directories(tmp_path: Path) -> None:
    assert SYSUSERS is not None and TMPFILES is not None
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/group").write_text("root:x:0:\ndialout:x:20:\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    confs = sorted(str(p) for p in (UNITS / "sysusers.d").glob("*.conf"))
    r = subprocess.run([SYSUSERS, f"--root={root}", *confs], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc/group").read_text().splitlines()}
    for user in ("edge-agent", "edge-aggregator"):
        assert user in passwd and int(passwd[user][2]) < 1000, "a system user"
        assert passwd[user][6] in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    assert "edge-agent" in groups["dialout"][3].split(","), "the agent may open serial ports"

    confs = sorted(str(p) for p in (UNITS / "tmpfiles.d").glob("*.conf"))
    r = subprocess.run([TMPFILES, f"--root={root}", "--create", *confs], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    uid = int(passwd["edge-agent"][2])
    for path, mode in (("etc/edge-agent", 0o750), ("var/lib/edge-agent", 0o750), ("var/lib/edge-agent/keys", 0o700),
                       ("run/edge-agent", 0o750), ("var/lib/edge-aggregator", 0o750)):
        st = (root / path).stat()
        assert st.st_mode & 0o7777 == mode, path
    assert (root / "var/lib/edge-agent/keys").stat().st_uid == uid
    assert (root / "etc/edge-agent").stat().st_uid == 0


PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def mdwe_supported() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(66, 0, 0, 0, 0) >= 0)  # PR_GET_MDWE: EINVAL before Linux 6.3


MDWE_LAUNCHER = f"""
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit("PR_SET_MDWE failed: errno %d" % ctypes.get_errno())
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("MDWE is not enforced: a writable+executable mapping was allowed")
except OSError:
    pass
os.execv(sys.executable, [sys.executable, "-m", "agent", "run", "--config", sys.argv[1]])
"""


@pytest.mark.skipif(not mdwe_supported(), reason="PR_SET_MDWE needs Linux >= 6.3")
def test_litert_runs_under_memory_deny_write_execute(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    """The whole agent (LiteRT + XNNPACK, numpy, paho, ssl, cryptography) works with W^X enforced by the kernel."""
    device = f"dev-{unique_id}"
    conf = write_config(tmp_path / "agent.toml", agent_config(tmp_path, device, mosquitto.url))
    rec = Recorder(mosquitto.url, [f"edge/v1/{device}/result/#"])
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-c", MDWE_LAUNCHER, str(conf)], stdout=log, stderr=log,
                            cwd=str(REPO), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(lambda: rec.count("/result/") >= 50 or proc.poll() is not None, timeout=60,
                 what="results from the agent under MDWE")
        text = (tmp_path / "agent.log").read_text(errors="replace")
        assert proc.poll() is None, f"agent exited under MDWE:\n{text}"
        assert rec.count("/result/") >= 50
    finally:
        proc.kill()
        proc.wait(10)
        log.close()
        rec.close()

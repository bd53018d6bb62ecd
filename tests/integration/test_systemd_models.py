"""The release host's units (edge-models-timestamp.service + .timer), checked by systemd's own tools, and the
exact command line of the service run against a real repository."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_systemd import ANALYZE, UNITS, exposure, needs_systemd_tools, unit_settings
from tests.support.tuf_repo import ReleaseRepo

pytestmark = pytest.mark.integration

SERVICE = "edge-models-timestamp.service"
TIMER = "edge-models-timestamp.timer"


def installed_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in (SERVICE, TIMER):
        shutil.copy(UNITS / unit, root / "etc/systemd/system" / unit)
    bindir = root / "opt/edge-agent/bin"
    bindir.mkdir(parents=True)
    shutil.copy2(Path(sys.executable).parent / "edge-provision", bindir / "edge-provision")
    return root


@needs_systemd_tools
@pytest.mark.parametrize("unit", [SERVICE, TIMER])
def test_units_verify_cleanly(tmp_path: Path, unit: str) -> None:
    assert ANALYZE is not None
    r = subprocess.run([ANALYZE, "verify", f"--root={installed_root(tmp_path)}", "--man=no", unit],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr


@needs_systemd_tools
def test_service_exposure_is_at_most_2() -> None:
    score = exposure(SERVICE)
    print(f"{SERVICE} exposure {score}")
    assert score <= 2.0


def test_timer_runs_daily_and_catches_up() -> None:
    t = unit_settings(TIMER)
    assert t["OnCalendar"] == ["daily"] and t["Persistent"] == ["yes"]
    s = unit_settings(SERVICE)
    assert s["Type"] == ["oneshot"] and s["User"] == ["edge-models"] and s["PrivateNetwork"] == ["yes"]


def test_the_service_command_line_resigns_a_real_repository(tmp_path: Path) -> None:
    """ExecStart, with the paths moved into a temp dir, re-signs the timestamp of a real repository."""
    rel = ReleaseRepo(tmp_path)
    argv = shlex.split(unit_settings(SERVICE)["ExecStart"][0])
    assert argv[0] == "/opt/edge-agent/bin/edge-provision"
    swap = {"/var/lib/edge-models/repository": str(rel.dir),
            "/etc/edge-models/keys/timestamp.pem": str(rel.keys["timestamp"][0]),
            "/etc/edge-models/keys/snapshot.pem": str(rel.keys["snapshot"][0])}
    argv = [str(Path(sys.executable).parent / "edge-provision")] + [swap.get(a, a) for a in argv[1:]]
    before = rel.repo.load("timestamp").signed.version
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert rel.repo.load("timestamp").signed.version == before + 1


SYSUSERS = shutil.which("systemd-sysusers")
TMPFILES = shutil.which("systemd-tmpfiles")


@pytest.mark.skipif(SYSUSERS is None or TMPFILES is None, reason="systemd-sysusers/tmpfiles not installed")
def test_release_host_user_and_directories(tmp_path: Path) -> None:
    import os
    import stat

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    assert SYSUSERS is not None and TMPFILES is not None
    r = subprocess.run([SYSUSERS, f"--root={root}", str(UNITS / "sysusers.d" / "edge-models.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    uid = next(int(ln.split(":")[2]) for ln in (root / "etc/passwd").read_text().splitlines()
               if ln.startswith("edge-models:"))
    r = subprocess.run([TMPFILES, f"--root={root}", "--create", str(UNITS / "tmpfiles.d" / "edge-models.conf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for path, mode in (("etc/edge-models/keys", 0o700), ("var/lib/edge-models/repository", 0o755)):
        st = os.stat(root / path)
        assert stat.S_IMODE(st.st_mode) == mode and st.st_uid == uid, path

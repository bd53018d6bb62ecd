"""`edge-agent demo` end to end: the README's first command, checked the way a newcomer would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "demo", *args], capture_output=True, text=True,
                          timeout=120)


def test_demo_json_every_published_record_verified_and_stored() -> None:
    proc = run_demo("--seconds", "10", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert set(summary) == {"published", "verified", "stored", "rejected", "gaps"}
    assert summary["published"] == summary["verified"] == summary["stored"] > 0
    assert summary["rejected"] == 0 and summary["gaps"] == 0
    assert "Traceback" not in proc.stderr


def test_demo_table_against_a_real_broker_shows_every_class(mosquitto) -> None:
    proc = run_demo("--seconds", "8", "--broker", mosquitto.url)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for cls in ("normal", "imbalance", "misalignment", "bearing_fault"):
        assert cls in out
    assert "every published record was verified against the fleet CA and stored" in out
    # published, verified and stored count the same things (every kind, each seq once): the last table and the
    # summary agree, and the clock line shows the declared clock states beside the skew count
    *_, last_table = out.split("summary:")[0].strip().split("\n\n")
    (line,) = [ln for ln in last_table.splitlines() if ln.strip().startswith("published")]
    words = line.split()
    published, verified, stored = (int(words[words.index(k) + 1]) for k in ("published", "verified", "stored"))
    assert published == verified == stored > 0
    assert f"published {published}, verified {published}, stored {published}" in out
    (clock,) = [ln.split() for ln in last_table.splitlines() if ln.strip().startswith("clock")]
    assert int(clock[clock.index("unsynced") + 1]) + int(clock[clock.index("ntp") + 1]) \
        + int(clock[clock.index("gnss") + 1]) == stored
    assert "skew" in clock


def test_demo_rejects_bad_seconds() -> None:
    proc = run_demo("--seconds", "0")
    assert proc.returncode == 2
    assert "--seconds must be > 0" in proc.stderr

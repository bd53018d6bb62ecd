"""R5: the disk under the outbox fills up → no crash loop, a clear error in the log, the status file and
the signed telemetry, and recovery without a restart once space is freed.

The outbox lives on a small tmpfs mounted for the test (root only); a filler file takes the free space.
The aggregator joins only after recovery, so the outbox must grow during the outage (with acks flowing,
SQLite reuses freed pages and its WAL, and a full disk may go unnoticed for a long time: that is fine).
The committer keeps the records it could not commit in memory and retries with backoff; the pipelines
block on their bounded queue. Telemetry goes beside that queue, so records made during the outage carry
the error and are committed first thing after recovery.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envelope import open_record
from tests.reliability.harness import AggregatorProcess, Device, outbox_meta, outbox_rows, report
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")]

TMPFS_MB = 16
FULL_FOR_S = 10.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> int:
    """Write until ENOSPC; returns bytes written."""
    written = 0
    chunk = b"\0" * (256 * 1024)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                written += f.write(chunk)
        except OSError:
            pass
        try:  # the last few bytes
            while f.write(b"\0" * 4096):
                written += 4096
        except OSError:
            pass
    return written


def status_doc(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc
    except (OSError, ValueError):
        return None


def test_r5_disk_full_then_freed_recovers_without_restart(tmp_path: Path, device: Device, mosquitto: Mosquitto,
                                                          aggregator: AggregatorProcess, small_disk: Path) -> None:
    outbox = small_disk / "outbox.db"
    device_outbox = outbox
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    status_file = run_dir / "status.json"
    conf = device.config(mosquitto.url, outbox={"path": str(outbox), "delivery": "aggregator", "resend_after_s": 3.0},
                         status={"path": str(status_file), "interval_s": 0.5}, telemetry={"interval_s": 1.0})
    telemetry = Recorder(mosquitto.url, [f"edge/v1/{device.device_id}/telemetry"])
    agent = device.agent(conf).start()
    filler = small_disk / "filler"
    try:
        wait_for(lambda: outbox_meta(device_outbox, "last_seq") > 500, timeout=60, what="a growing outbox")
        pid = agent.proc.pid if agent.proc else 0
        filled = fill(filler)
        full_at = time.monotonic()
        wait_for(lambda: (d := status_doc(status_file)) is not None and d["telemetry"]["outbox"]["errors"] >= 3,
                 timeout=60, what="three failed commits in the status file")
        # Stay full for a while: long enough for several backoff rounds (a crash loop would show here).
        wait_for(lambda: time.monotonic() - full_at >= FULL_FOR_S, timeout=FULL_FOR_S + 5, what="the outage")
        assert agent.alive(), agent.log()[-3000:]
        full = status_doc(status_file)
        assert full is not None
        assert full["telemetry"]["outbox"]["healthy"] is False
        assert "full" in (full["telemetry"]["outbox"]["last_error"] or ""), full["telemetry"]["outbox"]
        assert full["healthy"] is True and full["degraded"], "degraded, not unhealthy: the watchdog keeps pinging"
        committed_while_full = outbox_meta(device_outbox, "last_seq")
        assert "database or disk is full" in agent.log()
        assert "retrying in" in agent.log()

        filler.unlink()
        freed = time.monotonic()
        wait_for(lambda: (d := status_doc(status_file)) is not None and d["telemetry"]["outbox"]["healthy"]
                 and d["telemetry"]["outbox"]["committed"] > (full["telemetry"]["outbox"]["committed"] + 500),
                 timeout=60, what="commits again after space was freed")
        recovery_s = time.monotonic() - freed
        target = outbox_meta(device_outbox, "last_seq")
        aggregator.start()
        wait_for(lambda: aggregator.contiguous(device.device_id) >= target, timeout=60, what="delivery catching up")

        def error_telemetry() -> list[dict[str, Any]]:
            out = []
            for m in telemetry.snapshot():
                p = open_record(m.payload).payload()
                if p["outbox"]["healthy"] is False:
                    out.append(p)
            return out
        wait_for(error_telemetry, timeout=30, what="a telemetry record made during the outage")
        assert agent.alive() and agent.proc is not None and agent.proc.pid == pid, "no restart"
        assert "writable again" in agent.log()
        agent.kill9()
    finally:
        agent.stop()
        telemetry.close()
    last = outbox_meta(device_outbox, "last_seq")
    waiting = outbox_rows(device_outbox)
    figures = aggregator.stored(device.device_id)
    stored = set(figures.seqs)
    lost = [s for s in range(1, last + 1) if s not in stored and s not in waiting]
    bad = max((t["outbox"] for t in error_telemetry()), key=lambda o: int(o["errors"]))
    public = device.fleet.devices[device.device_id].signer().public_key()
    for m in telemetry.snapshot():
        open_record(m.payload).verify(public)
    report("R5", tmpfs_mb=TMPFS_MB, filler_bytes=filled, failed_commits=bad["errors"],
           error_telemetry_records=len(error_telemetry()),
           telemetry_error=repr(bad["last_error"]), full_for_s=round(freed - full_at, 1),
           recovery_s=round(recovery_s, 1), restarts=0, committed_while_full=committed_while_full,
           lost=len(lost), duplicates_stored=figures.duplicates_stored)
    assert lost == []
    assert figures.duplicates_stored == 0

"""kill -9 of the real agent (subprocess, real Mosquitto) during a model download and during the switch: on
restart one consistent model runs (the committed one), nothing committed is lost (seqs contiguous at the
broker), a half-downloaded file is never loaded, and a version whose health window was interrupted twice is
refused like a failed one."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from pathlib import Path

import pytest

from agent.watchdog import STALL_ENV
from envelope import open_record
from tests.support.agent_proc import AgentProcess
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.tuf_repo import MODEL_V1, MODEL_V2, ReleaseRepo, RepoServer, serve_bytes
from tests.support.updates import updates_config, write
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

V1 = hashlib.sha256(MODEL_V1.read_bytes()).digest()
V2 = hashlib.sha256(MODEL_V2.read_bytes()).digest()


def state(workdir: Path) -> dict:
    try:
        return json.loads((workdir / "updates" / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def status(workdir: Path) -> dict:
    try:
        return json.loads((workdir / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def records(rec: Recorder) -> dict[int, tuple[str, bytes | None, int]]:
    """seq -> (kind, model digest, boot epoch) of every record at the broker."""
    out = {}
    for m in rec.snapshot():
        if m.payload == b"offline":
            continue
        r = open_record(m.payload)
        out[r.seq] = (r.kind, bytes(r.model_sha256) if r.model_sha256 else None, r.epoch)
    return out


def contiguous(recs: dict[int, tuple[str, bytes | None, int]]) -> None:
    seqs = sorted(recs)
    assert seqs == list(range(1, seqs[-1] + 1)), "every committed record reached the broker, none twice"


def test_kill9_during_download(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    rel = ReleaseRepo(tmp_path / "release")
    rel.add(MODEL_V1, 1)
    rel.add(MODEL_V2, 2)
    device = f"dev-{unique_id}"
    work = tmp_path / "agent"
    rec = Recorder(mosquitto.url, [f"edge/v1/{device}/#"])
    started = threading.Event()
    with RepoServer(rel.dir) as srv:
        srv.prefix_hooks["/targets/vibration/2/"] = serve_bytes(MODEL_V2.read_bytes(), delay_per_chunk_s=0.5,
                                                                chunk=1024, started=started)
        conf = write(work, updates_config(work, device, mosquitto.url, srv.url, rel.root_json,
                                          poll_interval_s=0.5))
        agent = AgentProcess(conf).start()
        try:
            assert started.wait(30), agent.log()
            wait_for(lambda: len(records(rec)) > 3, timeout=20, what="records before the kill")
            agent.kill9()
            assert not state(work).get("models", {}).get("vibration", {}).get("committed")
            srv.prefix_hooks.clear()
            agent = AgentProcess(conf).start()
            wait_for(lambda: (state(work).get("models", {}).get("vibration", {}).get("committed") or {})
                     .get("sha256") == V2.hex(), timeout=60, what="v2 committed after the restart")
            n = len(records(rec))
            wait_for(lambda: len(records(rec)) > n + 5, timeout=20, what="records on v2")
            assert agent.terminate() == 0, agent.log()
        finally:
            agent.stop()
    recs = records(rec)
    rec.close()
    contiguous(recs)
    assert not list((work / "updates" / "staging").glob("*")), "no half-downloaded file left"
    assert {p.name for p in (work / "updates" / "models").iterdir()} == {f"{V2.hex()}.tflite", f"{V2.hex()}.json"}
    digests = [d for _, (k, d, _e) in sorted(recs.items()) if k == "result"]
    assert set(digests) == {V1, V2} and digests[-1] == V2
    assert sum(1 for a, b in itertools.pairwise(digests) if a != b) == 1, "one switch, v1 -> v2"


def test_kill9_during_the_switch_twice_refuses_that_version(tmp_path: Path, mosquitto: Mosquitto, unique_id: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    rel = ReleaseRepo(tmp_path / "release")
    rel.add(MODEL_V1, 1)
    rel.add(MODEL_V2, 2)
    device = f"dev-{unique_id}"
    work = tmp_path / "agent"
    stall = tmp_path / "stall"
    monkeypatch.setenv(STALL_ENV, str(stall))
    rec = Recorder(mosquitto.url, [f"edge/v1/{device}/#"])
    with RepoServer(rel.dir) as srv:
        conf = write(work, updates_config(work, device, mosquitto.url, srv.url, rel.root_json, poll_interval_s=0.5,
                                          health_window_s=60.0))
        # 1: killed between the persisted trial and the switch (held there by the stall hook)
        stall.write_text("update:switch\n")
        agent = AgentProcess(conf).start()
        try:
            wait_for(lambda: (state(work).get("models", {}).get("vibration", {}).get("trial") or {})
                     .get("attempts") == 1, timeout=60, what="trial persisted")
            wait_for(lambda: len(records(rec)) > 3, timeout=20, what="records")
            agent.kill9()
            stall.unlink()
            # 2: killed inside the health window, v2 running
            agent = AgentProcess(conf).start()
            wait_for(lambda: ((status(work).get("telemetry", {}).get("updates", {}).get("models", {})
                               .get("vibration") or {}).get("pending") or {}).get("state") == "health_window",
                     timeout=60, what="health window running")
            wait_for(lambda: any(d == V2 for k, d, _e in records(rec).values() if k == "result"), timeout=20,
                     what="results on v2")
            agent.kill9()
            # 3: the restart runs the committed v1 and refuses v2 for good
            agent = AgentProcess(conf).start()
            wait_for(lambda: "2" in state(work).get("models", {}).get("vibration", {}).get("refused", {}),
                     timeout=30, what="v2 refused")
            n = len(records(rec))
            wait_for(lambda: len(records(rec)) > n + 10, timeout=20, what="records after the restart")
            assert agent.terminate() == 0, agent.log()
        finally:
            agent.stop()
    st = state(work)["models"]["vibration"]
    assert "interrupted 2 times during its health window" in st["refused"]["2"]
    assert st["committed"] is None and st["trial"] is None
    recs = records(rec)
    rec.close()
    contiguous(recs)
    results = [(s, d) for s, (k, d, _e) in sorted(recs.items()) if k == "result"]
    assert results[-1][1] == V1 and {d for _, d in results} == {V1, V2}
    epochs = sorted({e for _, (_, _, e) in recs.items()})
    assert len(epochs) == 3, "three boots"
    for e in epochs:  # every boot starts on the committed model (v1): one consistent model after each kill
        first = next(d for _, (k, d, ep) in sorted(recs.items()) if k == "result" and ep == e)
        assert first == V1

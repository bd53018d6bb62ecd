"""The agent's updater against a real local repository: v1 -> v2 swap, status, birth, restart on v2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from agent.status import read_status
from envelope import open_record
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.tuf_repo import MODEL_V1, MODEL_V2, ReleaseRepo, RepoServer
from tests.support.updates import results_by_seq, running_agent, updates_config, write
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

V1 = hashlib.sha256(MODEL_V1.read_bytes()).digest()
V2 = hashlib.sha256(MODEL_V2.read_bytes()).digest()


def test_agent_takes_v2_commits_it_and_restarts_on_it(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    rel = ReleaseRepo(tmp_path / "release")
    rel.add(MODEL_V1, 1)
    rel.add(MODEL_V2, 2)
    device = f"dev-{unique_id}"
    rec = Recorder(mosquitto.url, [f"edge/v1/{device}/#"])
    with RepoServer(rel.dir) as srv:
        conf = write(tmp_path / "agent", updates_config(tmp_path / "agent", device, mosquitto.url, srv.url,
                                                        rel.root_json))
        with running_agent(conf) as agent:
            assert agent.updater is not None
            wait_for(lambda: agent.update_state is not None and agent.update_state.models.get("vibration") and
                     agent.update_state.models["vibration"].floor == 2, timeout=30, what="v2 committed")
            # the repository's condition is set when the poll that committed v2 finishes: wait for it too
            doc = wait_for(lambda: (d := agent.status_doc())["telemetry"]["updates"]["state"] == "ok" and d,
                           timeout=10, what="the updater's poll done")
            m = doc["telemetry"]["updates"]["models"]["vibration"]
            assert m["running"] == 2 and m["sha256"] == V2.hex() and m["floor"] == 2 and m["pending"] is None
            assert doc["telemetry"]["updates"]["state"] == "ok"
            assert doc["telemetry"]["pipelines"]["vibration"]["model"]["sha256"] == V2.hex()
            wait_for(lambda: read_status(str(tmp_path / "agent" / "status.json"))["telemetry"]["updates"]
                     ["models"]["vibration"]["running"] == 2, timeout=10, what="status file says v2")
            n = len(results_by_seq(rec.snapshot()))
            wait_for(lambda: len(results_by_seq(rec.snapshot())) > n + 5, timeout=10, what="results on v2")
        state = json.loads((tmp_path / "agent" / "updates" / "state.json").read_text())
        assert state["models"]["vibration"]["committed"]["sha256"] == V2.hex()
        # A restart runs the committed v2 straight away (verified again from the model store).
        with running_agent(conf) as agent:
            assert agent.pipelines[0].model.model_sha256 == V2
            assert agent.pipelines[0].meta.version == "2"
    msgs = rec.snapshot()
    rec.close()
    results = results_by_seq(msgs)
    digests = [d for _, d, _ in results]
    # v1 until the switch, v2 after it, never back (the update may finish before the first v1 result is seen)
    first_v2 = digests.index(V2)
    assert set(digests[:first_v2]) <= {V1} and set(digests[first_v2:]) == {V2}, "one switch from v1 to v2"
    births = [open_record(m.payload) for m in msgs if m.topic.endswith("/status") and m.payload != b"offline"]
    payloads = [b.payload() for b in births]
    assert any(p["models"][0]["sha256"] == V2.hex() and p["models"][0]["version"] == "2" for p in payloads), \
        "a birth record after the switch names v2"

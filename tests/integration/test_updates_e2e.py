"""End to end on a real Mosquitto: an agent running model v1 receives v2 from a local HTTP repository while its
source runs at 1 kHz in real time. Every seq is stored once and contiguous, every window is processed exactly
once (window starts 128 ms apart, none twice, none missing), the results switch digest at one window boundary,
and the aggregator, reading the same repository, accepts v2's results and flags those of a second agent that
runs a model nobody signed."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from aggregator import AggregatorConfig, AggregatorService, MqttSettings, StoreSettings, open_store
from aggregator.config import IdentitySettings, ModelsSettings, TrustSettings
from envelope import open_record
from tests.support.agent_proc import AgentProcess, agent_config
from tests.support.mosquitto import Mosquitto
from tests.support.pki import make_fleet
from tests.support.tuf_repo import MODEL_V1, MODEL_V2, ReleaseRepo, RepoServer, make_model_version
from tests.support.updates import write
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

V1 = hashlib.sha256(MODEL_V1.read_bytes()).digest()
V2 = hashlib.sha256(MODEL_V2.read_bytes()).digest()
SOURCE_1KHZ = {"type": "simulated", "fault": "cycle", "cycle_s": 4.0, "realtime": True, "rate_hz": 1000.0,
               "block_samples": 32}


def stored(db: Path, device: str) -> list[tuple[int, str, bytes | None, dict | None]]:
    """(seq, kind, model digest, payload of results) of every stored record of ``device``, by seq."""
    store = open_store(str(db))
    try:
        out = []
        for row in store.export(device_id=device):
            rec = open_record(row["record"])
            out.append((rec.seq, rec.kind, bytes(rec.model_sha256) if rec.model_sha256 else None,
                        rec.payload() if rec.kind == "result" else None))
        return sorted(out, key=lambda r: r[0])
    finally:
        store.close()


def committed(work: Path) -> str | None:
    try:
        st = json.loads((work / "updates" / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return ((st.get("models", {}).get("vibration") or {}).get("committed") or {}).get("sha256")


def test_v1_to_v2_at_1khz_every_window_once_and_unlisted_model_flagged(tmp_path: Path, mosquitto: Mosquitto,
                                                                       unique_id: str, capsys) -> None:
    dev_a, dev_b = f"dev-a-{unique_id}", f"dev-b-{unique_id}"
    fleet = make_fleet(tmp_path / "pki", devices=[dev_a, dev_b], aggregators=[f"agg-{unique_id}"])
    rel = ReleaseRepo(tmp_path / "release")
    rel.add(MODEL_V1, 1)
    # An unlisted model for device B: a valid model the release keys never signed.
    rogue = make_model_version(MODEL_V1.read_bytes(), version=7)
    rogue_path = tmp_path / "rogue" / "vibration-int8-v7.tflite"
    rogue_path.parent.mkdir()
    rogue_path.write_bytes(rogue)
    meta = json.loads(MODEL_V1.with_suffix(".json").read_text())
    meta.update(version=7, sha256=hashlib.sha256(rogue).hexdigest())
    rogue_path.with_suffix(".json").write_text(json.dumps(meta))
    rogue_sha = hashlib.sha256(rogue).digest()
    db = tmp_path / "records.db"
    with RepoServer(rel.dir) as srv:
        agg_cfg = AggregatorConfig(
            mqtt=MqttSettings(url=mosquitto.url, client_id=f"agg-{unique_id}"),
            store=StoreSettings(url=str(db)),
            trust=TrustSettings(ca_files=(str(fleet.ca_cert),), crl_files=(str(fleet.crl),)),
            identity=IdentitySettings(**fleet.identity()),
            models=ModelsSettings(repository_url=srv.url, root_file=str(rel.root_json),
                                  cache_dir=str(tmp_path / "agg-tuf"), refresh_s=1.0),
            ack_interval_ms=50)
        svc = AggregatorService(agg_cfg)
        svc.start()
        agents: list[AgentProcess] = []
        try:
            def agent(device: str, **kw: object) -> tuple[AgentProcess, Path]:
                work = tmp_path / device
                files = fleet.devices[device]
                cfg = agent_config(work, device, mosquitto.url, delivery="aggregator", key_path=files.key,
                                   certificate=str(files.cert), source=SOURCE_1KHZ,
                                   receipts={"ca_file": str(fleet.ca_cert), "crl_file": str(fleet.crl)}, **kw)
                proc = AgentProcess(write(work, cfg)).start()
                agents.append(proc)
                return proc, work

            _a, work_a = agent(dev_a, updates={"repository_url": srv.url, "root": str(rel.root_json),
                                              "poll_interval_s": 1.0, "health_window_s": 2.0,
                                              "health_min_windows": 5})
            cfg_b = agent_config(tmp_path / "tmpb", dev_b, mosquitto.url, key_path=fleet.devices[dev_b].key)
            agent(dev_b, pipeline=[{**cfg_b["pipeline"][0], "model": str(rogue_path), "source": SOURCE_1KHZ}])
            wait_for(lambda: sum(1 for r in stored(db, dev_a) if r[1] == "result") >= 30, timeout=60,
                     what="v1 results of device A stored")
            rel.add(MODEL_V2, 2)  # released while A runs
            wait_for(lambda: committed(work_a) == V2.hex(), timeout=60, what="v2 committed on device A")
            wait_for(lambda: sum(1 for r in stored(db, dev_a) if r[2] == V2) >= 30, timeout=60,
                     what="v2 results stored")
            for p in agents:
                assert p.terminate() == 0, p.log()
        finally:
            for p in agents:
                p.stop()
            svc.stop()  # commits what it took: every stored record was counted
        stats = svc.stats()
        conf = tmp_path / "aggregator.toml"
        conf.write_text(f'[store]\nurl = "{db}"\n[models]\nrepository_url = "{srv.url}"\n'
                        f'root_file = "{rel.root_json}"\ncache_dir = "{tmp_path / "cli-tuf"}"\n')
        from aggregator.cli import main

        capsys.readouterr()
        assert main(["models", "--config", str(conf), "--json"]) == 1
        report = {m["sha256"]: m for m in json.loads(capsys.readouterr().out)["models"]}

    recs = stored(db, dev_a)
    seqs = [r[0] for r in recs]
    assert seqs == list(range(1, seqs[-1] + 1)), "device A: every seq stored once, none missing"
    results = [r for r in recs if r[1] == "result"]
    t0 = [r[3]["t0_ms"] for r in results]  # type: ignore[index]
    steps = {b - a for a, b in itertools.pairwise(t0)}
    assert steps == {128}, f"every 128-sample window at 1 kHz exactly once: steps {steps}"
    digests = [r[2] for r in results]
    switches = [i for i in range(1, len(digests)) if digests[i] != digests[i - 1]]
    assert len(switches) == 1 and digests[switches[0] - 1] == V1 and digests[switches[0]] == V2, \
        "the digest switches once, at one window boundary"
    b_results = [r for r in stored(db, dev_b) if r[1] == "result"]
    assert b_results and {r[2] for r in b_results} == {rogue_sha}
    assert stats.unlisted_models == {rogue_sha.hex(): len(b_results)}, "B flagged, A's v1 and v2 accepted"
    assert report[V2.hex()]["listed"] is True and report[V2.hex()]["results"] == sum(d == V2 for d in digests)
    assert report[V1.hex()]["listed"] is True
    assert report[rogue_sha.hex()]["listed"] is False and report[rogue_sha.hex()]["devices"] == {dev_b: len(b_results)}

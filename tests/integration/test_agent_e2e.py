"""The agent end to end against a real Mosquitto: signed, contiguous, verifiable, correct records.

The agent runs as a real subprocess on the simulated source (non-realtime, cycling through the four
vibration classes every 30 s of sample time); a subscriber records what reaches the broker; each record is
verified with python-cwt (an independent COSE implementation) and the device's public key.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import cwt
import pytest
from cryptography.hazmat.primitives import serialization

from envelope import open_record
from firmware_bridge.signal_model import CLASSES
from provisioning import load_file_signer
from tests.support.agent_proc import MODEL, AgentProcess, agent_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt_sub import Recorder
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

CYCLE_S = 30.0


def cwt_key(key_path: Path):
    signer = load_file_signer(key_path)
    pem = signer.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return cwt.COSEKey.from_pem(pem, alg="ESP256", kid=signer.kid)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_agent_publishes_verified_contiguous_correct_results(tmp_path: Path, mosquitto: Mosquitto,
                                                             unique_id: str, protocol: str) -> None:
    device = f"dev-{unique_id}"
    cfg = agent_config(tmp_path, device, mosquitto.url, mqtt={"protocol": protocol})
    conf = write_config(tmp_path / "agent.toml", cfg)
    rec = Recorder(mosquitto.url, [f"edge/v1/{device}/#"])
    agent = AgentProcess(conf).start()
    try:
        # 4 classes x 30 s of samples at 1 kHz / 128-sample windows ≈ 234 windows per class.
        wait_for(lambda: rec.count("/result/") >= 1000, timeout=60, what="1000 results")
        assert agent.terminate() == 0, agent.log()
    finally:
        agent.stop()
        rec.close()
    assert "Traceback" not in agent.log()

    msgs = rec.snapshot()
    key = cwt_key(tmp_path / "keys" / "device.key")
    decoder = cwt.COSE.new()
    records = {}
    for m in msgs:
        if m.topic.endswith("/status") and m.payload == b"offline":
            continue
        assert decoder.decode(m.payload, keys=[key]) is not None  # raises unless the signature verifies
        r = open_record(m.payload)
        assert r.device_id == device
        records.setdefault(r.seq, r)
    seqs = sorted(records)
    assert seqs == list(range(1, seqs[-1] + 1)), "seqs are contiguous from 1"
    assert records[1].kind == "status", "the birth record is the first record of a boot"
    assert records[1].x5chain == ()

    model_sha = hashlib.sha256(MODEL.read_bytes()).digest()
    results = [records[s] for s in seqs if records[s].kind == "result"]
    assert all(r.model_sha256 == model_sha for r in results)
    assert all(r.stream == "vibration" and r.epoch == 1 for r in results)

    # Ground truth: the simulated source starts cycling at the first window's start.
    payloads = [r.payload() for r in results]
    t0 = payloads[0]["t0_ms"]
    per_class: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for p in payloads:
        start, end = p["t0_ms"] - t0, p["t0_ms"] - t0 + 128
        k_start, k_end = int(start // (CYCLE_S * 1000)), int((end - 1) // (CYCLE_S * 1000))
        if k_start != k_end:
            continue  # the window straddles a class change
        truth = CLASSES[k_start % len(CLASSES)]
        per_class[truth] += 1
        correct[truth] += p["label"] == truth
    for cls in CLASSES:
        assert per_class[cls] >= 200, per_class
        assert correct[cls] / per_class[cls] >= 0.95, (cls, correct[cls], per_class[cls])

"""AggregatorService with [log]: checkpoints retained on <prefix>/_log/checkpoint, receipts carry proofs."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from aggregator import AggregatorService
from aggregator.config import LogSettings
from envelope import NoteVerifier, open_receipt
from envelope.merkle import leaf_hash, verify_consistency, verify_inclusion
from envelope.note import open_checkpoint
from provisioning import create_file_key
from tests.integration.test_agg_service import make_config
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for
from tests.unit.test_agg_support import fleet_with

pytestmark = pytest.mark.integration

ORIGIN = "test-fleet/log"


def log_settings(tmp_path: Path, interval: float = 0.2) -> tuple[LogSettings, NoteVerifier]:
    from envelope import NoteSigner

    key = create_file_key(tmp_path / "log" / "log.key", "ed25519")
    signer = NoteSigner(ORIGIN, key.private_key)  # type: ignore[arg-type]
    return LogSettings(key_file=str(tmp_path / "log" / "log.key"), origin=ORIGIN,
                       checkpoint_interval_s=interval), signer.verifier


class Watcher:
    def __init__(self, port: int) -> None:
        self.receipts: list[bytes] = []
        self.checkpoints: list[bytes] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_message = self.on_message
        self.c.connect("127.0.0.1", port)
        self.c.subscribe([("edge/v1/+/ack", 1), ("edge/v1/_log/checkpoint", 1)])
        self.c.loop_start()

    def on_message(self, client, userdata, msg) -> None:
        with self.lock:
            (self.checkpoints if msg.topic.endswith("/_log/checkpoint") else self.receipts).append(msg.payload)

    def publish(self, records) -> None:
        for info in [self.c.publish(t, d, qos=1) for t, d in records]:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_receipts_prove_the_newest_settled_record(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    fleet, (dev,) = fleet_with(tmp_path, unique_id)
    settings, verifier = log_settings(tmp_path)
    cfg = make_config(tmp_path, fleet, mosquitto.port, f"agg-{unique_id}")
    cfg = type(cfg)(**{**cfg.__dict__, "log": settings})
    w = Watcher(mosquitto.port)
    svc = AggregatorService(cfg)
    svc.start()
    try:
        sent = [dev.birth()] + [dev.record() for _ in range(50)]
        w.publish(sent)
        by_seq = {i + 1: data for i, (_, data) in enumerate(sent)}

        def proven(seq: int):
            with w.lock:
                for data in reversed(w.receipts):
                    r, _ = open_receipt(data)
                    if r.settled == seq and r.log is not None:
                        return r
            return None

        r1 = wait_for(lambda: proven(51), timeout=20, what="a receipt proving seq 51")
        cp, _ = open_checkpoint(r1.log.checkpoint, [verifier], origin=ORIGIN)
        verify_inclusion(r1.log.index, cp.size, leaf_hash(by_seq[51]), r1.log.inclusion, cp.root)
        # every receipt is honest: its settled record is proven, sizes never shrink, consistency links them
        with w.lock:
            receipts = [open_receipt(d)[0] for d in w.receipts]
        assert all(r.log is not None or r.settled == 0 for r in receipts)
        for r in receipts:
            if r.log is not None:
                c, _ = open_checkpoint(r.log.checkpoint, [verifier])
                verify_inclusion(r.log.index, c.size, leaf_hash(by_seq[r.settled]), r.log.inclusion, c.root)
        more = [dev.record() for _ in range(30)]
        w.publish(more)
        by_seq.update({52 + i: data for i, (_, data) in enumerate(more)})
        r2 = wait_for(lambda: proven(81), timeout=20, what="a receipt proving seq 81")
        cp2, _ = open_checkpoint(r2.log.checkpoint, [verifier])
        assert r2.log.prev_size > 0
        prev = next(open_checkpoint(x.log.checkpoint, [verifier])[0] for x in receipts
                    if x.log is not None and open_checkpoint(x.log.checkpoint, [verifier])[0].size == r2.log.prev_size)
        verify_consistency(prev.size, cp2.size, r2.log.consistency, prev.root, cp2.root)
        with w.lock:
            assert w.checkpoints and open_checkpoint(w.checkpoints[-1], [verifier])[0].size >= 81
        assert svc.log_integrator is not None and svc.log_integrator.leader
        late = Watcher(mosquitto.port)  # the checkpoint is retained: a late subscriber gets it at once
        try:
            wait_for(lambda: late.checkpoints, timeout=10, what="the retained checkpoint")
            assert open_checkpoint(late.checkpoints[0], [verifier])[0].size >= 81
        finally:
            late.close()
    finally:
        svc.stop()
        w.close()
    with sqlite3.connect(tmp_path / "agg.db") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT log_index), MAX(log_index) FROM records").fetchone() \
            == (81, 81, 80)


def test_the_web_app_serves_the_log(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    """[log] + [web]: the aggregator's web app mounts the tlog-tiles routes at /log; a spec client reads them."""
    import dataclasses

    from aggregator.config import WebSettings
    from tests.support.tlog_client import TlogClient

    fleet, (dev,) = fleet_with(tmp_path, unique_id)
    settings, verifier = log_settings(tmp_path, interval=0.05)
    cfg = make_config(tmp_path, fleet, mosquitto.port, f"agg-{unique_id}")
    cfg = dataclasses.replace(cfg, log=settings, web=WebSettings(enabled=True, port=0))
    svc = AggregatorService(cfg)
    svc.start()
    w = Watcher(mosquitto.port)
    try:
        sent = [dev.birth()] + [dev.record() for _ in range(300)]
        w.publish(sent)
        assert svc.web_url is not None
        client = TlogClient(f"{svc.web_url}/log", verifier.vkey())

        def whole():
            try:
                c = client.check()
            except Exception:  # no checkpoint yet (404), or one that does not cover everything
                return None
            return c if c.size == len(sent) else None

        got = wait_for(whole, timeout=20, interval=0.1, what="the whole log over HTTP")
        assert got.origin == ORIGIN and sorted(got.entries) == sorted(data for _, data in sent)
    finally:
        w.close()
        svc.stop()

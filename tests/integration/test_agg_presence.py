"""Presence follows the status topic whatever dedup says (issue 12 item 4).

Round 1: after a reconnect, the agent re-publishes the same birth record (same seq, retained); the store
dropped it as a duplicate before updating presence, so ``stats`` showed the device offline for ever. Here
every verdict of the sequence rules on a birth record (new, duplicate, equivocation, epoch regression) is
checked against the store, and the reconnect against a running service and ``edge-aggregator stats``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aggregator import AggregatorService, TrustStore, Verifier, open_store
from aggregator.presence import PresenceEvent
from aggregator.trust import load_certificates
from tests.integration.test_agg_service import Peer, make_config
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for
from tests.unit.test_agg_support import fleet_with

pytestmark = pytest.mark.integration


def _online(store_path: Path) -> int | None:
    store = open_store(str(store_path))
    try:
        return store.device_stats()[0]["online"]
    finally:
        store.close()


@pytest.mark.parametrize("verdict", ["new", "duplicate", "equivocation", "epoch_regression"])
def test_a_birth_record_sets_online_whatever_the_sequence_rules_decide(tmp_path: Path, verdict: str) -> None:
    fleet, (dev,) = fleet_with(tmp_path, "dev-presence")
    verifier = Verifier(TrustStore(load_certificates(fleet.ca_cert)))
    store = open_store(str(tmp_path / "agg.db"))
    t0 = int(time.time() * 1000)
    try:
        dev.epoch = 2
        first = dev.birth()
        vr = verifier.verify(*first, t0)
        store.commit_batch([vr], presence=[PresenceEvent(dev.device_id, True, t0)])
        store.commit_batch([], presence=[PresenceEvent(dev.device_id, False, t0 + 1)])  # the will
        assert store.device_stats()[0]["online"] == 0
        if verdict == "new":
            again = dev.birth()
        elif verdict == "duplicate":
            again = first  # what the agent re-publishes after a reconnect
        elif verdict == "equivocation":
            again = dev.record("status", payload={"state": "online", "agent": "other"}, with_chain=True,
                               seq=dev.seq)
        else:
            dev.epoch = 1
            again = dev.birth()
        vr2 = verifier.verify(*again, t0 + 2)
        result = store.commit_batch([vr2], presence=[PresenceEvent(dev.device_id, True, t0 + 2)])
        assert {"new": result.stored, "duplicate": result.duplicates, "equivocation": result.equivocations,
                "epoch_regression": result.rejected.get("epoch_regression", 0)}[verdict] == 1
        stats = store.device_stats()[0]
        assert (stats["online"], stats["status_ms"]) == (1, t0 + 2)
    finally:
        store.close()


def test_stats_shows_online_after_a_reconnect(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    fleet, (dev,) = fleet_with(tmp_path, unique_id)
    svc = AggregatorService(make_config(tmp_path, fleet, mosquitto.port, f"agg-{unique_id}"))
    peer = Peer(mosquitto.port)
    svc.start()
    try:
        birth = dev.birth()
        peer.publish([birth], retain=True)
        wait_for(lambda: svc.stats().stored == 1, what="birth stored")
        peer.publish([(birth[0], b"offline")], retain=True)  # the broker publishes the will
        wait_for(lambda: svc.stats().offline_events == 1, what="will recorded")
        assert _online(tmp_path / "agg.db") == 0
        peer.publish([birth], retain=True)  # reconnect: the same birth record again
        wait_for(lambda: svc.stats().duplicates == 1, what="re-published birth seen as a duplicate")
        wait_for(lambda: _online(tmp_path / "agg.db") == 1, what="online again")
    finally:
        svc.stop()
        peer.close()
    out = subprocess.run([sys.executable, "-m", "aggregator.cli", "stats", "--store", str(tmp_path / "agg.db"),
                          "--json"], capture_output=True, text=True, timeout=60, check=True)
    (row,) = json.loads(out.stdout)
    assert row["online"] == 1 and row["duplicates"] == 1 and row["stored"] == 1
    table = subprocess.run([sys.executable, "-m", "aggregator.cli", "stats", "--store", str(tmp_path / "agg.db")],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert table.splitlines()[1].split()[8] == "yes", table

"""Scale-out: two ``edge-aggregator run`` processes on one shared subscription and one PostgreSQL.

Four simulated devices, 20,000 records: each stored exactly once, no gaps, every device's retained ack
equals its last seq. Mosquitto 2.0.11 notes: a shared subscription hands each message to one member of the
group, round robin; retained messages are delivered on a shared subscribe too, but live birth records
would reach only one worker, which is why ``status`` is subscribed directly by every worker.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_agg_badinput import AggregatorProcess, write_config
from tests.integration.test_agg_service import Peer
from tests.integration.test_agg_store import PG_URL, drop_schema
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for
from tests.unit.test_agg_support import fleet_with

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 20_000
DEVICES = 4


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = "agg_scale_" + uuid.uuid4().hex[:10]
    try:
        yield schema
    finally:
        drop_schema(schema)


@pytest.fixture
def aggregator_procs() -> Iterator[list[AggregatorProcess]]:
    procs: list[AggregatorProcess] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()


def count(schema: str, sql: str) -> list[tuple]:
    with psycopg.connect(PG_URL) as conn:
        try:
            return conn.execute(sql.replace("{s}", f'"{schema}"')).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def test_two_workers_share_the_load_and_store_each_record_once(
        tmp_path: Path, mosquitto: Mosquitto, unique_id: str, pg_schema: str,
        aggregator_procs: list[AggregatorProcess]) -> None:
    ids = [f"{unique_id}-{i}" for i in range(DEVICES)]
    fleet, devs = fleet_with(tmp_path, *ids)
    procs = []
    for w in range(2):
        cfg = write_config(tmp_path / f"agg{w}.toml", port=mosquitto.port, client_id=f"agg-{unique_id}-{w}",
                           store=PG_URL, schema=pg_schema, ca=fleet.ca_cert, crl=fleet.crl, group="workers",
                           identity=fleet.identity())
        procs.append(AggregatorProcess(cfg, tmp_path / f"agg{w}.log").start())
        aggregator_procs.append(procs[-1])
    peer = Peer(mosquitto.port, inflight=200)
    try:
        peer.publish([d.birth() for d in devs], retain=True)
        per_device = TOTAL // DEVICES - 1
        records = []
        for i in range(per_device):
            for d in devs:
                records.append(d.record("telemetry" if i % 50 == 49 else "result"))
        for k in range(0, len(records), 2000):
            peer.publish(records[k:k + 2000])
        assert sum(d.seq for d in devs) == TOTAL
        wait_for(lambda: count(pg_schema, "SELECT count(*) FROM {s}.records") == [(TOTAL,)], timeout=180,
                 interval=0.5, what=f"{TOTAL} records in PostgreSQL")
        rows = count(pg_schema, "SELECT device_id, count(*), min(seq), max(seq), count(DISTINCT seq) "
                                "FROM {s}.records GROUP BY device_id ORDER BY device_id")
        assert rows == [(d.device_id, d.seq, 1, d.seq, d.seq) for d in sorted(devs, key=lambda d: d.device_id)]
        state = count(pg_schema, "SELECT device_id, contiguous_seq, max_seq FROM {s}.devices ORDER BY device_id")
        assert state == [(d.device_id, d.seq, d.seq) for d in sorted(devs, key=lambda d: d.device_id)]
        assert count(pg_schema, "SELECT count(*) FROM {s}.rejects") == [(0,)]
        peer.watch_acks()
        wait_for(lambda: all(peer.acks.get(d.device_id) == (d.seq, 1) for d in devs), timeout=30,
                 what="retained acks equal to each device's last seq")
    finally:
        peer.close()
    stored = []
    for p in procs:
        assert p.stop() == 0
        m = re.findall(r"'stored': (\d+)", p.log.read_text())
        assert m, p.log.read_text()[-2000:]
        stored.append(int(m[-1]))
    assert sum(stored) == TOTAL and min(stored) > TOTAL // 10, stored  # both workers did a share

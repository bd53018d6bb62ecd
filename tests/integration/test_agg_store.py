"""The record store on real SQLite and PostgreSQL: idempotent inserts, sequence rules, acks, rejects, stats."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator import RejectEvent, Store, TrustStore, Verifier, open_store
from aggregator.trust import load_certificates
from tests.unit.test_agg_support import fleet_with

pytestmark = pytest.mark.integration

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = "agg_" + uuid.uuid4().hex[:12]
    try:
        yield schema
    finally:
        drop_schema(schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path, pg_schema: str) -> Iterator[tuple[str, str | None]]:
    if request.param == "sqlite":
        yield str(tmp_path / "agg.db"), None
    else:
        yield PG_URL, pg_schema


@pytest.fixture
def world(tmp_path: Path):
    fleet, devs = fleet_with(tmp_path, "dev-a", "dev-b")
    return devs, Verifier(TrustStore(load_certificates(fleet.ca_cert)))


def verify_all(v: Verifier, records):
    return [v.verify(t, d, int(time.time() * 1000)) for t, d in records]


def test_batch_is_stored_once_and_acked_contiguously(store_url, world) -> None:
    (a, b), v = world
    store = open_store(store_url[0], schema=store_url[1])
    try:
        recs = verify_all(v, [a.birth(), b.birth()] + [a.record() for _ in range(10)] + [b.record()])
        r = store.commit_batch(recs)
        assert r.stored == 13 and r.duplicates == 0
        assert r.acks == {"dev-a": (11, 1), "dev-b": (2, 1)}
        again = store.commit_batch(recs[:5])
        assert again.stored == 0 and again.duplicates == 5
        assert again.acks["dev-a"] == (11, 1)  # duplicates still acked
        rows = list(store.export())
        assert len(rows) == 13 and rows[0]["record"] == recs[0].record.raw
    finally:
        store.close()


def test_gap_reorder_and_epoch_regression(store_url, world) -> None:
    (a, _), v = world
    store = open_store(store_url[0], schema=store_url[1])
    try:
        birth = verify_all(v, [a.birth()])  # seq 1
        recs = verify_all(v, [a.record() for _ in range(5)])  # seq 2..6
        store.commit_batch([*birth, recs[0], recs[3]])  # 1, 2, 5: hole at 3..4
        r = store.commit_batch([recs[4]])
        assert r.acks == {} and r.stored == 1
        r = store.commit_batch([recs[2], recs[1]])  # fill the hole out of order
        assert r.reorders == 2 and r.acks == {"dev-a": (6, 1)}
        stale = verify_all(v, [a.record(epoch=0)])
        r = store.commit_batch(stale)
        assert r.rejected["epoch_regression"] == 1 and r.stored == 0
        # rejected for good: seq 7 settles (DESIGN §8) and is reported once
        assert r.acks["dev-a"][0] == 7 and r.settled_rejects == {"dev-a": {7: "epoch_regression"}}
        a.seq += 5
        evicted_gap = verify_all(v, [a.gap(8, 12)])  # seq 13; 7 was the stale one (not stored)
        r = store.commit_batch(evicted_gap)
        assert r.policy_gap_seqs == 5 and r.acks == {"dev-a": (13, 1)}
        r = store.commit_batch(verify_all(v, [a.record(seq=7)]))  # a late genuine 7 is still stored
        assert r.stored == 1 and r.acks.get("dev-a", (13, 1)) == (13, 1)
        stats = {d["device_id"]: d for d in store.device_stats()}
        assert stats["dev-a"]["missing"] == 0 and stats["dev-a"]["policy_gap_seqs"] == 5
        assert stats["dev-a"]["rejects"] == {"epoch_regression": 1}
    finally:
        store.close()


def test_rejects_are_counted_by_device_and_reason_and_survive_reopen(store_url) -> None:
    store = open_store(store_url[0], schema=store_url[1])
    store.count_rejects([RejectEvent("dev-x", "bad_signature", 1, "x")] * 3 + [RejectEvent("", "bad_topic", 2)])
    store.close()
    store = open_store(store_url[0], schema=store_url[1])
    try:
        stats = {d["device_id"]: d["rejects"] for d in store.device_stats()}
        assert stats == {"dev-x": {"bad_signature": 3}, "": {"bad_topic": 1}}
    finally:
        store.close()


def test_state_survives_reopen_and_learned_keys_are_kept(store_url, world) -> None:
    (a, _), v = world
    store = open_store(store_url[0], schema=store_url[1])
    store.commit_batch(verify_all(v, [a.birth(), a.record(), a.record()]))
    store.close()
    store = open_store(store_url[0], schema=store_url[1])
    try:
        assert store.learned_keys()[0][:2] == ("dev-a", a.signer.kid)
        r = store.commit_batch(verify_all(v, [a.record()]))
        assert r.acks == {"dev-a": (4, 1)}
    finally:
        store.close()


def test_two_postgres_writers_interleaving_store_each_seq_once(world, pg_schema: str) -> None:
    (a, b), v = world
    recs = verify_all(v, [a.birth(), b.birth()] + [d.record() for _ in range(300) for d in (a, b)])
    stores = [open_store(PG_URL, schema=pg_schema) for _ in range(2)]
    acks: list[dict[str, tuple[int, int]]] = [{}, {}]
    try:
        def worker(i: int) -> None:
            for k in range(0, len(recs), 20):
                batch = recs[k:k + 20]
                # each worker gets every other record, plus a few of the other worker's (redelivery)
                mine = [r for j, r in enumerate(batch) if j % 2 == i] + batch[:2]
                acks[i].update(stores[i].commit_batch(mine).acks)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(list(stores[0].export())) == len(recs)
        final = stores[0].acks_for(["dev-a", "dev-b"])
        assert final == {"dev-a": (a.seq, 1), "dev-b": (b.seq, 1)}
        assert {d["device_id"]: d["missing"] for d in stores[1].device_stats()} == {"dev-a": 0, "dev-b": 0}
    finally:
        for s in stores:
            s.close()


def test_store_type_is_chosen_by_url(tmp_path: Path) -> None:
    s: Store = open_store(f"sqlite:{tmp_path}/x.db")
    assert s.dialect == "sqlite"
    s.close()

"""The transparency log in the real stores (SQLite, PostgreSQL): indices, tiles, proofs, checkpoints, takeover."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregator import TrustStore, Verifier, open_store
from aggregator.config import LogSettings
from aggregator.tlog import LogIntegrator, TileCache
from aggregator.trust import load_certificates
from envelope import NoteSigner
from envelope.merkle import (
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from envelope.note import open_checkpoint
from tests.integration.test_agg_store import PG_URL, drop_schema, verify_all
from tests.unit.test_agg_support import fleet_with

pytestmark = pytest.mark.integration

SIGNER = NoteSigner("example.net/test-log", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
SETTINGS = LogSettings(key_file="unused", origin=SIGNER.name, checkpoint_interval_s=0.01, integrate_max=7)


@pytest.fixture
def pg_schema():
    schema = "tlog_" + uuid.uuid4().hex[:12]
    try:
        yield schema
    finally:
        drop_schema(schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path, pg_schema: str):
    yield (str(tmp_path / "agg.db"), None) if request.param == "sqlite" else (PG_URL, pg_schema)


@pytest.fixture
def world(tmp_path: Path):
    fleet, devs = fleet_with(tmp_path, "dev-a", "dev-b")
    return devs, Verifier(TrustStore(load_certificates(fleet.ca_cert)))


def _stored(store, v, devs, n):
    a, b = devs
    recs = verify_all(v, [a.birth(), b.birth()] + [(a if i % 3 else b).record() for i in range(n)])
    store.commit_batch(recs)
    return recs


def test_indices_tiles_proofs_and_checkpoints(store_url, world) -> None:
    devs, v = world
    store = open_store(store_url[0], schema=store_url[1])
    try:
        _stored(store, v, devs, 40)
        integ = LogIntegrator(SIGNER, SETTINGS, "w1")
        cp = integ.tick(store, 1000)
        assert cp is not None and cp.size == 42 and integ.counters["integrated"] == 42  # 6 transactions of 7
        entries = store.log_entries(0, 1000)
        assert [e.index for e in entries] == list(range(42))
        leaves = [leaf_hash(e.record) for e in entries]
        assert cp.root == root_of(leaves) == store.log_state()[1]
        checkpoint, _ = open_checkpoint(cp.note, [SIGNER.verifier], origin=SIGNER.name)
        assert (checkpoint.size, checkpoint.root) == (42, cp.root)
        tiles = TileCache(store.log_tile)
        for i in range(42):
            verify_inclusion(i, 42, leaves[i], inclusion_proof(i, 42, tiles.node), cp.root)
        assert tiles.reads <= 2
        # the interval holds a checkpoint back; growth after it gives a consistent one
        _stored(store, v, devs, 300)
        assert integ.tick(store, 1005, force=True) is None  # integrated, but only 5 ms after the last checkpoint
        cp2 = integ.tick(store, 1100)
        assert cp2 is not None and cp2.size == 344
        from envelope.merkle import consistency_proof
        verify_consistency(42, 344, consistency_proof(42, 344, TileCache(store.log_tile).node), cp.root, cp2.root)
        assert store.log_latest_checkpoint() == cp2
        first = entries[5]
        assert store.log_index_of(first.device_id, first.seq) == 5
    finally:
        store.close()


def test_reopen_resumes_the_tree(store_url, world) -> None:
    devs, v = world
    store = open_store(store_url[0], schema=store_url[1])
    _stored(store, v, devs, 300)
    LogIntegrator(SIGNER, SETTINGS, "w1").tick(store, 1000)
    store.close()
    store = open_store(store_url[0], schema=store_url[1])
    try:
        a, _ = devs
        store.commit_batch(verify_all(v, [a.record() for _ in range(20)]))
        cp = LogIntegrator(SIGNER, SETTINGS, "w2").tick(store, 5000)
        assert cp is not None and cp.size == 322
        assert cp.root == root_of([leaf_hash(e.record) for e in store.log_entries(0, 10_000)])
    finally:
        store.close()


def test_a_forked_store_is_never_signed(tmp_path: Path, world) -> None:
    """A record rewritten and the tiles rebuilt behind the log: the integrator refuses to sign the fork."""
    devs, v = world
    path = tmp_path / "agg.db"
    store = open_store(str(path))
    _stored(store, v, devs, 10)
    integ = LogIntegrator(SIGNER, SETTINGS, "w1")
    assert integ.tick(store, 1000) is not None
    with sqlite3.connect(path) as db:  # rebuild the whole log from scratch with record 3 changed
        (rec,) = db.execute("SELECT record FROM records WHERE log_index = 3").fetchone()
        db.execute("UPDATE records SET record = ? WHERE log_index = 3", (b"\x00" + rec,))
        db.execute("UPDATE records SET log_index = NULL")
        db.execute("DELETE FROM log_tiles")
        db.execute("DELETE FROM log_state")
    _stored(store, v, devs, 5)
    integ2 = LogIntegrator(SIGNER, SETTINGS, "w2")
    assert integ2.tick(store, 2000) is None
    latest = store.log_latest_checkpoint()
    assert integ2.counters["forks_refused"] == 1 and latest is not None and latest.size == 12
    store.close()


def test_postgres_one_leader_and_takeover(world, pg_schema) -> None:
    devs, v = world
    s1, s2 = open_store(PG_URL, schema=pg_schema), open_store(PG_URL, schema=pg_schema)
    try:
        _stored(s1, v, devs, 30)
        i1, i2 = LogIntegrator(SIGNER, SETTINGS, "w1"), LogIntegrator(SIGNER, SETTINGS, "w2")
        assert i1.tick(s1, 1000) is not None and i1.leader
        assert i2.tick(s2, 1000) is None and not i2.leader
        s1.close()  # the leader's connection dies: its session lock goes with it
        _stored(s2, v, devs, 5)
        deadline = time.monotonic() + 5
        cp = None
        while cp is None and time.monotonic() < deadline:
            cp = i2.tick(s2, 2000, force=True)
        assert cp is not None
        assert (cp.size, cp.issuer, i2.leader) == (39, "w2", True)
    finally:
        s2.close()


def test_postgres_concurrent_integrators_never_assign_an_index_twice(world, pg_schema) -> None:
    """Even without the lock (both think they lead), the log_state row serialises integration."""
    devs, v = world
    stores = [open_store(PG_URL, schema=pg_schema) for _ in range(3)]
    try:
        for s in stores:
            s._log_lead = True  # simulate a lost lock: everybody integrates
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                integ = LogIntegrator(SIGNER, SETTINGS, f"w{i}")
                for k in range(15):
                    if i == 0:
                        _stored(stores[0], v, devs, 7)
                    integ.tick(stores[i], 1000 + k * 100, force=True)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        LogIntegrator(SIGNER, SETTINGS, "final").tick(stores[0], 10_000, force=True)
        entries = stores[0].log_entries(0, 10**6)
        assert [e.index for e in entries] == list(range(len(entries))) and len(entries) == 15 * 9
        assert stores[0].log_state()[1] == root_of([leaf_hash(e.record) for e in entries])
    finally:
        for s in stores:
            s.close()


def test_schema_1_store_gains_the_log_column(tmp_path: Path, world) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the records table as schema 1 made it
        db.execute("CREATE TABLE records (device_id TEXT NOT NULL, seq BIGINT NOT NULL, epoch BIGINT NOT NULL, "
                   "kind TEXT NOT NULL, stream TEXT NOT NULL, iat BIGINT NOT NULL, capture_ms BIGINT NOT NULL, "
                   "clock_state SMALLINT NOT NULL, skew_flags SMALLINT NOT NULL, received_ms BIGINT NOT NULL, "
                   "kid BLOB NOT NULL, model_sha256 BLOB, input_sha256 BLOB, record BLOB NOT NULL, "
                   "PRIMARY KEY (device_id, seq))")
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    devs, v = world
    store = open_store(str(path))
    try:
        _stored(store, v, devs, 3)
        cp = LogIntegrator(SIGNER, SETTINGS, "w").tick(store, 1)
        assert cp is not None and cp.size == 5
    finally:
        store.close()

"""The log over HTTP (C2SP tlog-tiles) read by an independent client written from the spec (tests/support)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.routing import Mount

from aggregator import open_store
from aggregator.config import LogSettings
from aggregator.tlog import LogIntegrator
from aggregator.tlog.http import routes
from envelope import NoteSigner
from envelope.merkle import leaf_hash
from tests.support.tlog_client import TlogClient
from tests.support.webserver import serving

pytestmark = pytest.mark.integration

SIGNER = NoteSigner("example.net/http-log", Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def fill(path: Path, first: int, n: int) -> None:
    """Synthetic stored records (the log treats entries as opaque bytes): fast to make in bulk."""
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO records (device_id, seq, epoch, kind, stream, iat, capture_ms, clock_state, skew_flags, "
            "received_ms, kid, record) VALUES ('dev-x', ?, 1, 'result', 'vib', 0, 0, 1, 0, ?, X'00', ?)",
            [(s, s, b"entry %d " % s + b"x" * (s % 300)) for s in range(first, first + n)])


def integrate(store, now_ms: int):
    settings = LogSettings(key_file="-", origin=SIGNER.name, checkpoint_interval_s=0.01, integrate_max=100_000)
    return LogIntegrator(SIGNER, settings, "w").tick(store, now_ms)


@pytest.fixture
def served(tmp_path: Path):
    path = tmp_path / "agg.db"
    store = open_store(str(path))
    app = Starlette(routes=[Mount("/log", routes=routes(open_store(str(path), create=False)))])
    with serving(app) as base:
        yield path, store, base
    store.close()


def test_an_independent_client_reads_and_checks_the_whole_log(served) -> None:
    path, store, base = served
    client = TlogClient(f"{base}/log", SIGNER.vkey)
    assert httpx.get(f"{base}/log/checkpoint").status_code == 404  # before the first checkpoint
    fill(path, 1, 66_000)  # 257 full level-0 tiles, a full level-1 tile, partial tiles at levels 0, 1 and 2
    assert integrate(store, 1000) is not None
    got = client.check()
    assert got.size == 66_000 and got.origin == SIGNER.name
    assert got.entries[41] == b"entry 42 " + b"x" * 42
    fill(path, 66_001, 300)  # grows: the old partial tiles are prefixes of the new ones
    assert integrate(store, 2000) is not None
    assert client.check().size == 66_300
    assert client.tile(0, 257, 208 - 0)[:10] == client.tile(0, 257, 10)


def test_layout_headers_and_refusals(served) -> None:
    path, store, base = served
    fill(path, 1, 300)
    integrate(store, 1000)
    r = httpx.get(f"{base}/log/checkpoint")
    assert r.headers["content-type"] == "text/plain; charset=utf-8" and "no-cache" in r.headers["cache-control"]
    r = httpx.get(f"{base}/log/tile/0/000")
    assert r.status_code == 200 and len(r.content) == 8192 and "immutable" in r.headers["cache-control"]
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.content[:32] == leaf_hash(b"entry 1 " + b"x")
    r = httpx.get(f"{base}/log/tile/entries/001.p/44", headers={"Accept-Encoding": "gzip"})
    assert r.headers.get("content-encoding") == "gzip" and r.content.startswith((len(b"entry 257 ") + 257 % 300)
                                                                                 .to_bytes(2, "big") + b"entry 257 ")
    for bad in ("tile/0/001.p/45", "tile/0/002", "tile/0/001", "tile/1/000", "tile/0/x000/001", "tile/00/000",
                "tile/entries/001.p/45", "tile/0/000.p/256", "tile/entries/002"):
        assert httpx.get(f"{base}/log/{bad}").status_code == 404, bad
    assert httpx.get(f"{base}/log/tile/0/001.p/3").content == httpx.get(f"{base}/log/tile/0/001.p/44").content[:96]
    assert httpx.post(f"{base}/log/checkpoint").status_code == 405

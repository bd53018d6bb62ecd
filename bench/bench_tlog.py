"""L1–L5: the transparency log (DESIGN §9): append + tiles rate, proofs at 10^7 entries, bytes per entry, e2e.

Why: every stored record goes through the integrator (leaf hash, tiles, one UPDATE), so it must keep up with
the aggregator; a receipt carries an inclusion and a consistency proof built from stored tiles; the tiles and
the index are stored forever.

* L1 — log append + tiles, entries/s on one core: a SQLite store holding N committed records (≈300 bytes,
  like a result record) is integrated by ``LogIntegrator`` (leaf hashes, tiles with their inner rows, the
  ``log_index`` UPDATE, one signed checkpoint), timed end to end. Baseline in the same run: SHA-256 of the
  same entries alone (the floor of any RFC 6962 log).
* L2 — proof for a receipt at 10^7 entries (inclusion of a recent leaf + consistency from a slightly older
  checkpoint), from tiles in a SQLite ``log_tiles`` table, through the same ``TileCache`` the receipts use.
  The tree is *synthetic*, not 10^7 stored rows: the tiles on the proof paths and on the right border are
  real tiles (inner rows hashed from row 0, each parent entry the hash of its child tile), every hash off
  those paths is a pseudo-random stand-in for a subtree that is never materialised. Proof generation and
  verification run the production code on it and the proofs verify against the root the tiles imply.
  Warm cache (what a running worker sees) is the goal figure; cold (every tile read from SQLite) in the note.
* L3 — the same for a uniformly random leaf (an old record), warm cache.
* L5 — aggregator end to end (Mosquitto → ``AggregatorService`` → SQLite, 4 devices) with ``[log]`` on, records
  stored *and* given a log index per second, against the same run with the log off (baseline, same records,
  alternated): the log's cost on the whole worker.
* L4 — storage: bytes per entry the log adds to the SQLite file, from SQLite's ``dbstat`` in L1's store:
  the log's tables and indexes after integration plus the growth of the ``records`` table (``log_index``).

Run: ``.venv/bin/python bench/bench_tlog.py [--quick]``.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from aggregator.config import LogSettings  # noqa: E402
from aggregator.store import open_store  # noqa: E402
from aggregator.tlog import LogIntegrator, TileCache  # noqa: E402
from bench.common import fmt, median, row, spread, standalone_main  # noqa: E402
from envelope import NoteSigner  # noqa: E402
from envelope.merkle import (  # noqa: E402
    TILE_HEIGHT,
    TILE_WIDTH,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    partial_tiles,
    tile_width,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

SIGNER = NoteSigner("bench/log", Ed25519PrivateKey.from_private_bytes(bytes(32)))
BIG = 10_000_000


def _entry(i: int) -> bytes:
    return b"\xd2\x84" + hashlib.sha256(b"%d" % i).digest() * 9 + b"%08d" % i  # ~300 bytes, distinct


def fill(path: Path, n: int) -> None:
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO records (device_id, seq, epoch, kind, stream, iat, capture_ms, clock_state, skew_flags, "
            "received_ms, kid, record) VALUES (?, ?, 1, 'result', 'vib', 0, 0, 1, 0, ?, ?, ?)",
            ((f"dev-{i % 100:03d}", i, i, b"k" * 16, _entry(i)) for i in range(1, n + 1)))


LOG_OBJECTS = ("log_tiles", "sqlite_autoindex_log_tiles_1", "log_state", "log_checkpoints",
               "sqlite_autoindex_log_checkpoints_1", "log_receipts", "sqlite_autoindex_log_receipts_1",
               "records_log_index", "records_unlogged")


def object_bytes(path: Path) -> dict[str, int]:
    """Bytes of every table and index (SQLite's dbstat), after a WAL checkpoint."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {name: int(n) for name, n in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")}


def log_bytes(before: dict[str, int], after: dict[str, int]) -> int:
    """What the log adds: its tables and indexes as they are after integration (the queue index is then
    empty, as in steady state), plus the growth of the records table (the ``log_index`` column)."""
    return sum(after.get(n, 0) for n in LOG_OBJECTS) + after["records"] - before["records"]


def append_rate(n: int, workdir: Path) -> tuple[float, float, float]:
    """(entries/s of integration, SHA-256-only entries/s, log bytes per entry) over ``n`` stored records."""
    path = workdir / f"l1-{n}.db"
    store = open_store(str(path))
    try:
        fill(path, n)
        before = object_bytes(path)
        entries = [_entry(i) for i in range(1, n + 1)]
        t = time.perf_counter()
        for e in entries:
            leaf_hash(e)
        hash_rate = n / (time.perf_counter() - t)
        integ = LogIntegrator(SIGNER, LogSettings(key_file="-", origin=SIGNER.name, integrate_max=20_000), "bench")
        t = time.perf_counter()
        cp = integ.tick(store, 1_000)
        rate = n / (time.perf_counter() - t)
        assert cp is not None and cp.size == n
        per_entry = log_bytes(before, object_bytes(path)) / n
    finally:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    return rate, hash_rate, per_entry


class SyntheticTiles:
    """Tiles of a tree of ``size`` leaves, materialised only on the paths of ``indices`` and the right border."""

    def __init__(self, size: int, indices: list[int], seed: int = 7) -> None:
        self.size = size
        self.seed = seed
        self.needed: set[tuple[int, int]] = set()
        levels = 0
        while size >> (TILE_HEIGHT * levels):
            levels += 1
        for i in [*indices, size - 1]:
            for lv in range(levels):
                self.needed.add((lv, i >> (TILE_HEIGHT * (lv + 1))))
        for lv, ix, _ in partial_tiles(size):
            self.needed.add((lv, ix))
        self.tiles: dict[tuple[int, int], tuple[int, bytes, bytes]] = {}  # -> (width, stored data, tile root)

    def _stand_in(self, level: int, index: int) -> bytes:
        return hashlib.sha256(b"stand-in %d %d %d" % (self.seed, level, index)).digest()

    def build(self, level: int, index: int) -> tuple[int, bytes, bytes]:
        key = (level, index)
        if key in self.tiles:
            return self.tiles[key]
        width = tile_width(level, index, self.size)
        row0 = []
        for i in range(width):
            child = (level - 1, index * TILE_WIDTH + i)
            if level == 0:
                row0.append(leaf_hash(b"synthetic entry %d" % (index * TILE_WIDTH + i)))
            elif child in self.needed and tile_width(*child, self.size) == TILE_WIDTH:
                row0.append(self.build(*child)[2])
            else:
                row0.append(self._stand_in(*child))
        rows = [row0]
        for _ in range(1, TILE_HEIGHT):
            prev = rows[-1]
            rows.append([node_hash(prev[j], prev[j + 1]) for j in range(0, len(prev) - 1, 2)])
        root = node_hash(rows[-1][0], rows[-1][1]) if width == TILE_WIDTH else b""
        self.tiles[key] = (width, b"".join(b"".join(r) for r in rows), root)
        return self.tiles[key]

    def store_into(self, path: Path) -> None:
        for key in sorted(self.needed):
            self.build(*key)
        with sqlite3.connect(path) as db:
            db.executemany("INSERT INTO log_tiles (level, idx, width, nodes) VALUES (?, ?, ?, ?)",
                           [(lv, ix, w, data) for (lv, ix), (w, data, _) in self.tiles.items()])


def proof_times(workdir: Path, quick: bool) -> dict[str, Any]:
    """Receipt proofs at 10^7 entries: warm and cold µs, for recent and for random leaves."""
    rng = random.Random(11)
    samples = 50 if quick else 300
    recent = [BIG - 1 - rng.randrange(20_000) for _ in range(samples)]
    uniform = [rng.randrange(BIG) for _ in range(samples)]
    prev_size = BIG - 1_234  # the device's previous receipt, a checkpoint or so ago
    synth = SyntheticTiles(BIG, [*recent, *uniform, prev_size - 1])
    path = workdir / "l2.db"
    store = open_store(str(path))
    synth.store_into(path)
    try:
        warm = TileCache(store.log_tile)
        root = tree_root(BIG, warm.node)
        prev_root = tree_root(prev_size, warm.node)
        out: dict[str, Any] = {"tiles": len(synth.tiles)}
        for name, indices in (("recent", recent), ("uniform", uniform)):
            times, cold, verify = [], [], []
            for i in indices:
                cache = TileCache(store.log_tile)
                t = time.perf_counter()
                inclusion_proof(i, BIG, cache.node)
                consistency_proof(prev_size, BIG, cache.node)
                cold.append((time.perf_counter() - t) * 1e6)
                t = time.perf_counter()
                inc = inclusion_proof(i, BIG, warm.node)
                cons = consistency_proof(prev_size, BIG, warm.node)
                times.append((time.perf_counter() - t) * 1e6)
                leaf = leaf_hash(b"synthetic entry %d" % i)
                t = time.perf_counter()
                verify_inclusion(i, BIG, leaf, inc, root)
                verify_consistency(prev_size, BIG, cons, prev_root, root)
                verify.append((time.perf_counter() - t) * 1e6)
            out[name] = (times, cold, verify, len(inc) + len(cons))
        return out
    finally:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def end_to_end(records: list[tuple[str, bytes]], fleet: Any, tmp: Path, with_log: bool) -> float:
    """Records/s through one worker: until all are stored (and, with the log, integrated)."""
    import dataclasses
    import uuid

    from aggregator import AggregatorConfig, AggregatorService, MqttSettings, StoreSettings, TrustSettings
    from bench.bench_aggregator import _publish_all
    from provisioning import create_file_key
    from tests.support.mosquitto import Mosquitto

    broker = Mosquitto().start()
    tag = uuid.uuid4().hex[:6]
    try:
        cfg = AggregatorConfig(mqtt=MqttSettings(url=broker.url, client_id=f"bench-{tag}"),
                               store=StoreSettings(url=str(tmp / f"e2e-{tag}.db")),
                               trust=TrustSettings(ca_files=(str(fleet.ca_cert),)))
        if with_log:
            key = tmp / f"log-{tag}" / "log.key"
            create_file_key(key, "ed25519")
            cfg = dataclasses.replace(cfg, log=LogSettings(key_file=str(key), origin="bench/log"))
        svc = AggregatorService(cfg)
        svc.start()
        try:
            t = time.perf_counter()
            _publish_all(broker.port, records)
            deadline = time.monotonic() + 300

            def done() -> bool:
                if svc.stats().stored < len(records):
                    return False
                return not with_log or (svc.log_integrator is not None
                                        and svc.log_integrator.counters["integrated"] >= len(records))

            while not done() and time.monotonic() < deadline:
                time.sleep(0.005)
            elapsed = time.perf_counter() - t
            stored = svc.stats().stored
        finally:
            svc.stop()
        return stored / elapsed
    finally:
        broker.cleanup()


def e2e_rows(quick: bool, work: Path) -> list[dict[str, Any]]:
    from bench.bench_aggregator import _fleet, _records

    n, rounds = (3000, 1) if quick else (20_000, 2)
    fleet, devs = _fleet(work, 4)
    records = _records(devs, n)
    off, on = [], []
    for _ in range(rounds):  # alternated, so load changes hit both
        off.append(end_to_end(records, fleet, work, with_log=False))
        on.append(end_to_end(records, fleet, work, with_log=True))
    value, base = median(on), median(off)
    return [row("L5", "aggregator end to end with the log, records/s (stored + indexed)", value, "records/s",
                baseline=f"log off {fmt(base)}/s", ratio=value / base, goal="ratio ≥ 0.90",
                note=f"{spread(on)} vs {spread(off)}; {n:,} records of 4 devices through Mosquitto into one "
                     "AggregatorService on SQLite; with the log, until every record also has its index")]


def run(quick: bool) -> list[dict[str, Any]]:
    """L1–L5 rows."""
    n = 20_000 if quick else 200_000
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="bench-tlog-") as tmp:
        work = Path(tmp)
        runs = [append_rate(n, work) for _ in range(repeats)]
        proofs = proof_times(work, quick)
        e2e = e2e_rows(quick, work)
    rates, hashes, sizes = [r[0] for r in runs], [r[1] for r in runs], [r[2] for r in runs]
    rate, base = median(rates), median(hashes)
    rows = [row("L1", "log append + tiles, entries/s (one core, SQLite)", rate, "entries/s",
                baseline=f"SHA-256 of the entries alone {fmt(base)}/s", ratio=rate / base, goal="≥ 20,000",
                note=f"{spread(rates)}; {n:,} stored records of ≈300 B integrated by LogIntegrator (indices, "
                     "tiles with inner rows, one checkpoint) in transactions of 20,000")]
    for rid, name, goal in (("L2", "recent", "≤ 100"), ("L3", "uniform", "report")):
        times, cold, verify, hashes_n = proofs[name]
        value = median(times)
        rows.append(row(rid, f"receipt proofs at 10^7 entries, {name} leaf (warm tiles), µs", value, "µs",
                        baseline=f"cold tiles {fmt(median(cold))} µs", ratio=value / median(cold), goal=goal,
                        passed=(value <= 100) if goal != "report" else None,
                        note=f"{spread(times)}; inclusion + consistency ({hashes_n} hashes) from a synthetic "
                             f"tree (real tiles on the proof paths, {proofs['tiles']} tiles in SQLite); "
                             f"device-side verification {fmt(median(verify))} µs"))
    size = median(sizes)
    rows.append(row("L4", "log storage per entry beyond the record, bytes", size, "bytes/entry",
                    goal="≤ 100", passed=size <= 100,
                    note=f"{spread(sizes)}; SQLite dbstat after integrating {n:,} entries: log tables and "
                         "indexes + growth of the records table (tiles: 510 hashes per 256 entries ≈ 64 B)"))
    return rows + e2e


def main() -> None:
    standalone_main(run, (__doc__ or "").splitlines()[0])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()

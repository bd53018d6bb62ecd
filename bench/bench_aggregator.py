"""B8: aggregator throughput: verified + stored records/s per worker, against a raw verify loop.

Rows: the raw loop (parse + P-256 verify, the baseline), the worker core (verify + SQLite group commit,
no broker), one ``AggregatorService`` end to end through Mosquitto on SQLite, and two
``edge-aggregator run`` processes on a shared subscription with PostgreSQL (per worker).
Run: ``.venv/bin/python bench/bench_aggregator.py [--quick]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aggregator import (  # noqa: E402
    AggregatorConfig,
    AggregatorService,
    MqttSettings,
    StoreSettings,
    TrustSettings,
    TrustStore,
    Verifier,
    open_store,
)
from aggregator.trust import load_certificates  # noqa: E402
from bench.common import standalone_main  # noqa: E402
from envelope import open_record  # noqa: E402

GOAL = 8000.0
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _fleet(tmp: Path, n: int):
    from tests.unit.test_agg_support import fleet_with

    return fleet_with(tmp, *[f"bench-{i}" for i in range(n)])


def _records(devs, n: int) -> list[tuple[str, bytes]]:
    out = [d.birth() for d in devs]
    while len(out) < n:
        for d in devs:
            out.append(d.record("result"))
    return out[:n]


def raw_verify(records: list[tuple[str, bytes]], devs) -> float:
    keys = {d.signer.kid: d.signer.public_key() for d in devs}
    t = time.perf_counter()
    for _, data in records:
        rec = open_record(data)
        rec.verify(keys[rec.kid])
    return len(records) / (time.perf_counter() - t)


def core_sqlite(records: list[tuple[str, bytes]], ca: Path, tmp: Path, batch: int = 500) -> float:
    v = Verifier(TrustStore(load_certificates(ca)))
    store = open_store(str(tmp / f"core-{uuid.uuid4().hex[:6]}.db"))
    now = int(time.time() * 1000)
    t = time.perf_counter()
    for k in range(0, len(records), batch):
        store.commit_batch([v.verify(topic, data, now) for topic, data in records[k:k + batch]])
    rate = len(records) / (time.perf_counter() - t)
    store.close()
    return rate


_PUBLISHER = """
import sys, cbor2, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
records = cbor2.loads(open(sys.argv[2], "rb").read())
c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
c.max_inflight_messages_set(200)
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_start()
infos = [c.publish(t, d, qos=1) for t, d in records]
for i in infos:
    i.wait_for_publish(120)
c.disconnect()
c.loop_stop()
"""


def _publish_all(port: int, records: list[tuple[str, bytes]]) -> None:
    """Publish from a separate process, so the publisher does not share the aggregator's GIL."""
    import subprocess

    import cbor2

    with tempfile.NamedTemporaryFile(suffix=".cbor") as f:
        f.write(cbor2.dumps([list(r) for r in records]))
        f.flush()
        subprocess.run([sys.executable, "-c", _PUBLISHER, str(port), f.name], check=True, timeout=600)


def service_sqlite(records, fleet, tmp: Path) -> float:
    from tests.support.mosquitto import Mosquitto

    broker = Mosquitto().start()
    try:
        cfg = AggregatorConfig(mqtt=MqttSettings(url=broker.url, client_id=f"bench-{uuid.uuid4().hex[:6]}"),
                               store=StoreSettings(url=str(tmp / "svc.db")),
                               trust=TrustSettings(ca_files=(str(fleet.ca_cert),)))
        svc = AggregatorService(cfg)
        svc.start()
        try:
            t = time.perf_counter()
            _publish_all(broker.port, records)
            deadline = time.monotonic() + 300
            while svc.stats().stored < len(records) and time.monotonic() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - t
            stored = svc.stats().stored
        finally:
            svc.stop()
        return stored / elapsed
    finally:
        broker.cleanup()


def two_workers_pg(records, fleet, tmp: Path) -> float | None:
    try:
        import psycopg

        psycopg.connect(PG_URL).close()
    except Exception:
        return None
    from tests.integration.test_agg_badinput import AggregatorProcess, write_config
    from tests.support.mosquitto import Mosquitto

    schema = "bench_" + uuid.uuid4().hex[:8]
    broker = Mosquitto().start()
    procs = []
    try:
        for w in range(2):
            cfg = write_config(tmp / f"w{w}.toml", port=broker.port, client_id=f"bench-w{w}-{schema}",
                               store=PG_URL, schema=schema, ca=fleet.ca_cert, crl=fleet.crl, group="bench")
            procs.append(AggregatorProcess(cfg, tmp / f"w{w}.log").start())
        t = time.perf_counter()
        _publish_all(broker.port, records)
        deadline = time.monotonic() + 300
        n = 0
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute(f'SELECT count(*) FROM "{schema}".records').fetchone()
                n = int(row[0]) if row else 0
                if n >= len(records):
                    break
                time.sleep(0.02)
        return n / (time.perf_counter() - t)
    finally:
        for p in procs:
            p.stop()
        broker.cleanup()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure and return the B8 rows (id, name, value, unit, baseline, ratio, goal)."""
    n = 4000 if quick else 20000
    with tempfile.TemporaryDirectory(prefix="bench-agg-") as d:
        tmp = Path(d)
        fleet, devs = _fleet(tmp, 4)
        records = _records(devs, n)
        base = raw_verify(records, devs)
        rows = []

        def row(rid: str, name: str, value: float | None, goal: float | None) -> None:
            if value is None:
                return
            rows.append({"id": rid, "name": name, "value": round(value, 1), "unit": "records/s",
                         "baseline": round(base, 1), "ratio": round(value / base, 3), "goal": goal})

        row("B8.0", "raw loop: open_record + P-256 verify (baseline)", base, None)
        row("B8.1", "worker core: verify + SQLite group commit (no broker)", core_sqlite(records, fleet.ca_cert, tmp),
            GOAL)
        row("B8.2", "1 worker end to end: Mosquitto -> AggregatorService -> SQLite",
            service_sqlite(records, fleet, tmp), GOAL)
        total = two_workers_pg(records, fleet, tmp)
        row("B8.3", "2 workers end to end, shared subscription, PostgreSQL (total)", total, None)
        row("B8.4", "2 workers end to end, PostgreSQL (per worker)", None if total is None else total / 2, None)
        return rows


def main() -> int:
    standalone_main(run, (__doc__ or "").splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())

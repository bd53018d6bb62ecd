"""B8: aggregator throughput: verified + stored records/s per worker, against a raw verify loop.

Rows: the raw loop (parse + P-256 verify, the baseline), the worker core (verify + SQLite group commit,
no broker), one ``AggregatorService`` end to end through Mosquitto on SQLite, and two
``edge-aggregator run`` processes on a shared subscription with PostgreSQL (per worker).
Run: ``.venv/bin/python bench/bench_aggregator.py [--quick]``.
"""

from __future__ import annotations

import sys
import tempfile
import threading
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
from aggregator.config import IdentitySettings, LogSettings  # noqa: E402
from aggregator.trust import load_certificates  # noqa: E402
from bench.common import standalone_main  # noqa: E402
from envelope import open_record  # noqa: E402

GOAL = 8000.0
PG_SCALE = 1.7  # two workers on PostgreSQL against one, same run
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


class _Breakdown:
    """CPU seconds per stage of one ``AggregatorService``: thread CPU of paho's network thread (MQTT receive)
    and, inside the store thread, time spent verifying, committing, acking to the broker, sealing and
    publishing receipts (wrappers around the service's own objects, ``time.thread_time``)."""

    STAGES = ("verify", "store", "broker_ack", "log", "receipts")

    def __init__(self, svc: AggregatorService) -> None:
        self.cpu = dict.fromkeys(self.STAGES, 0.0)
        self._wrap(svc.verifier, "verify", "verify")
        assert svc._store is not None and svc._link is not None
        self._wrap(svc._store, "commit_batch", "store")
        self._wrap(svc._link, "ack", "broker_ack")
        self._wrap(svc, "_publish_receipts", "receipts")
        if svc.log_integrator is not None:
            self._wrap(svc, "_tick_log", "log")
        self._svc = svc

    def _wrap(self, obj: Any, name: str, stage: str) -> None:
        inner = getattr(obj, name)
        cpu = self.cpu
        clock = time.thread_time

        def timed(*a: Any, **k: Any) -> Any:
            t0 = clock()
            try:
                return inner(*a, **k)
            finally:
                cpu[stage] += clock() - t0

        setattr(obj, name, timed)

    def threads(self) -> dict[str, float]:
        import psutil

        names = {t.native_id: t.name for t in threading.enumerate()}
        return {names.get(t.id, str(t.id)): t.user_time + t.system_time for t in psutil.Process().threads()}


def log_key(tmp: Path) -> Path:
    """A throwaway Ed25519 transparency-log key (what ``edge-provision log init`` makes)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from provisioning import write_private_key

    path = tmp / f"log-{uuid.uuid4().hex[:6]}.key"
    write_private_key(path, ed25519.Ed25519PrivateKey.generate())
    return path


def service_sqlite(records, fleet, tmp: Path, identity: bool = True,
                   log: bool = True) -> tuple[float, dict[str, float]]:
    """One worker end to end on SQLite, receipts signed (unless not ``identity``) and the transparency log on
    (unless not ``log``); (records/s, CPU µs per record by stage)."""
    from tests.support.mosquitto import Mosquitto

    broker = Mosquitto().start()
    try:
        ident = fleet.identity()
        cfg = AggregatorConfig(mqtt=MqttSettings(url=broker.url, client_id=f"bench-{uuid.uuid4().hex[:6]}"),
                               store=StoreSettings(url=str(tmp / f"svc-{uuid.uuid4().hex[:6]}.db")),
                               trust=TrustSettings(ca_files=(str(fleet.ca_cert),)),
                               identity=IdentitySettings(key=ident["key"], cert_file=ident["cert_file"])
                               if identity else IdentitySettings(),
                               log=LogSettings(key_file=str(log_key(tmp)), origin=f"{fleet.name}/bench")
                               if log else LogSettings())
        svc = AggregatorService(cfg)
        svc.start()
        bd = _Breakdown(svc)
        try:
            th0 = bd.threads()
            t = time.perf_counter()
            _publish_all(broker.port, records)
            deadline = time.monotonic() + 300
            while svc.stats().stored < len(records) and time.monotonic() < deadline:
                time.sleep(0.01)
            elapsed = time.perf_counter() - t
            th1 = bd.threads()
            stats = svc.stats()
        finally:
            svc.stop()
        n = max(1, stats.stored)
        per = {k: v / n * 1e6 for k, v in bd.cpu.items()}
        per["mqtt_receive"] = sum(v - th0.get(k, 0.0) for k, v in th1.items() if k.startswith("paho")) / n * 1e6
        store_thread = th1.get("aggregator-store", 0.0) - th0.get("aggregator-store", 0.0)
        per["store_thread_other"] = store_thread / n * 1e6 - sum(per[k] for k in _Breakdown.STAGES)
        per["receipts_published"] = float(stats.acks_published)
        return stats.stored / elapsed, per
    finally:
        broker.cleanup()


def workers_pg(records, fleet, tmp: Path, workers: int = 2) -> float | None:
    """``workers`` ``edge-aggregator run`` processes on one shared subscription and PostgreSQL schema."""
    try:
        import psycopg

        psycopg.connect(PG_URL).close()
    except Exception:
        return None
    from tests.integration.test_agg_badinput import AggregatorProcess, write_config
    from tests.support.mosquitto import Mosquitto

    schema = "bench_" + uuid.uuid4().hex[:8]
    key = log_key(tmp)
    broker = Mosquitto().start()
    procs = []
    try:
        for w in range(workers):
            cfg = write_config(tmp / f"w{w}-{schema}.toml", port=broker.port, client_id=f"bench-w{w}-{schema}",
                               store=PG_URL, schema=schema, ca=fleet.ca_cert, crl=fleet.crl, group="bench",
                               identity=fleet.identity())
            with open(cfg, "a") as f:  # the transparency log, one key and origin for every worker
                f.write(f'\n[log]\nkey_file = "{key}"\norigin = "{fleet.name}/bench"\n')
            procs.append(AggregatorProcess(cfg, tmp / f"w{w}-{schema}.log").start())
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
    """Measure and return the B8 rows."""
    from bench.common import fmt, row

    n = 4000 if quick else 20000
    with tempfile.TemporaryDirectory(prefix="bench-agg-") as d:
        tmp = Path(d)
        fleet, devs = _fleet(tmp, 4)
        records = _records(devs, n)
        base = raw_verify(records, devs)
        core = core_sqlite(records, fleet.ca_cert, tmp)
        one, per = service_sqlite(records, fleet, tmp)
        pg1 = workers_pg(records, fleet, tmp, 1)
        pg2 = workers_pg(records, fleet, tmp, 2)
        base_s = f"raw open + verify {fmt(base)}/s"
        breakdown = ", ".join(f"{k.replace('_', ' ')} {fmt(per[k])}" for k in
                              ("mqtt_receive", "verify", "store", "broker_ack", "log", "receipts",
                            "store_thread_other"))
        rows = [
            row("B8.0", "raw loop: open_record + P-256 verify (baseline)", base, "records/s", goal="report"),
            row("B8.1", "worker core: verify + SQLite group commit (no broker)", core, "records/s", baseline=base_s,
                ratio=core / base, goal=f"≥ {GOAL:,.0f} records/s"),
            row("B8.2", "1 worker end to end: Mosquitto -> AggregatorService -> SQLite, receipts + log", one,
                "records/s", baseline=base_s, ratio=one / base, goal=f"≥ {GOAL:,.0f} records/s",
                note=f"log on; CPU µs/record: {breakdown}; {per['receipts_published']:.0f} receipts"),
        ]
        if pg1 is not None and pg2 is not None:
            rows += [
                row("B8.3", "1 worker end to end, PostgreSQL, receipts + log", pg1, "records/s", baseline=base_s,
                    ratio=pg1 / base,
                    goal="report"),
                row("B8.4", "2 workers end to end, shared subscription, PostgreSQL (total)", pg2, "records/s",
                    baseline=f"1 worker on PostgreSQL {fmt(pg1)}/s", ratio=pg2 / pg1, goal=f"≥ {PG_SCALE} × 1 worker",
                    note=f"{fmt(pg2 / 2)} records/s per worker"),
            ]
        else:
            rows.append({**row("B8.3", "workers on PostgreSQL", None, "records/s"), "skipped": True,
                         "note": f"skipped: no PostgreSQL at {PG_URL}"})
        return rows


def main() -> int:
    standalone_main(run, (__doc__ or "").splitlines()[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())

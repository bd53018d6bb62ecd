"""Bad input fed to a running ``edge-aggregator run`` process: nothing wrongly accepted, nothing crashes,
every rejection counted under its reason, the genuine records among them all stored. Also: a revoked
device and an expired certificate are refused by the running process, and the CLI commands."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aggregator import open_store
from aggregator.settle import REJECT_REASONS
from aggregator.trust import load_certificates
from tests.integration.test_agg_service import Peer
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for
from tests.unit.test_agg_support import MUTATIONS, SimDevice, fleet_with, mutated_records

pytestmark = pytest.mark.integration

MAX_BYTES = 8192


def write_config(path: Path, *, port: int, client_id: str, store: str, ca: Path, crl: Path,
                 schema: str | None = None, group: str = "", reload_s: float = 60.0,
                 identity: dict[str, str] | None = None, hold_s: float = 60.0) -> Path:
    lines = [
        "[aggregator]", f"max_record_bytes = {MAX_BYTES}", "ack_interval_ms = 50", "ack_refresh_s = 0.5",
        "log_level = \"INFO\"", "",
        "[mqtt]", f"url = \"mqtt://127.0.0.1:{port}\"", f"client_id = \"{client_id}\"",
        f"shared_group = \"{group}\"", "",
        "[store]", f"url = \"{store}\"", *([f"schema = \"{schema}\""] if schema else []), "",
        "[trust]", f"ca_files = [\"{ca}\"]", f"crl_files = [\"{crl}\"]", f"reload_s = {reload_s}", "",
        "[hold]", f"max_age_s = {hold_s}",
        *(["", "[identity]", *(f"{k} = \"{v}\"" for k, v in identity.items())] if identity else []),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class AggregatorProcess:
    """``edge-aggregator run`` as a real subprocess, logging to a file."""

    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AggregatorProcess:
        self.log.write_text("")
        self.proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "run", "--config", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        wait_for(lambda: self.running() and "aggregator started" in self.log.read_text(), timeout=20,
                 what=f"aggregator started ({self.log})")
        return self

    def running(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"aggregator exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        return True

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def aggregator_procs() -> Iterator[list[AggregatorProcess]]:
    procs: list[AggregatorProcess] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "aggregator.cli", *args], input=stdin, capture_output=True,
                          timeout=60, check=False)


def accounted(store_path: Path) -> tuple[int, int, Counter[str]]:
    store = open_store(str(store_path))
    try:
        stats = store.device_stats()
    finally:
        store.close()
    rejects: Counter[str] = Counter()
    for d in stats:
        rejects.update(d.get("rejects", {}))
    return sum(d.get("stored", 0) for d in stats), sum(d.get("duplicates", 0) for d in stats), rejects


@pytest.mark.slow
def test_ten_thousand_mutated_records(tmp_path: Path, mosquitto: Mosquitto, unique_id: str,
                                      aggregator_procs: list[AggregatorProcess]) -> None:
    fleet, (a, b) = fleet_with(tmp_path, f"{unique_id}-a", f"{unique_id}-b")
    db = tmp_path / "agg.db"
    cfg = write_config(tmp_path / "agg.toml", port=mosquitto.port, client_id=f"agg-{unique_id}", store=str(db),
                       ca=fleet.ca_cert, crl=fleet.crl, hold_s=2.0)  # the birth of an unknown kid never comes
    proc = AggregatorProcess(cfg, tmp_path / "agg.log").start()
    aggregator_procs.append(proc)
    peer = Peer(mosquitto.port)
    rng = random.Random(20240601)
    try:
        genuine = [a.birth(), b.birth()]
        peer.publish(genuine, retain=True)
        a.sent.append(genuine[0])
        b.sent.append(genuine[1])
        n_bad = 10_200
        kinds: Counter[str] = Counter()
        published_genuine = len(genuine)
        batch: list[tuple[str, bytes]] = []
        for i, (kind, topic, data) in enumerate(mutated_records(a, b, n_bad, rng, max_bytes=MAX_BYTES)):
            kinds[kind] += 1
            batch.append((topic, data))
            if i % 10 == 0:  # a genuine record among the bad ones
                dev = a if i % 20 == 0 else b
                rec = dev.record("result" if i % 30 else "telemetry")
                dev.sent.append(rec)
                batch.append(rec)
                published_genuine += 1
            if len(batch) >= 500:
                peer.publish(batch)
                batch = []
        peer.publish(batch)
        assert sum(kinds.values()) == n_bad and set(kinds) == set(MUTATIONS)
        total = n_bad + published_genuine

        def all_accounted() -> bool:
            stored, dups, rejects = accounted(db)
            return stored + dups + sum(rejects.values()) == total

        wait_for(all_accounted, timeout=120, interval=0.5, what=f"{total} records accounted for")
        stored, dups, rejects = accounted(db)
        assert proc.running()
        assert stored == published_genuine  # 0 wrongly accepted, every genuine one stored
        assert dups == kinds["replay"]
        assert sum(rejects.values()) == n_bad - kinds["replay"]
        assert "internal_error" not in rejects
        assert rejects["oversize"] == kinds["oversize"]
        assert rejects["epoch_regression"] == kinds["epoch_regression"]
        assert rejects["key_mismatch"] >= kinds["wrong_key"]
        # an unknown kid is transient: held for the birth record, then dropped unsettled (hold_expired/full)
        held_out = rejects["unknown_kid"] + rejects["hold_expired"] + rejects["hold_full"]
        assert held_out >= kinds["unknown_kid"], dict(rejects)
        assert rejects["bad_alg"] >= kinds["wrong_alg"]
        assert rejects["topic_mismatch"] >= kinds["topic_device"] + kinds["topic_stream"]
        known = set(REJECT_REASONS) - {"internal_error"}  # every reason is a classified one, none a bug
        assert set(rejects) <= known, set(rejects) - known
        store = open_store(str(db))
        try:
            seqs = {(r["device_id"], r["seq"]) for r in store.export()}
        finally:
            store.close()
        from envelope import open_record
        assert seqs == {(open_record(d).device_id, open_record(d).seq) for _, d in a.sent + b.sent}
        out = run_cli("stats", "--config", str(cfg), "--json")
        assert out.returncode == 0, out.stderr
        by_device = {d["device_id"]: d for d in json.loads(out.stdout)}
        assert by_device[a.device_id]["contiguous_seq"] == a.seq and by_device[b.device_id]["missing"] == 0
    finally:
        peer.close()
    assert proc.stop() == 0


def test_revoked_and_expired_devices_are_refused_by_the_running_service(
        tmp_path: Path, mosquitto: Mosquitto, unique_id: str, aggregator_procs: list[AggregatorProcess]) -> None:
    from datetime import datetime, timedelta, timezone

    fleet, (good, bad) = fleet_with(tmp_path, f"{unique_id}-ok", f"{unique_id}-rv")
    past = datetime.now(timezone.utc) - timedelta(days=1)
    old = SimDevice.from_files(fleet.add_device(f"{unique_id}-ex", not_before=past - timedelta(days=30),
                                                not_after=past))
    db = tmp_path / "agg.db"
    cfg = write_config(tmp_path / "agg.toml", port=mosquitto.port, client_id=f"agg-{unique_id}", store=str(db),
                       ca=fleet.ca_cert, crl=fleet.crl, reload_s=0.2)
    proc = AggregatorProcess(cfg, tmp_path / "agg.log").start()
    aggregator_procs.append(proc)
    peer = Peer(mosquitto.port)
    try:
        peer.publish([good.birth(), bad.birth(), old.birth(), bad.record(), good.record()])
        wait_for(lambda: accounted(db)[0] == 4, what="4 genuine records stored")
        fleet.revoke(bad.device_id)  # the running process re-reads the CRL
        def refused() -> bool:
            peer.publish([bad.record()])
            return accounted(db)[2]["revoked"] >= 1

        wait_for(refused, timeout=20, what="records of the revoked device refused")
        stored, _, rejects = accounted(db)  # records sent before the reload took effect were stored
        assert rejects["cert_expired"] == 1
        peer.publish([bad.record(), good.record()])
        wait_for(lambda: accounted(db)[0] == stored + 1, what="the good device still stored")
        assert accounted(db)[2]["revoked"] >= 2
    finally:
        peer.close()
    assert proc.stop() == 0


def test_verify_cli(tmp_path: Path) -> None:
    fleet, (dev,) = fleet_with(tmp_path, "dev-cli")
    _, birth = dev.birth()
    (tmp_path / "birth.cose").write_bytes(birth)
    out = run_cli("verify", "--trust", str(fleet.ca_cert), str(tmp_path / "birth.cose"))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["valid"] and doc["trusted"] and doc["record"]["device_id"] == "dev-cli"
    _, rec = dev.record("result")
    out = run_cli("verify", "--trust", str(fleet.ca_cert), "--registry", str(fleet.registry),
                  "--topic", "edge/v1/dev-cli/result/vib", "-", stdin=rec.hex().encode())
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["record"]["payload"]["label"] in ("normal", "imbalance", "misalignment", "bearing")
    tampered = bytearray(rec)
    tampered[-3] ^= 1
    out = run_cli("verify", "--registry", str(fleet.registry), "-", stdin=bytes(tampered))
    assert out.returncode == 1 and json.loads(out.stdout)["reason"] == "bad_signature"
    out = run_cli("verify", "--trust", str(fleet.ca_cert), "-", stdin=rec)
    assert out.returncode == 1 and json.loads(out.stdout)["reason"] == "unknown_kid"
    assert load_certificates(fleet.ca_cert)


def test_stats_and_export_cli(tmp_path: Path) -> None:
    from aggregator import TrustStore, Verifier

    fleet, (dev,) = fleet_with(tmp_path, "dev-exp")
    v = Verifier(TrustStore(load_certificates(fleet.ca_cert)))
    db = tmp_path / "agg.db"
    store = open_store(str(db))
    import time

    now = int(time.time() * 1000)
    store.commit_batch([v.verify(t, d, now) for t, d in [dev.birth()] + [dev.record() for _ in range(5)]])
    store.close()
    out = run_cli("stats", "--store", str(db))
    assert out.returncode == 0 and b"dev-exp" in out.stdout
    out = run_cli("export", "--store", str(db), "--since", "1h", "--format", "jsonl")
    lines = [json.loads(x) for x in out.stdout.decode().splitlines()]
    assert out.returncode == 0 and [x["seq"] for x in lines] == list(range(1, 7))
    assert lines[1]["payload"]["score"] == 0.9 and "record_b64" in lines[1]
    out = run_cli("export", "--store", str(db), "--format", "csv", "--kind", "result", "-o", str(tmp_path / "x.csv"))
    assert out.returncode == 0
    text = (tmp_path / "x.csv").read_text().splitlines()
    assert text[0].startswith("device_id,seq,epoch") and len(text) == 6
    out = run_cli("export", "--store", str(db), "--since", "2999-01-01T00:00:00Z")
    assert out.returncode == 0 and out.stdout == b""
    out = run_cli("run", "--config", str(tmp_path / "missing.toml"))
    assert out.returncode == 2 and b"missing.toml" in out.stderr
    assert os.path.exists(db)

"""The demo run: the whole system on one machine, with nothing installed but the package.

An embedded broker (amqtt, MQTT 3.1.1) unless ``--broker`` names a real one, a throwaway fleet CA and device
key in a temp dir, the agent on the simulated source cycling through the four vibration classes, and an
aggregator on SQLite that verifies every record back to the CA. A live table shows verified results per
class; the run ends after ``--seconds`` with a summary. Exit 0 only if every published record verified and
was stored.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from agent.config import check_environment, parse_config
from agent.service import Agent
from aggregator import AggregatorService
from aggregator import parse_config as parse_aggregator_config
from demo.embedded_broker import EmbeddedBroker
from envelope import open_record
from firmware_bridge import CLASSES

log = logging.getLogger(__name__)

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
SUMMARY_KEYS = ("published", "verified", "stored", "rejected", "gaps")
CLOCK_STATES = ("unsynced", "ntp", "gnss")  # as the aggregator counts them (aggregator.schema.CLOCK_NAMES)
DEMO_AGGREGATOR = "demo-aggregator"


@dataclass
class Tally:
    """What the demo has seen in the aggregator's store so far."""

    last_rowid: int = 0
    by_label: Counter[str] = field(default_factory=Counter)
    truth: Counter[str] = field(default_factory=Counter)
    correct: Counter[str] = field(default_factory=Counter)


def _model_path() -> Path:
    """The shipped vibration model: in the source tree, or where the package installed it."""
    candidates = [REPO_MODELS / "vibration-int8.tflite",
                  Path(sys.prefix) / "share" / "depin-edge-agent" / "models" / "vibration-int8.tflite"]
    for path in candidates:
        if path.is_file():
            return path
    raise SystemExit(f"demo model not found (looked in {', '.join(str(p) for p in candidates)})")


def _provision(work: Path, device_id: str) -> tuple[Path, Path, Path, Path]:
    """Fleet CA, device key (0600, on the 'device'), certificate, CRL, and the aggregator's receipt-signing
    identity (``work/aggregator/keys``). Returns the device key, its cert, the CA bundle and the CRL."""
    from provisioning import FleetCa, create_file_key  # noqa: PLC0415

    now = datetime.now(timezone.utc)
    key_path = work / "device" / "keys" / "device.key"
    signer = create_file_key(key_path)
    agg_signer = create_file_key(work / "aggregator" / "keys" / "aggregator.key")
    ca = FleetCa.init(work / "fleet-ca", "demo-fleet", now=now)
    try:
        _row, cert = ca.issue(device_id, signer.public_key(), now=now, days=1)
        cert_path = work / "device" / "keys" / "device.crt"
        cert_path.write_bytes(ca.chain_pem(cert))
        _row, agg_cert = ca.issue(DEMO_AGGREGATOR, agg_signer.public_key(), now=now, days=1, role="aggregator")
        (work / "aggregator" / "keys" / "aggregator.crt").write_bytes(ca.chain_pem(agg_cert))
        bundle = work / "fleet-ca.pem"
        bundle.write_bytes(ca.ca_bundle)
        ca.write_crl(now=now)
        crl = work / "fleet-ca" / "crl.pem"
    finally:
        ca.close()
    return key_path, cert_path, bundle, crl


def _tally(store_path: Path, device_id: str, tally: Tally, agent: Agent) -> None:
    """Count newly stored results per label, and per true class where the simulator can tell."""
    try:
        conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return
    try:
        rows = conn.execute("SELECT rowid, record FROM records WHERE device_id = ? AND kind = 'result' AND rowid > ? "
                            "ORDER BY rowid", (device_id, tally.last_rowid)).fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        conn.close()
    source = agent.pipelines[0].source if agent.pipelines else None
    fault_during = getattr(source, "fault_during", None)
    for rowid, raw in rows:
        tally.last_rowid = max(tally.last_rowid, int(rowid))
        payload = open_record(bytes(raw)).payload()
        label = payload["label"]
        tally.by_label[label] += 1
        if fault_during is not None:
            t0_us = payload["t0_ms"] * 1000
            truth = fault_during(t0_us + 1000, t0_us + payload["n"] * 1000 - 1000)
            if truth:
                tally.truth[truth] += 1
                tally.correct[truth] += label == truth


@dataclass(frozen=True)
class Counts:
    """The demo's three headline numbers, all counting the same things: records of the demo device of every
    kind (birth, results, telemetry, gap), each seq once, whether or not it was sent or seen twice."""

    published: int  # distinct seqs the agent has sent at least once (seqs are sent in order from 1)
    verified: int  # distinct seqs the aggregator verified: verifications minus duplicates
    stored: int  # distinct seqs stored

    @classmethod
    def of(cls, published_hi: int, agg_stats: Any) -> Counts:
        return cls(published_hi, agg_stats.verified - agg_stats.duplicates, agg_stats.stored)


def _published_hi(agent: Agent, previous: int) -> int:
    """Highest seq sent so far: the delivery cursor, which steps back on a resend, so keep the maximum."""
    link = agent.link
    return max(previous, link.core.cursor if link is not None else 0)


def _table(elapsed: float, agent: Agent, agg_stats: Any, tally: Tally, rate: float, counts: Counts) -> str:
    snap = agent.snapshot()
    lines = [
        f"edge-agent demo  t={elapsed:5.1f}s  device {agent.cfg.device_id}  broker {agent.cfg.mqtt.url}",
        "",
        f"  {'class':<15}{'verified results':>18}{'true windows':>14}{'correct':>10}",
    ]
    for cls in (*CLASSES, "uncertain"):
        if cls == "uncertain" and not tally.by_label[cls]:
            continue
        truth = tally.truth[cls]
        pct = f"{100.0 * tally.correct[cls] / truth:5.1f}%" if truth else "    -"
        lines.append(f"  {cls:<15}{tally.by_label[cls]:>18}{truth:>14}{pct:>10}")
    ob = snap["outbox"]
    lines += [
        "",
        "  records of every kind (birth, results, telemetry), each seq once:",
        f"  published {counts.published:>7}   verified {counts.verified:>7}   "
        f"stored {counts.stored:>7}   rejected {agg_stats.rejected_total:>4}",
        "  clock   " + "   ".join(f"{name} {agg_stats.clock_states.get(name, 0):>6}" for name in CLOCK_STATES)
        + f"   skew flagged {agg_stats.skew_flagged:>6}",
        f"  outbox depth {ob['depth']:>6}   acked seq {ob['acked_seq']:>7}   rate {rate:7.1f} records/s",
    ]
    return "\n".join(lines)


def _stored_seqs(store_path: Path, device_id: str) -> set[int]:
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=5.0)
    try:
        return {int(s) for (s,) in conn.execute("SELECT seq FROM records WHERE device_id = ?", (device_id,))}
    finally:
        conn.close()


def run_demo(seconds: float, broker_url: str | None, as_json: bool, out: TextIO = sys.stdout,
             keep: bool = False) -> int:
    """Run the demo; returns the exit code (0 only when every published record verified and was stored)."""
    work = Path(tempfile.mkdtemp(prefix="edge-demo-"))
    device_id = f"demo-{secrets.token_hex(3)}"
    broker: EmbeddedBroker | None = None
    agent: Agent | None = None
    agg: Any = None
    live = not as_json and out.isatty()
    try:
        if broker_url is None:
            broker = EmbeddedBroker().start()
            url, protocol = broker.url, "3.1.1"
        else:
            url, protocol = broker_url, "5"
        prefix = f"edge/v1/demo-{secrets.token_hex(3)}" if broker_url else "edge/v1"
        key_path, cert_path, bundle, crl = _provision(work, device_id)
        store_path = work / "aggregator" / "records.db"
        agg_cfg = parse_aggregator_config({
            "mqtt": {"url": url, "protocol": protocol, "client_id": f"demo-aggregator-{secrets.token_hex(3)}",
                     "topic_prefix": prefix},
            "store": {"url": str(store_path)},
            "trust": {"ca_files": [str(bundle)], "crl_files": [str(crl)]},
            "identity": {"key": f"file:{work / 'aggregator' / 'keys' / 'aggregator.key'}",
                         "cert_file": str(work / "aggregator" / "keys" / "aggregator.crt")},
        }, str(work / "aggregator.toml"))
        agg = AggregatorService(agg_cfg)
        agg.start()

        cycle_s = max(1.0, seconds / 8)
        agent_cfg = parse_config({
            "device_id": device_id,
            "key_uri": f"file:{key_path}",
            "certificate": str(cert_path),
            "pipeline": [{
                "stream": "vibration", "model": str(_model_path()), "window": 128, "hop": 32,
                "score_threshold": 0.6,
                "source": {"type": "simulated", "fault": "cycle", "cycle_s": cycle_s, "realtime": True},
            }],
            "outbox": {"path": str(work / "device" / "outbox.db"), "delivery": "aggregator", "resend_after_s": 5.0},
            "mqtt": {"url": url, "protocol": protocol, "topic_prefix": prefix, "keepalive_s": 15},
            "telemetry": {"interval_s": max(2.0, seconds / 4)},
            "receipts": {"ca_file": str(bundle), "crl_file": str(crl), "path": str(work / "device" / "receipt.cose")},
        }, str(work / "agent.toml"))
        check_environment(agent_cfg)
        agent = Agent(agent_cfg)
        agent.start()

        tally = Tally()
        start = time.monotonic()
        last_print = 0.0
        last_stored, last_t = 0, start
        published_hi = 0
        rate = 0.0
        while (elapsed := time.monotonic() - start) < seconds:
            time.sleep(min(0.25, max(0.0, seconds - elapsed)))
            _tally(store_path, device_id, tally, agent)
            now = time.monotonic()
            if now - last_print >= 1.0 and not as_json:
                st = agg.stats()
                rate = (st.stored - last_stored) / max(1e-6, now - last_t)
                last_stored, last_t = st.stored, now
                published_hi = _published_hi(agent, published_hi)
                text = _table(now - start, agent, st, tally, rate, Counts.of(published_hi, st))
                if live:
                    out.write("\x1b[H\x1b[2J" + text + "\n")
                else:
                    out.write(text + "\n\n")
                out.flush()
                last_print = now

        # Stop the sensor side, then let everything committed reach the aggregator and be acknowledged.
        for runner in agent.pipelines:
            runner.stop()
        for runner in agent.pipelines:
            runner.join(5.0)
        assert agent.outbox is not None
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            ob = agent.outbox
            if agent.drafts.empty() and ob.acked_seq >= ob.last_seq > 0:
                break
            time.sleep(0.05)
        agent.stop()
        agent_stopped = True
        published = _published_hi(agent, published_hi)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and len(_stored_seqs(store_path, device_id)) < published:
            time.sleep(0.05)
        agg.stop()
        st = agg.stats()
        _tally(store_path, device_id, tally, agent)
        stored = _stored_seqs(store_path, device_id)
        counts = Counts.of(published, st)
        summary = {
            "published": counts.published,
            "verified": counts.verified,
            "stored": counts.stored,
            "rejected": st.rejected_total,
            "gaps": len(set(range(1, agent.outbox.last_seq + 1)) - stored),
        }
        ok = summary["published"] == summary["verified"] == summary["stored"] > 0 and not summary["rejected"] \
            and not summary["gaps"]
        if as_json:
            out.write(json.dumps(summary) + "\n")
        else:
            out.write(_table(time.monotonic() - start, agent, st, tally, rate, counts) + "\n\n")
            out.write("summary: " + ", ".join(f"{k} {summary[k]}" for k in SUMMARY_KEYS) + "\n")
            out.write("every published record was verified against the fleet CA and stored\n" if ok else
                      "NOT every published record was verified and stored\n")
        return 0 if ok else 1
    finally:
        if agent is not None and not locals().get("agent_stopped"):
            agent.stop()
        if agg is not None:
            agg.stop()
        if broker is not None:
            broker.stop()
        if keep:
            print(f"demo files kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

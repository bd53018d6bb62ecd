"""Simulated devices that speak like the real agent: birth, result, telemetry and gap records with the
agent's payload shapes, signed with certified keys (``tests.support.pki``), plus forged records and wills.

For the web page's tests, screenshots (``tools/screenshots.py``) and benchmark: the real agent produces one
device in one state; this produces a fleet in many states (offline, revoked, forged records, gaps, clock
unsynchronised, outbox backlog) and a history (capture times in the past) in seconds.

    fleet = make_fleet(tmp, devices=["pump-01"])
    dev = SimAgent.from_files(fleet.devices["pump-01"])
    pub = Publisher(broker_url); pub.send(dev.birth()); pub.send(dev.result("normal")); pub.close()
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from paho.mqtt.enums import CallbackAPIVersion

from envelope import RecordHeader, Signer, labels, seal, sha256
from tests.support.pki import DeviceFiles

PREFIX = "edge/v1"
LABELS = ("normal", "imbalance", "misalignment", "bearing")
MODEL_BYTES = b"simulated vibration model"


def _chain(files: DeviceFiles) -> tuple[bytes, ...]:
    return tuple(c.public_bytes(serialization.Encoding.DER)
                 for c in x509.load_pem_x509_certificates(files.cert.read_bytes()))


@dataclass
class SimAgent:
    """One device; every record consumes the next seq, like the agent's outbox."""

    device_id: str
    signer: Signer
    chain: tuple[bytes, ...]
    prefix: str = PREFIX
    epoch: int = 1
    seq: int = 0
    agent_version: str = "0.1.0"
    model_version: str | None = "3"
    label_names: Sequence[str] = LABELS
    model: bytes = MODEL_BYTES
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def from_files(cls, files: DeviceFiles, **kw: Any) -> SimAgent:
        return cls(files.device_id, files.signer(), _chain(files), **kw)

    def topic(self, kind: str, stream: str = "vibration") -> str:
        if kind in ("result", "reading"):
            return f"{self.prefix}/{self.device_id}/{kind}/{stream}"
        return f"{self.prefix}/{self.device_id}/{kind}"

    def seal(self, kind: str, payload: Any, *, capture_ms: int | None = None, clock_state: int = labels.CLOCK_NTP,
             stream: str = "vibration", seq: int | None = None, with_chain: bool = False) -> tuple[str, bytes]:
        if seq is None:
            self.seq += 1
            seq = self.seq
        now_ms = int(time.time() * 1000)
        header = RecordHeader(
            kind=kind, device_id=self.device_id, stream=stream if kind in ("result", "reading") else kind,
            epoch=self.epoch, seq=seq, iat=now_ms // 1000, capture_ms=now_ms if capture_ms is None else capture_ms,
            clock_state=clock_state,
            model_sha256=sha256(self.model) if kind == "result" else None,
            input_sha256=sha256(seq.to_bytes(8, "big")) if kind == "result" else None,
            x5chain=self.chain if with_chain else ())
        out = (self.topic(kind, stream), seal(self.signer, header, payload))
        self.sent.append(out)
        return out

    def birth(self, low_water: int | None = None) -> tuple[str, bytes]:
        """The retained status record with the certificate chain (the agent's ``_birth_draft``)."""
        model = {"stream": "vibration", "model": "vibration-int8", "sha256": hashlib.sha256(self.model).hexdigest(),
                 "labels": list(self.label_names)}
        if self.model_version is not None:
            model["version"] = self.model_version
        return self.seal("status", {
            "status": "online", "agent": self.agent_version, "python": "3.11.2", "runtime": "ai-edge-litert 2.3.0",
            "machine": "aarch64", "key_tier": "file", "alg": -9, "epoch": self.epoch, "delivery": "aggregator",
            "low_water": self.seq + 1 if low_water is None else low_water, "models": [model]}, with_chain=True)

    def result(self, label: str = "normal", *, score: float = 0.93, latency_us: int = 420,
               capture_ms: int | None = None, clock_state: int = labels.CLOCK_NTP) -> tuple[str, bytes]:
        scores = [round((1 - score) / max(1, len(self.label_names) - 1), 4)] * len(self.label_names)
        if label in self.label_names:
            scores[list(self.label_names).index(label)] = score
        return self.seal("result", {"label": label, "score": score, "scores": scores, "labels": list(self.label_names),
                                    "latency_us": latency_us, "t0_ms": capture_ms or int(time.time() * 1000),
                                    "n": 128}, capture_ms=capture_ms, clock_state=clock_state)

    def telemetry(self, *, depth: int = 2, cpu: float = 18.0, mem_percent: float = 41.0, temp_c: float | None = 52.0,
                  p50_us: float = 410.0, p99_us: float = 900.0, capture_ms: int | None = None,
                  clock_state: int = labels.CLOCK_NTP, receipt_settled: int | None = None) -> tuple[str, bytes]:
        """A telemetry record shaped like ``agent.telemetry.telemetry_payload``."""
        total = 4 * 2**30
        return self.seal("telemetry", {
            "uptime_s": 3600.0, "epoch": self.epoch, "low_water": max(1, self.seq + 1 - depth),
            "host": {"cpu_percent": cpu, "agent_cpu_percent": cpu / 3, "load": [0.4, 0.3, 0.2], "rss_bytes": 61 * 2**20,
                     "mem_available_bytes": int(total * (1 - mem_percent / 100)), "mem_total_bytes": total,
                     "temperatures_c": {} if temp_c is None else {"cpu_thermal": temp_c}, "disk_free_bytes": 2**33},
            "outbox": {"depth": depth, "bytes": depth * 310, "max_bytes": 64 * 2**20, "last_seq": self.seq,
                       "acked_seq": self.seq - depth, "evicted_records": 0, "evicted_bytes": 0, "refused_oversize": 0,
                       "committed": self.seq, "errors": 0, "records_per_s": 1.0, "healthy": True, "last_error": None},
            "mqtt": {"connected": True, "reconnects": 0, "disconnects": 0, "connect_failures": 0, "dead_links": 0,
                     "published": self.seq, "resends": 0, "publish_rejected": 0, "last_error": None,
                     "state": "connected", "refused_cause": None, "refused_detail": None, "refused_since": None,
                     "unconnected_s": 0.0, "connect_failures_by_cause": {}},
            "receipts": {"delivery": "aggregator", "received": 1, "stale": 0, "duplicate": 0, "invalid": {},
                         "records_rejected": {}, "signer": None, "epoch": self.epoch,
                         "settled": receipt_settled, "time": None},
            "pipelines": {"vibration": {"windows": self.seq, "results": self.seq, "errors": 0,
                                        "latency_us": {"p50": p50_us, "p99": p99_us}, "records_per_s": 1.0,
                                        "frame_errors": 0, "lost_frames": 0}},
        }, capture_ms=capture_ms, clock_state=clock_state)

    def gap(self, first: int, last: int, reason: str = "outbox_full") -> tuple[str, bytes]:
        """A signed gap record: seqs ``first..last`` were evicted by the outbox policy."""
        return self.seal("gap", {"first": first, "last": last, "count": last - first + 1,
                                 "bytes": 310 * (last - first + 1), "reason": reason})

    def skip(self, n: int) -> None:
        """Lose the next ``n`` seqs in transit (never sent)."""
        self.seq += n

    def forged(self) -> tuple[str, bytes]:
        """A result record on this device's topic whose signature does not verify (last byte flipped)."""
        topic, data = self.result("normal")
        self.sent.pop()
        return topic, data[:-1] + bytes([data[-1] ^ 0x01])

    def will(self) -> tuple[str, bytes]:
        """What the broker publishes for this device when it disconnects uncleanly."""
        return self.topic("status"), b"offline"


class Publisher:
    """One MQTT v5 connection that publishes for every simulated device (the test broker has no ACL)."""

    def __init__(self, broker_url: str, client_id: str = "sim-fleet") -> None:
        u = urlparse(broker_url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.connect(u.hostname or "127.0.0.1", u.port or 1883)
        self.client.loop_start()

    def send(self, msg: tuple[str, bytes], *, retain: bool | None = None) -> None:
        topic, data = msg
        keep = topic.endswith("/status") if retain is None else retain
        self.client.publish(topic, data, qos=1, retain=keep).wait_for_publish(10)

    def send_all(self, msgs: Sequence[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(t, d, qos=1, retain=t.endswith("/status")) for t, d in msgs]
        for info in infos:
            info.wait_for_publish(30)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

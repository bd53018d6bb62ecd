"""Helpers for the aggregator tests: simulated devices that seal real records with certified keys.

Built on ``tests.support.pki.make_fleet`` (the provisioning library's own CA). Imported by the unit and
integration aggregator tests; the few tests at the bottom check the helpers themselves.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from envelope import RecordHeader, Signer, labels, open_record, seal, sha256
from provisioning import SoftwareSigner
from tests.support.pki import DeviceFiles, Fleet, make_fleet

PREFIX = "edge/v1"


def chain_der(cert_path: Path) -> tuple[bytes, ...]:
    """DER of every certificate in a chain PEM file (leaf first)."""
    return tuple(c.public_bytes(serialization.Encoding.DER)
                 for c in x509.load_pem_x509_certificates(cert_path.read_bytes()))


@dataclass
class SimDevice:
    """One device: its signer, certificate chain and sequence counter (every kind consumes a seq)."""

    device_id: str
    signer: Signer
    chain: tuple[bytes, ...] = ()
    prefix: str = PREFIX
    epoch: int = 1
    seq: int = 0
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    @classmethod
    def from_files(cls, files: DeviceFiles, prefix: str = PREFIX) -> SimDevice:
        return cls(files.device_id, files.signer(), chain_der(files.cert), prefix)

    def topic(self, kind: str, stream: str = "vib") -> str:
        if kind in ("result", "reading"):
            return f"{self.prefix}/{self.device_id}/{kind}/{stream}"
        return f"{self.prefix}/{self.device_id}/{kind}"

    def record(self, kind: str = "result", *, stream: str = "vib", payload: dict[str, Any] | bytes | None = None,
               seq: int | None = None, epoch: int | None = None, with_chain: bool = False,
               device_id: str | None = None, iat: int | None = None, capture_ms: int | None = None,
               signer: Signer | None = None, model_sha256: bytes | None = None,
               clock_state: int = labels.CLOCK_NTP) -> tuple[str, bytes]:
        """Seal one record; consumes the next seq unless ``seq`` is given. Returns (topic, bytes)."""
        if seq is None:
            self.seq += 1
            seq = self.seq
        now_ms = int(time.time() * 1000)
        hdr_stream = stream if kind in ("result", "reading") else kind
        header = RecordHeader(
            kind=kind, device_id=device_id or self.device_id, stream=hdr_stream,
            epoch=self.epoch if epoch is None else epoch, seq=seq,
            iat=now_ms // 1000 if iat is None else iat,
            capture_ms=now_ms if capture_ms is None else capture_ms, clock_state=clock_state,
            model_sha256=(model_sha256 or sha256(b"model")) if kind == "result" else None,
            input_sha256=sha256(seq.to_bytes(8, "big")) if kind == "result" else None,
            x5chain=self.chain if with_chain else (),
        )
        if payload is None:
            payload = {"label": ["normal", "imbalance", "misalignment", "bearing"][seq % 4], "score": 0.9,
                       "latency_us": 40} if kind == "result" else {"cpu": 12.5}
        data = seal(signer or self.signer, header, payload)
        return self.topic(kind, stream), data

    def birth(self) -> tuple[str, bytes]:
        """The retained birth record: status with the certificate chain."""
        return self.record("status", payload={"state": "online", "agent": "test"}, with_chain=True)

    def gap(self, first: int, last: int) -> tuple[str, bytes]:
        """A gap record naming seqs first..last as evicted by policy."""
        return self.record("gap", payload={"first": first, "last": last, "count": last - first + 1,
                                           "bytes": 300 * (last - first + 1), "reason": "outbox_full"})


def fleet_with(tmp_path: Path, *device_ids: str, intermediate: bool = False) -> tuple[Fleet, list[SimDevice]]:
    """A fleet CA and one certified simulated device per id."""
    fleet = make_fleet(tmp_path, devices=device_ids, intermediate=intermediate, aggregators=["agg-test"])
    return fleet, [SimDevice.from_files(fleet.devices[d]) for d in device_ids]


def flip_bit(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data))
    return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:]


def resign_with_alg(data: bytes, signer: Signer, alg: int) -> bytes:
    """Re-seal a record's header with another alg id (signed correctly by ``signer``)."""
    tag = cbor2.loads(data)
    hdr = cbor2.loads(tag.value[0])
    hdr[labels.ALG] = alg
    prot = cbor2.dumps(hdr)
    from envelope import sig_structure

    sig = signer.sign(sig_structure(prot, tag.value[2]))
    return cbor2.dumps(cbor2.CBORTag(18, [prot, {}, tag.value[2], sig]))


MUTATIONS = ("bit_flip", "truncate", "wrong_key", "unknown_kid", "wrong_alg", "topic_device", "topic_stream",
             "replay", "epoch_regression", "oversize", "not_cbor", "garbage_cbor")


def mutated_records(dev: SimDevice, other: SimDevice, n: int, rng: random.Random, *,
                    max_bytes: int) -> Iterator[tuple[str, str, bytes]]:
    """``n`` bad records for ``dev`` as (mutation, topic, bytes); none of them may be stored.

    Replays and epoch regressions reuse or follow seqs of genuine records already sent by ``dev``.
    """
    stranger = SoftwareSigner.generate()
    for i in range(n):
        kind = MUTATIONS[i % len(MUTATIONS)]
        topic, good = dev.record("result", seq=dev.seq + 1_000_000 + i)  # a seq nobody will ever send
        if kind == "bit_flip":
            yield kind, topic, flip_bit(good, rng)
        elif kind == "truncate":
            yield kind, topic, good[: rng.randrange(len(good))]
        elif kind == "wrong_key":
            # A key the trust store knows, but for another device.
            _, data = dev.record("result", seq=dev.seq + 1_000_000 + i, signer=other.signer)
            yield kind, topic, data
        elif kind == "unknown_kid":
            _, data = dev.record("result", seq=dev.seq + 1_000_000 + i, signer=stranger)
            yield kind, topic, data
        elif kind == "wrong_alg":
            yield kind, topic, resign_with_alg(good, dev.signer, rng.choice([-7 - 28, -36, -8 * 1000, 5]))
        elif kind == "topic_device":
            yield kind, other.topic("result"), good
        elif kind == "topic_stream":
            yield kind, dev.topic("result", "other"), good
        elif kind == "replay":
            t, data = dev.sent[rng.randrange(len(dev.sent))]
            yield kind, t, data
        elif kind == "epoch_regression":
            t, data = dev.record("result", seq=dev.seq + 2_000_000 + i, epoch=0)
            yield kind, t, data
        elif kind == "oversize":
            t, data = dev.record("result", seq=dev.seq + 1_000_000 + i, payload={"blob": b"x" * max_bytes})
            yield kind, t, data
        elif kind == "not_cbor":
            yield kind, topic, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) + b"\xff\xff"
        else:
            yield kind, topic, cbor2.dumps({"seq": i, "hello": "world"})


# ---- tests of the helpers ------------------------------------------------------------------------------


def test_sim_device_seals_records_the_envelope_opens(tmp_path: Path) -> None:
    _, (dev,) = fleet_with(tmp_path, "dev-a")
    topic, data = dev.birth()
    rec = open_record(data)
    assert topic == "edge/v1/dev-a/status"
    assert rec.kind == "status" and rec.seq == 1 and rec.x5chain == dev.chain
    topic, data = dev.record("result")
    rec = open_record(data)
    assert rec.seq == 2 and rec.stream == "vib" and topic.endswith("/result/vib")
    rec.verify(dev.signer.public_key())

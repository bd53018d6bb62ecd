"""One limits object (issue 12, item 15): every untrusted size comes from ``envelope.limits.DEFAULT_LIMITS``,
and the agent refuses what an aggregator with default settings would refuse, at the limit and one byte over.

The agent side is the real commit path: ``record_budget`` (the agent's per-topic size cap) and
``Outbox.commit`` on a real SQLite file; the aggregator side is the real ``Verifier`` and its config default.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

import envelope.note
import envelope.receipt
from agent.outbox import Draft, Outbox
from agent.publisher import record_budget
from agent.receipts import MAX_RECEIPT_BYTES
from agent.settings import MqttConfig
from aggregator import Rejected, TrustStore, Verifier
from aggregator.config import AggregatorConfig
from aggregator.trust import load_certificates, load_crl
from envelope import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_RECORD_BYTES,
    Limits,
    MalformedReceipt,
    MalformedRecord,
    RecordHeader,
    open_receipt,
    open_record,
    seal,
)
from tests.unit.test_agg_support import SimDevice, fleet_with

LIMIT = DEFAULT_LIMITS.max_record_bytes


def test_every_untrusted_size_is_the_shared_one() -> None:
    """The names other modules kept are the shared values, not copies that could drift."""
    assert DEFAULT_MAX_RECORD_BYTES == LIMIT == AggregatorConfig().max_record_bytes
    assert AggregatorConfig().max_skew_s * 1000 == DEFAULT_LIMITS.max_skew_ms
    assert envelope.receipt.DEFAULT_MAX_RECEIPT_BYTES == MAX_RECEIPT_BYTES == DEFAULT_LIMITS.max_receipt_bytes
    assert DEFAULT_LIMITS.max_receipt_rejects == envelope.receipt.MAX_REJECTED
    assert DEFAULT_LIMITS.max_proof_hashes == envelope.receipt.MAX_PROOF_HASHES
    assert DEFAULT_LIMITS.max_id_chars == envelope.receipt.MAX_ID_CHARS
    assert DEFAULT_LIMITS.max_note_bytes == envelope.note.MAX_NOTE_BYTES
    assert DEFAULT_LIMITS.max_note_signatures == envelope.note.MAX_SIGNATURES
    # a record the tlog-tiles bundle of an aggregator with a log can carry (16-bit entry length)
    assert LIMIT == 0xFFFF


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_record_bytes"):
        Limits(max_record_bytes=0)
    with pytest.raises(ValueError, match="max_chain_certs"):
        dataclasses.replace(DEFAULT_LIMITS, max_chain_certs=True)


def test_the_agent_budget_never_exceeds_what_the_aggregator_accepts() -> None:
    topic = "edge/v1/dev-a/result/vib"
    assert record_budget(MqttConfig().max_packet_bytes, topic) == LIMIT  # default packet size 128 KiB
    assert record_budget(4096, topic) == 4096 - len(topic) - 64  # a smaller broker limit still wins
    assert record_budget(10**9, topic, dataclasses.replace(DEFAULT_LIMITS, max_record_bytes=1000)) == 1000


def _sized(dev: SimDevice, size: int, seq: int) -> tuple[str, bytes]:
    """A genuine result record of exactly ``size`` bytes (padding in the payload)."""
    pad = size - 300
    for _ in range(10):
        topic, data = dev.record("result", payload={"pad": b"x" * pad}, seq=seq)
        if len(data) == size:
            return topic, data
        pad += size - len(data)
    raise AssertionError(f"cannot build a record of {size} bytes")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimDevice, Verifier]:
    fleet, (dev,) = fleet_with(tmp_path_factory.mktemp("limits"), "dev-a")
    trust = TrustStore(load_certificates(fleet.ca_cert), [load_crl(fleet.crl)])
    v = Verifier(trust, "edge/v1")  # the default limits, as a fresh aggregator has
    v.verify(*dev.birth(), int(time.time() * 1000))
    return dev, v


@pytest.mark.parametrize("over", [0, 1])
def test_at_the_limit_and_one_byte_over(world: tuple[SimDevice, Verifier], tmp_path: Path, over: int) -> None:
    dev, v = world
    topic, data = _sized(dev, LIMIT + over, seq=100 + over)
    assert len(data) == LIMIT + over
    # the aggregator
    if over:
        with pytest.raises(Rejected) as e:
            v.verify(topic, data, int(time.time() * 1000))
        assert e.value.reason == "oversize"
    else:
        assert v.verify(topic, data, int(time.time() * 1000)).seq == 100
    # the agent: the same bytes, through its budget and its outbox commit
    outbox = Outbox(str(tmp_path / "outbox.db"), 16 * 2**20)
    try:
        draft = Draft("result", "vib", topic, {"pad": b""}, 0)
        result = outbox.commit([draft], lambda _d, _e, _s: data, record_budget(MqttConfig().max_packet_bytes, topic),
                               lambda plan: draft, int(time.time() * 1000))
        if over:
            assert result.rows == [] and [size for _, size in result.refused] == [LIMIT + 1]
            assert outbox.last_seq == 0  # refused before it took a seq
        else:
            assert [len(r.payload) for r in result.rows] == [LIMIT] and result.refused == []
    finally:
        outbox.close()


def test_x5chain_length_is_bounded_for_records_and_receipts() -> None:
    from provisioning import SoftwareSigner

    signer = SoftwareSigner.generate()
    n = DEFAULT_LIMITS.max_chain_certs
    header = RecordHeader(kind="status", device_id="dev-a", stream="status", epoch=1, seq=1, iat=0, capture_ms=0)
    open_record(seal(signer, dataclasses.replace(header, x5chain=(b"\x30\x00",) * n), {}))
    with pytest.raises(MalformedRecord, match="x5chain"):
        open_record(seal(signer, dataclasses.replace(header, x5chain=(b"\x30\x00",) * (n + 1)), {}))
    from envelope import Receipt, seal_receipt

    receipt = Receipt("agg-1", "dev-a", 1, 0, 0)
    open_receipt(seal_receipt(signer, [b"\x30\x00"] * n, receipt))
    with pytest.raises(MalformedReceipt) as e:
        open_receipt(seal_receipt(signer, [b"\x30\x00"] * (n + 1), receipt))
    assert e.value.reason == "bad_header"

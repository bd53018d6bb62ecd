"""The verifier against a real fleet CA: every reject reason, key learning, skew flags, no re-serialisation."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cbor2
import pytest

from aggregator import Limits, Rejected, TrustStore, Verifier
from aggregator.trust import load_certificates, load_crl, load_registry
from aggregator.verifier import SKEW_FUTURE, SKEW_PAST
from envelope import labels, sig_structure
from provisioning import SoftwareSigner
from tests.unit.test_agg_support import SimDevice, fleet_with, flip_bit, resign_with_alg


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
def setup(tmp_path: Path):
    fleet, devs = fleet_with(tmp_path, "dev-a", "dev-b")
    trust = TrustStore(load_certificates(fleet.ca_cert), [load_crl(fleet.crl)])
    return fleet, devs, trust, Verifier(trust, "edge/v1", Limits(max_record_bytes=4096))


def reason_of(verifier: Verifier, topic: str, data: bytes) -> str:
    with pytest.raises(Rejected) as e:
        verifier.verify(topic, data, now_ms())
    return e.value.reason


def test_birth_record_teaches_the_key_then_results_verify(setup) -> None:
    _, (a, _), _trust, v = setup
    topic, data = a.record("result")
    assert reason_of(v, topic, data) == "unknown_kid"
    vr = v.verify(*a.birth(), now_ms())
    assert vr.learned and vr.key.device_id == "dev-a" and vr.key.source == "x5chain"
    vr = v.verify(*a.record("result"), now_ms())
    assert vr.record.kind == "result" and vr.seq == 3 and not vr.learned


def test_signature_is_checked_over_the_bytes_as_received(setup) -> None:
    """A protected header whose map keys are in another order still verifies: the bytes are never re-encoded."""
    _, (a, _), _, v = setup
    v.verify(*a.birth(), now_ms())
    topic, data = a.record("result")
    tag = cbor2.loads(data)
    hdr = cbor2.loads(tag.value[0])
    prot = cbor2.dumps(dict(reversed(list(hdr.items()))))  # same map, keys in reverse order
    assert prot != tag.value[0]
    sig = a.signer.sign(sig_structure(prot, tag.value[2]))
    odd = cbor2.dumps(cbor2.CBORTag(18, [prot, {}, tag.value[2], sig]))
    assert v.verify(topic, odd, now_ms()).record.protected_bytes == prot


def test_each_kind_of_bad_record_is_rejected_with_its_reason(setup) -> None:
    _, (a, b), _, v = setup
    v.verify(*a.birth(), now_ms())
    v.verify(*b.birth(), now_ms())
    rng = random.Random(1)
    topic, good = a.record("result")
    assert reason_of(v, topic, good[:-5]) in ("not_cbor", "malformed", "bad_signature")
    assert reason_of(v, topic, b"\x00\x01garbage") in ("not_cbor", "malformed")
    assert reason_of(v, topic, cbor2.dumps({"a": 1})) == "malformed"
    assert reason_of(v, topic, a.record("result", payload={"x": b"y" * 5000})[1]) == "oversize"
    assert reason_of(v, topic, a.record("result", signer=b.signer)[1]) == "key_mismatch"
    assert reason_of(v, topic, a.record("result", signer=SoftwareSigner.generate())[1]) == "unknown_kid"
    assert reason_of(v, topic, resign_with_alg(good, a.signer, -36)) == "bad_alg"
    assert reason_of(v, topic, resign_with_alg(good, a.signer, labels.ALG_ED25519)) == "bad_alg"
    assert reason_of(v, b.topic("result"), good) == "topic_mismatch"
    assert reason_of(v, a.topic("result", "other"), good) == "topic_mismatch"
    assert reason_of(v, a.topic("telemetry"), good) == "topic_mismatch"
    assert reason_of(v, "edge/v1/dev-a/nope", good) == "bad_topic"
    assert reason_of(v, topic, a.record("result", seq=0)[1]) == "bad_seq"
    tag = cbor2.loads(good)
    tag.value[3] = bytes(64)
    assert reason_of(v, topic, cbor2.dumps(tag)) == "bad_signature"
    for _ in range(200):
        try:
            v.verify(topic, flip_bit(good, rng), now_ms())
        except Rejected:
            continue
        pytest.fail("a bit-flipped record verified")


def test_x5chain_only_on_status_records(setup) -> None:
    _, (a, _), _, v = setup
    topic, data = a.record("result", with_chain=True)
    assert reason_of(v, topic, data) == "malformed"


def test_a_certificate_for_another_device_cannot_teach_a_key(setup) -> None:
    _, (a, _b), _, v = setup
    impostor = SimDevice("dev-b", a.signer, a.chain)  # dev-a's certificate, on dev-b's topic
    assert reason_of(v, *impostor.birth()) == "key_mismatch"


def test_revoked_device_is_rejected_after_crl_reload(setup) -> None:
    fleet, (a, _), trust, v = setup
    v.verify(*a.birth(), now_ms())
    v.verify(*a.record("result"), now_ms())
    fleet.revoke("dev-a")
    trust.set_crls([load_crl(fleet.crl)])
    assert reason_of(v, *a.record("result")) == "revoked"
    assert reason_of(v, *a.birth()) == "revoked"


def test_expired_certificate_is_rejected(setup, tmp_path: Path) -> None:
    fleet, _, _, v = setup
    past = datetime.now(timezone.utc) - timedelta(days=1)
    files = fleet.add_device("dev-old", not_before=past - timedelta(days=10), not_after=past)
    old = SimDevice.from_files(files)
    assert reason_of(v, *old.birth()) == "cert_expired"


def test_registry_keys_verify_without_a_birth_record(setup) -> None:
    fleet, (a, _), trust, v = setup
    for key in load_registry(fleet.registry):
        trust.add(key)
    vr = v.verify(*a.record("telemetry"), now_ms())
    assert vr.key.source == "registry"
    fleet.revoke("dev-a")
    for key in load_registry(fleet.registry):
        trust.add(key)
    assert reason_of(v, *a.record("telemetry")) == "revoked"


def test_gap_records_are_validated(setup) -> None:
    _, (a, _), _, v = setup
    v.verify(*a.birth(), now_ms())
    a.seq = 10
    vr = v.verify(*a.gap(2, 10), now_ms())
    assert vr.gap is not None and (vr.gap.first, vr.gap.last, vr.gap.count) == (2, 10, 9)
    bad = a.record("gap", payload={"first": 5, "last": 50, "count": 46, "bytes": 1, "reason": "outbox_full"})
    assert reason_of(v, *bad) == "bad_gap"
    bad = a.record("gap", payload={"first": 1, "last": 2, "count": 7, "bytes": 1, "reason": "outbox_full"})
    assert reason_of(v, *bad) == "bad_gap"


def test_clock_skew_is_flagged_not_rejected(setup) -> None:
    _, (a, _), _, v = setup
    v.verify(*a.birth(), now_ms())
    t = now_ms()
    future = v.verify(*a.record("result", iat=t // 1000 + 3600, capture_ms=t + 3_600_000), t)
    assert future.skew_flags & SKEW_FUTURE
    past = v.verify(*a.record("result", iat=t // 1000 - 3600), t)
    assert past.skew_flags & SKEW_PAST
    ok = v.verify(*a.record("result"), t)
    assert ok.skew_flags & (SKEW_FUTURE | SKEW_PAST) == 0

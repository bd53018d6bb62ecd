"""COSE corner cases decided per RFC 9052 and the profile (issue 12, item 13; docs/envelope.md §1, §2).

* Tags: tag 18 is the first byte and the only tag of a record; no tag around it (55799 self-described CBOR
  included), on its four parts, or in the protected header. cbor2 strips tag 55799 silently, so each of these
  used to decode like the plain record: one signed record, several byte strings.
* ``crit`` (label 2): refused unless it is a non-empty array of labels, each present in the protected header
  and understood by the profile; a counter signature (label 7) is refused; other unknown labels are ignored.

A table of named cases, then >= 10^5 generated records combining tag wrappings, crit arrays, counter
signatures and unknown labels, each judged against the rule written out again here (``expected``).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from aggregator import Limits, Rejected, TrustStore, Verifier
from aggregator.settle import is_permanent
from aggregator.trust import load_certificates, load_crl
from envelope import (
    EnvelopeError,
    MalformedReceipt,
    MalformedRecord,
    RecordHeader,
    cbor_det,
    labels,
    open_receipt,
    open_record,
    seal,
    sig_structure,
)
from provisioning import SoftwareSigner
from tests.unit.test_agg_support import SimDevice, fleet_with

SIGNER = SoftwareSigner(ec.derive_private_key(0xC0FFEE, ec.SECP256R1()), deterministic=True)
HEADER = RecordHeader(kind="result", device_id="dev-a", stream="vib", epoch=1, seq=5, iat=1_767_225_600,
                      capture_ms=1_767_225_600_000, clock_state=1, model_sha256=b"\x01" * 32,
                      input_sha256=b"\x02" * 32)
GOOD = seal(SIGNER, HEADER, {"label": "normal"})
PROT, _, PAYLOAD, _SIG = cbor2.loads(GOOD).value
HDR: dict[Any, Any] = cbor2.loads(PROT)
UNKNOWN = -65543  # a private label this profile does not define


def record(header: dict[Any, Any] | bytes, *, payload: bytes = PAYLOAD, signer: SoftwareSigner = SIGNER) -> bytes:
    prot = header if isinstance(header, bytes) else cbor_det.dumps(header)
    sig = signer.sign(sig_structure(prot, payload))
    return b"\xd2\x84" + cbor_det.bstr(prot) + b"\xa0" + cbor_det.bstr(payload) + cbor_det.bstr(sig)


def with_labels(**extra: Any) -> dict[Any, Any]:
    hdr = dict(HDR)
    for k, v in extra.items():
        hdr[{"crit": labels.CRIT, "cs": labels.COUNTER_SIGNATURE, "unknown": UNKNOWN}[k]] = v
    return hdr


def part(data: bytes, i: int) -> tuple[int, int]:
    """(start, end) of the i-th of the four COSE_Sign1 parts of ``data``."""
    pos = 2
    for _ in range(i):
        pos = cbor_det.item_end(data, pos)
    return pos, cbor_det.item_end(data, pos)


def tag_part(data: bytes, i: int, tag: bytes = b"\xd9\xd9\xf7") -> bytes:
    start, _ = part(data, i)
    return data[:start] + tag + data[start:]


# ---- tags --------------------------------------------------------------------------------------------------

WRAPS: dict[str, Callable[[bytes], bytes]] = {  # each applied to a genuine record (or receipt)
    "55799 around 18": lambda d: b"\xd9\xd9\xf7" + d,
    "55799 twice around 18": lambda d: b"\xd9\xd9\xf7\xd9\xd9\xf7" + d,
    "18 around 55799 around the array": lambda d: b"\xd2\xd9\xd9\xf7" + d[1:],
    "18 around 18": lambda d: b"\xd2" + d,
    "another tag around 18": lambda d: b"\xc0" + d,
    "untagged": lambda d: d[1:],
    "55799 on the protected bstr": lambda d: tag_part(d, 0),
    "55799 on the unprotected map": lambda d: tag_part(d, 1),
    "55799 on the payload": lambda d: tag_part(d, 2),
    "55799 on the signature": lambda d: tag_part(d, 3),
    "tag 24 (encoded CBOR) on the protected bstr": lambda d: tag_part(d, 0, b"\xd8\x18"),
}
TAG_CASES = {name: wrap(GOOD) for name, wrap in WRAPS.items()} | {
    "55799 inside the protected header": record(cbor2.dumps(with_labels(unknown=cbor2.CBORTag(55799, 1)))),
    "55799 on a required header value": record(cbor2.dumps({**HDR, labels.KID: cbor2.CBORTag(55799, HDR[labels.KID])})),
    "55799 around the protected header map": record(b"\xd9\xd9\xf7" + PROT),
}


def test_the_plain_record_opens() -> None:
    open_record(GOOD).verify(SIGNER.public_key())


@pytest.mark.parametrize("case", list(TAG_CASES))
def test_no_tag_but_the_leading_18(case: str) -> None:
    data = TAG_CASES[case]
    # before the fix: cbor2 strips 55799, so most of these decoded (and verified) like GOOD
    with pytest.raises(MalformedRecord) as e:
        open_record(data).verify(SIGNER.public_key())
    assert e.value.reason in ("malformed", "not_cbor"), e.value


@pytest.mark.parametrize("case", list(WRAPS))
def test_receipts_refuse_the_same_tag_wrappings(case: str) -> None:
    from tests.unit.test_receipt import VALID

    open_receipt(VALID)
    with pytest.raises(MalformedReceipt):
        open_receipt(WRAPS[case](VALID))


# ---- crit --------------------------------------------------------------------------------------------------

CRIT_CASES: dict[str, tuple[dict[Any, Any], bool]] = {
    "crit naming an unknown label that is present": (with_labels(crit=[UNKNOWN], unknown=1), False),
    "crit naming an unknown label that is absent": (with_labels(crit=[UNKNOWN]), False),
    "crit naming an unknown text label": (with_labels(crit=["x-new"]), False),
    "crit naming a known label that is absent": (with_labels(crit=[labels.X5CHAIN]), False),
    "empty crit": (with_labels(crit=[]), False),
    "crit that is not an array": (with_labels(crit=labels.SEQ), False),
    "crit holding a non-label": (with_labels(crit=[1.5]), False),
    "crit holding a boolean": (with_labels(crit=[True]), False),
    "crit naming one understood and one unknown label": (with_labels(crit=[labels.SEQ, UNKNOWN], unknown=0), False),
    "counter signature (label 7)": (with_labels(cs=b"\x00" * 64), False),
    "crit naming understood private labels": (with_labels(crit=[labels.SEQ, labels.EPOCH, labels.STREAM]), True),
    "crit naming understood standard labels": (with_labels(crit=[labels.ALG, labels.KID]), True),
    "an unknown label not marked critical (ignored)": (with_labels(unknown={"future": 1}), True),
}


@pytest.mark.parametrize("case", list(CRIT_CASES))
def test_crit_per_rfc_9052(case: str) -> None:
    header, ok = CRIT_CASES[case]
    data = record(header)
    if ok:
        open_record(data).verify(SIGNER.public_key())
        return
    with pytest.raises(MalformedRecord) as e:
        open_record(data)
    assert e.value.reason == "bad_crit"


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimDevice, Verifier]:
    fleet, (dev,) = fleet_with(tmp_path_factory.mktemp("cose"), "dev-a")
    trust = TrustStore(load_certificates(fleet.ca_cert), [load_crl(fleet.crl)])
    v = Verifier(trust, "edge/v1", Limits())
    v.verify(*dev.birth(), int(time.time() * 1000))
    return dev, v


@pytest.mark.parametrize("case", [*[c for c, (_, ok) in CRIT_CASES.items() if not ok][:4], "55799 around 18"])
def test_the_verifier_rejects_them_permanently(device: tuple[SimDevice, Verifier], case: str) -> None:
    dev, v = device
    topic, good = dev.record("result")
    prot, _, payload, _ = cbor2.loads(good).value
    if case in CRIT_CASES:
        hdr = cbor2.loads(prot)
        extra, _ = CRIT_CASES[case]
        hdr.update({k: val for k, val in extra.items() if k in (labels.CRIT, labels.COUNTER_SIGNATURE, UNKNOWN)})
        data = record(hdr, payload=payload, signer=dev.signer)  # type: ignore[arg-type]
        want = "bad_crit"
    else:
        data = b"\xd9\xd9\xf7" + good
        want = "malformed"
    with pytest.raises(Rejected) as e:
        v.verify(topic, data, int(time.time() * 1000))
    assert (e.value.reason, e.value.device_id) == (want, "dev-a")
    assert is_permanent(want)


# ---- generated ---------------------------------------------------------------------------------------------

UNDERSTOOD_PRESENT = [labels.ALG, labels.CONTENT_TYPE, labels.KID, labels.CWT_CLAIMS, labels.EPOCH, labels.SEQ,
                      labels.CAPTURE, labels.STREAM, labels.MODEL_DIGEST, labels.INPUT_DIGEST]
TAGS = [b"\xd9\xd9\xf7", b"\xd8\x18", b"\xc0", b"\xc1", b"\xd2", b"\xd8\x1c", b"\xda\x00\x01\x00\x00"]


def generated(rng: random.Random) -> tuple[bytes, bool]:
    """A record with random crit/counter-signature/unknown labels and tag wrappings, and whether it must open."""
    hdr = dict(HDR)
    ok = True
    if rng.random() < 0.15:
        hdr[UNKNOWN] = rng.choice([0, "x", [1, 2], {"a": 1}, b"\x00"])
    if rng.random() < 0.1:
        hdr["x-text-label"] = 1
    if rng.random() < 0.05:
        hdr[labels.COUNTER_SIGNATURE] = rng.choice([b"\x00" * 64, [], 0])
        ok = False
    if rng.random() < 0.6:
        shape = rng.randrange(10)
        if shape == 0:
            hdr[labels.CRIT] = rng.choice([[], 0, "crit", {1: 1}, None, b"\x01"])
            ok = False
        else:
            crit: list[Any] = []
            for _ in range(rng.randint(1, 4)):
                pick = rng.randrange(6)
                if pick <= 2:
                    crit.append(rng.choice(UNDERSTOOD_PRESENT))
                elif pick == 3:
                    crit.append(labels.X5CHAIN)  # understood, absent from a result header
                    ok = False
                elif pick == 4:
                    crit.append(UNKNOWN if rng.random() < 0.5 else "x-text-label")
                    ok = False
                else:
                    crit.append(rng.choice([1.5, True, None, [1], b"\x01"]))
                    ok = False
            hdr[labels.CRIT] = crit
    prot = cbor_det.dumps(hdr)
    if rng.random() < 0.1:  # a tag inside the protected header
        key = rng.choice([labels.KID, labels.STREAM, labels.SEQ, labels.CWT_CLAIMS])
        hdr[key] = cbor2.CBORTag(55799, hdr[key])
        prot = cbor2.dumps(hdr)
        ok = False
    data = b"\xd2\x84" + cbor_det.bstr(prot) + b"\xa0" + cbor_det.bstr(PAYLOAD) + cbor_det.bstr(b"\x00" * 64)
    if rng.random() < 0.1:  # a tag on one part
        data = tag_part(data, rng.randrange(4), rng.choice(TAGS))
        ok = False
    if rng.random() < 0.1:  # tags around the record
        data = b"".join(rng.choice(TAGS) for _ in range(rng.randint(1, 2))) + data
        ok = False
    return data, ok


@pytest.mark.slow
def test_generated_records_follow_the_rules() -> None:
    outcomes: Counter[str] = Counter()
    public = SIGNER.public_key()
    for i in range(100_000):
        rng = random.Random(f"cose-{i}")
        data, ok = generated(rng)
        try:
            rec = open_record(data)
        except EnvelopeError as e:
            assert not ok, f"case {i} refused ({e.reason}: {e}): {data.hex()[:240]}"
            assert e.reason in ("malformed", "not_cbor", "bad_crit")
            outcomes[e.reason] += 1
            continue
        except Exception as e:
            pytest.fail(f"case {i} escaped as {type(e).__name__}: {e}")
        assert ok, f"case {i} opened though it breaks a rule: {data.hex()[:240]}"
        if i % 20 == 0:  # a sample also verifies, signed for real (the rules come before the signature)
            rec = open_record(record(rec.protected_bytes))
            rec.verify(public)
        outcomes["opened"] += 1
    assert outcomes["opened"] > 20_000 and outcomes["bad_crit"] > 20_000 and outcomes["malformed"] > 5_000, outcomes
    print(dict(outcomes))

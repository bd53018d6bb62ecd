"""The envelope profile (envelope.record): round trips, every rejection reason, and garbage in → EnvelopeError only."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envelope import (
    EnvelopeError,
    InvalidSignature,
    MalformedRecord,
    RecordHeader,
    UnsupportedAlgorithm,
    cbor_det,
    decode_sign1,
    encode_payload,
    kid_for,
    labels,
    open_record,
    seal,
    sig_structure,
    spki_der,
    verify_signature,
)
from envelope.record import encode_protected
from provisioning import SoftwareSigner

P256 = SoftwareSigner(ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1()), deterministic=True)
ED25519 = SoftwareSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
HEADER = RecordHeader(kind="result", device_id="dev-01", stream="vib", epoch=3, seq=42, iat=1_767_225_600,
                      capture_ms=1_767_225_599_000, clock_state=labels.CLOCK_NTP, model_sha256=b"\x11" * 32,
                      input_sha256=b"\x22" * 32)
PAYLOAD = {"label": "normal", "score": 0.5, "n": 128}


def _sign1(protected: dict[Any, Any] | bytes, payload: bytes = b"\xa0", unprotected: Any = None,
           signer: SoftwareSigner = P256) -> bytes:
    """A tagged COSE_Sign1 with arbitrary parts, properly signed over them."""
    p = protected if isinstance(protected, bytes) else cbor_det.dumps(protected)
    sig = signer.sign(sig_structure(p, payload))
    return cbor2.dumps(cbor2.CBORTag(18, [p, {} if unprotected is None else unprotected, payload, sig]))


def _good_map(signer: SoftwareSigner = P256) -> dict[Any, Any]:
    return HEADER.protected_map(signer.alg, signer.kid)


# ----- round trips -----------------------------------------------------------------------------------------
headers = st.builds(
    RecordHeader,
    kind=st.sampled_from(sorted(labels.RECORD_KINDS)),
    device_id=st.text(min_size=1, max_size=64),
    stream=st.text(max_size=32),
    epoch=st.integers(min_value=0, max_value=2**64 - 1),
    seq=st.integers(min_value=0, max_value=2**64 - 1),
    iat=st.integers(min_value=-(2**64), max_value=2**64 - 1),
    capture_ms=st.integers(min_value=-(2**64), max_value=2**64 - 1),
    clock_state=st.sampled_from([0, 1, 2]),
    model_sha256=st.none() | st.binary(min_size=32, max_size=32),
    input_sha256=st.none() | st.binary(min_size=32, max_size=32),
    x5chain=st.lists(st.binary(min_size=1, max_size=40), max_size=3).map(tuple),
)
payloads = st.dictionaries(
    st.text(max_size=10),
    st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64 - 1)
                 | st.floats(allow_nan=False) | st.text(max_size=10) | st.binary(max_size=8),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                 max_leaves=12),
    max_size=8,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers, payload=payloads, ed=st.booleans())
def test_seal_open_round_trip(header: RecordHeader, payload: dict[str, Any], ed: bool) -> None:
    signer = ED25519 if ed else P256
    data = seal(signer, header, payload)
    rec = open_record(data)
    rec.verify(signer.public_key())
    assert (rec.kind, rec.device_id, rec.stream, rec.epoch, rec.seq, rec.iat, rec.capture_ms, rec.clock_state) == (
        header.kind, header.device_id, header.stream, header.epoch, header.seq, header.iat, header.capture_ms,
        header.clock_state)
    assert (rec.model_sha256, rec.input_sha256, rec.x5chain) == (header.model_sha256, header.input_sha256,
                                                                 header.x5chain)
    assert (rec.alg, rec.kid) == (signer.alg, signer.kid)
    assert rec.payload() == payload
    assert rec.raw == data


@settings(max_examples=300)
@given(header=headers, alg=st.sampled_from([-9, -7, -19]), kid=st.binary(max_size=20))
def test_fast_protected_encoding_equals_the_generic_one(header: RecordHeader, alg: int, kid: bytes) -> None:
    assert encode_protected(header, alg, kid) == cbor_det.dumps(header.protected_map(alg, kid))


def test_kid_is_sha256_of_spki_truncated() -> None:
    import hashlib

    for signer in (P256, ED25519):
        assert signer.kid == kid_for(signer.public_key()) == hashlib.sha256(spki_der(signer.public_key())).digest()[:16]


def test_payload_bytes_are_sealed_as_given() -> None:
    raw = encode_payload(PAYLOAD)
    assert seal(P256, HEADER, raw) == seal(P256, HEADER, PAYLOAD)


@pytest.mark.parametrize("field, value", [
    ("kind", "blob"), ("seq", -1), ("seq", 2**64), ("epoch", -1), ("seq", True), ("iat", 1.5), ("capture_ms", None),
    ("clock_state", 3), ("model_sha256", b"\x00" * 31), ("input_sha256", "00" * 32), ("device_id", 7),
    ("x5chain", (b"",)), ("iat", 2**64), ("capture_ms", -(2**64) - 1),
])
def test_seal_refuses_values_open_record_would_reject(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field.split("_", maxsplit=1)[0] if field != "kind" else "kind"):
        seal(P256, replace(HEADER, **{field: value}), PAYLOAD)


# ----- rejections: each reason -------------------------------------------------------------------------------
def _reject(data: bytes, exc: type[EnvelopeError] = MalformedRecord, reason: str | None = None,
            match: str | None = None) -> None:
    with pytest.raises(exc, match=match) as info:
        open_record(data)
    if reason is not None:
        assert info.value.reason == reason


def test_not_cbor() -> None:
    _reject(b"\xff\x00", reason="not_cbor")
    _reject(b"", reason="not_cbor")


def test_trailing_bytes_after_the_record() -> None:
    _reject(seal(P256, HEADER, PAYLOAD) + b"\x00", reason="not_cbor", match="after the end")


def test_oversize() -> None:
    data = seal(P256, HEADER, {"blob": "x" * 2000})
    with pytest.raises(MalformedRecord) as info:
        open_record(data, max_bytes=len(data) - 1)
    assert info.value.reason == "oversize"
    open_record(data, max_bytes=len(data))


def test_wrong_tag_or_untagged() -> None:
    good = cbor2.loads(seal(P256, HEADER, PAYLOAD))
    _reject(cbor2.dumps(cbor2.CBORTag(17, good.value)), match="tag 18")
    _reject(cbor2.dumps(good.value), match="tag 18")


@pytest.mark.parametrize("n", [0, 3, 5])
def test_wrong_arity(n: int) -> None:
    parts = cbor2.loads(seal(P256, HEADER, PAYLOAD)).value
    _reject(cbor2.dumps(cbor2.CBORTag(18, (parts + parts)[:n])), match="4 elements")


def test_wrong_part_types() -> None:
    p, u, pl, s = cbor2.loads(seal(P256, HEADER, PAYLOAD)).value
    for parts in ([p.hex(), u, pl, s], [p, u, None, s], [p, u, pl, list(s)], [p, [], pl, s]):
        _reject(cbor2.dumps(cbor2.CBORTag(18, parts)))


def test_non_empty_unprotected() -> None:
    _reject(_sign1(_good_map(), unprotected={4: b"kid"}), match="unprotected")


def test_empty_protected() -> None:
    _reject(_sign1(b""), match="must not be empty")


@pytest.mark.parametrize("label", [labels.ALG, labels.CONTENT_TYPE, labels.KID, labels.CWT_CLAIMS, labels.EPOCH,
                                   labels.SEQ, labels.CAPTURE, labels.STREAM])
def test_missing_required_header(label: int) -> None:
    hdr = _good_map()
    del hdr[label]
    _reject(_sign1(hdr), match="lacks" if label != labels.ALG else "alg")


@pytest.mark.parametrize("label, value", [
    (labels.CONTENT_TYPE, 42), (labels.KID, "kid"), (labels.CWT_CLAIMS, [1]), (labels.EPOCH, "1"), (labels.SEQ, 1.0),
    (labels.SEQ, True), (labels.STREAM, b"vib"), (labels.CAPTURE, 5), (labels.CAPTURE, [1]), (labels.CAPTURE, [1, 3]),
    (labels.CAPTURE, [1, True]), (labels.CWT_CLAIMS, {2: "d"}), (labels.CWT_CLAIMS, {2: 1, 6: 1}),
    (labels.CWT_CLAIMS, {2: "d", 6: 1.5}), (labels.SEQ, -1), (labels.EPOCH, 2**64), (labels.X5CHAIN, []),
    (labels.X5CHAIN, "cert"), (labels.X5CHAIN, [b"c", 1]), (labels.ALG, [-9]), (labels.ALG, True),
])
def test_wrong_header_types(label: int, value: Any) -> None:
    hdr = _good_map()
    hdr[label] = value
    _reject(_sign1(hdr))


@pytest.mark.parametrize("label, value", [
    (labels.MODEL_DIGEST, [-16, b"\x00" * 31]), (labels.MODEL_DIGEST, [-44, b"\x00" * 32]),
    (labels.INPUT_DIGEST, b"\x00" * 32), (labels.INPUT_DIGEST, [-16, b"\x00" * 32, 1]),
    (labels.MODEL_DIGEST, [-16.0, b"\x00" * 32]),
])
def test_bad_digests(label: int, value: Any) -> None:
    hdr = _good_map()
    hdr[label] = value
    _reject(_sign1(hdr), match="digest")


def test_unknown_content_type() -> None:
    hdr = _good_map()
    hdr[labels.CONTENT_TYPE] = "application/cbor"
    _reject(_sign1(hdr), match="content type")


@pytest.mark.parametrize("alg", [labels.ALG_EDDSA, -35, -36, -999, 0, "ESP256", "unknown"])
def test_algorithm_outside_the_allow_list(alg: Any) -> None:
    hdr = _good_map()
    hdr[labels.ALG] = alg
    _reject(_sign1(hdr), UnsupportedAlgorithm, reason="bad_alg")


def test_duplicate_labels_are_rejected() -> None:
    """RFC 9052 §9: a map that repeats a label must not be processed (parsers disagree on which value wins)."""
    good = cbor_det.dumps(_good_map())
    dup = bytes([good[0] + 1]) + good[1:] + b"\x3a\x00\x01\x00\x01\x00"  # a second seq label, value 0
    _reject(_sign1(dup), match="repeats")


def test_non_shortest_or_indefinite_protected_is_rejected() -> None:
    good = cbor_det.dumps(_good_map())
    assert good[1] == 0x01  # label 1 (alg) first
    _reject(_sign1(good[:1] + b"\x18\x01" + good[2:]), match="shortest")
    _reject(_sign1(b"\xbf" + good[1:] + b"\xff"), match="indefinite")
    _reject(_sign1(good + b"\x00"), match="after the end")


def test_other_key_orders_still_open() -> None:
    """Key order is not enforced: an encoder with cbor2's length-first canonical order produces records that open."""
    hdr = _good_map()
    data = _sign1(cbor2.dumps(hdr, canonical=True))
    open_record(data).verify(P256.public_key())
    reordered = dict(reversed(list(hdr.items())))
    open_record(_sign1(cbor2.dumps(reordered))).verify(P256.public_key())


@pytest.mark.parametrize("signer, other", [(P256, ED25519), (ED25519, P256)])
def test_wrong_key_type_for_alg(signer: SoftwareSigner, other: SoftwareSigner) -> None:
    rec = open_record(seal(signer, HEADER, PAYLOAD))
    with pytest.raises(UnsupportedAlgorithm):
        rec.verify(other.public_key())
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(UnsupportedAlgorithm):
        open_record(seal(P256, HEADER, PAYLOAD)).verify(p384)


def test_wrong_key_of_the_right_type() -> None:
    rec = open_record(seal(P256, HEADER, PAYLOAD))
    with pytest.raises(InvalidSignature):
        rec.verify(SoftwareSigner.generate("p256").public_key())


@pytest.mark.parametrize("signer", [P256, ED25519], ids=["p256", "ed25519"])
def test_bit_flips_are_invalid_signature_or_malformed(signer: SoftwareSigner) -> None:
    data = seal(signer, HEADER, PAYLOAD)
    rec = open_record(data)
    sections = {
        "protected": data.index(rec.protected_bytes),
        "payload": len(data) - 66 - len(rec.payload_bytes),  # payload, then 0x5840 and 64 signature bytes
        "signature": len(data) - 64,
    }
    seen: dict[str, set[type]] = {k: set() for k in sections}
    for name, start in sections.items():
        length = {"protected": len(rec.protected_bytes), "payload": len(rec.payload_bytes), "signature": 64}[name]
        for i in range(start, start + length):
            for bit in range(8):
                changed = bytearray(data)
                changed[i] ^= 1 << bit
                with pytest.raises((InvalidSignature, MalformedRecord, UnsupportedAlgorithm)) as info:
                    open_record(bytes(changed)).verify(signer.public_key())
                seen[name].add(type(info.value))
    assert seen["signature"] == {InvalidSignature}
    assert seen["payload"] == {InvalidSignature}
    assert InvalidSignature in seen["protected"]


def test_short_or_long_signatures_are_invalid() -> None:
    p, _, pl, s = cbor2.loads(seal(P256, HEADER, PAYLOAD)).value
    for sig in (s[:-1], s + b"\x00", b"", b"\x00" * 64):
        with pytest.raises(InvalidSignature):
            open_record(cbor2.dumps(cbor2.CBORTag(18, [p, {}, pl, sig]))).verify(P256.public_key())


def test_payload_that_is_not_cbor_is_reported_after_verify() -> None:
    data = _sign1(_good_map(), payload=b"\xff\xff")
    rec = open_record(data)
    rec.verify(P256.public_key())
    with pytest.raises(MalformedRecord) as info:
        rec.payload()
    assert info.value.reason == "bad_payload"
    rec2 = open_record(_sign1(_good_map(), payload=b"\xa2\x61a\x01\x61a\x02"))
    with pytest.raises(MalformedRecord, match="repeats"):
        rec2.payload()


def test_verify_signature_refuses_non_integer_algs() -> None:
    for alg in ("ES256", [-9], None, True, 2.5):
        with pytest.raises(UnsupportedAlgorithm):
            verify_signature(alg, P256.public_key(), b"x", b"\x00" * 64)  # type: ignore[arg-type]


def test_decode_sign1_is_generic() -> None:
    msg = decode_sign1(_sign1({1: -7}, unprotected={4: b"11"}))
    assert msg.protected_map() == {1: -7}
    assert msg.unprotected == {4: b"11"}
    assert decode_sign1(_sign1(b"")).protected_map() == {}


# ----- arbitrary bytes ------------------------------------------------------------------------------------
@settings(max_examples=3000)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_envelope_errors(data: bytes) -> None:
    try:
        open_record(data).verify(P256.public_key())
    except EnvelopeError:
        pass


@settings(max_examples=1500)
@given(st.binary(max_size=40), st.integers(min_value=0, max_value=10_000))
def test_mutated_records_raise_only_envelope_errors(junk: bytes, where: int) -> None:
    data = seal(P256, HEADER, PAYLOAD)
    cut = where % (len(data) + 1)
    for candidate in (data[:cut] + junk + data[cut:], data[:cut] + junk + data[cut + len(junk):], data[:cut] + junk):
        try:
            rec = open_record(candidate)
            rec.verify(P256.public_key())
            rec.payload()
        except EnvelopeError:
            continue
        assert candidate == data or junk == data[cut:cut + len(junk)]


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=40) | st.text(max_size=20) | st.floats(),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.integers(-70000, 70000) | st.text(max_size=4), c,
                                                        max_size=6),
    max_leaves=25,
)


@settings(max_examples=600)
@given(cbor_values, cbor_values)
def test_structured_garbage_raises_only_envelope_errors(protected: Any, unprotected: Any) -> None:
    """Well-formed CBOR of the wrong shape, in every position of a Sign1."""
    for obj in (cbor2.CBORTag(18, [cbor2.dumps(protected), unprotected, b"", b"x" * 64]),
                cbor2.CBORTag(18, [protected, {}, b"", b""]), cbor2.CBORTag(18, protected), protected):
        try:
            open_record(cbor2.dumps(obj)).verify(P256.public_key())
        except EnvelopeError:
            pass

"""The COSE working group's own COSE_Sign1 examples against our generic COSE layer (docs/envelope.md §Conformance).

Checks ``decode_sign1``, ``sig_structure`` and ``verify_signature`` (no profile rules: these examples carry no
kid/device/seq headers). The examples live outside the project, in ``<repo>/../shared/vectors/cose-wg`` (public
domain, not copied here); the whole module is skipped when that folder is absent. Each place where we
deliberately differ from an example's "pass" verdict is a separate test that says why.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519

from envelope import (
    EnvelopeError,
    InvalidSignature,
    MalformedRecord,
    Sign1,
    UnsupportedAlgorithm,
    decode_sign1,
    labels,
    open_record,
    sig_structure,
    verify_signature,
)

REPO = Path(__file__).resolve().parents[2]
COSE_WG = REPO.parent / "shared" / "vectors" / "cose-wg"

pytestmark = pytest.mark.skipif(
    not COSE_WG.is_dir(),
    reason=f"COSE WG examples not found at {COSE_WG} (CI places shared/ beside the clone; they are not copied "
    "into the project)",
)

# Examples that must verify at the primitive level, with the primitive we use (the header's alg for ES256;
# Ed25519 examples name the polymorphic EdDSA (-8), which we verify with the Ed25519 primitive, -19).
PASS = {
    "ecdsa-examples/ecdsa-sig-01.json": labels.ALG_ES256,
    "sign1-tests/sign-pass-02.json": labels.ALG_ES256,  # with external AAD
    "CWT/A_3.json": labels.ALG_ES256,
    "eddsa-examples/eddsa-sig-01.json": labels.ALG_ED25519,
}
OUTSIDE_ALLOW_LIST = {
    "ecdsa-examples/ecdsa-sig-02.json": -35,  # ES384 on P-384
    "ecdsa-examples/ecdsa-sig-03.json": -36,  # ES512 on P-521
    "ecdsa-examples/ecdsa-sig-04.json": -36,  # ES512 with a P-256 key
    "eddsa-examples/eddsa-sig-02.json": -8,  # EdDSA on Ed448
}
SIGN1_EXAMPLES = [
    *PASS, *OUTSIDE_ALLOW_LIST,
    *(f"sign1-tests/sign-{n}.json" for n in ("pass-01", "pass-03", "fail-01", "fail-02", "fail-03", "fail-04",
                                               "fail-06", "fail-07")),
]


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((COSE_WG / name).read_text(encoding="utf-8"))
    return doc


def _b64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _public_key(doc: dict[str, Any]) -> Any:
    """The example's public key (JWK form) as a cryptography object."""
    jwk = doc["input"]["sign0"]["key"]
    if jwk["kty"] == "EC":
        curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}[jwk["crv"]]
        x, y = (int.from_bytes(bytes.fromhex(jwk[f"{c}_hex"]) if f"{c}_hex" in jwk else _b64url(jwk[c]), "big")
                for c in ("x", "y"))
        return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    if jwk["crv"] == "Ed25519":
        return ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(jwk["x_hex"]))
    return ed448.Ed448PublicKey.from_public_bytes(bytes.fromhex(jwk["x_hex"]))


def _message(doc: dict[str, Any]) -> bytes:
    return bytes.fromhex(doc["output"]["cbor"])


def _external(doc: dict[str, Any]) -> bytes:
    return bytes.fromhex(doc["input"]["sign0"].get("external", ""))


def _tbs(msg: Sign1, doc: dict[str, Any]) -> bytes:
    return sig_structure(msg.protected, msg.payload, _external(doc))


def _verify(doc: dict[str, Any], alg: int) -> None:
    msg = decode_sign1(_message(doc))
    verify_signature(alg, cast(Any, _public_key(doc)), _tbs(msg, doc), msg.signature)


@pytest.mark.parametrize("name", sorted(PASS))
def test_pass_examples_match_to_be_signed_and_verify(name: str) -> None:
    doc = _load(name)
    msg = decode_sign1(_message(doc))
    assert _tbs(msg, doc).hex().upper() == doc["intermediates"]["ToBeSign_hex"].upper()
    _verify(doc, PASS[name])


@pytest.mark.parametrize("name", sorted(PASS))
def test_pass_examples_fail_with_a_flipped_signature_bit(name: str) -> None:
    doc = _load(name)
    msg = decode_sign1(_message(doc))
    sig = bytearray(msg.signature)
    sig[0] ^= 0x80
    with pytest.raises(InvalidSignature):
        verify_signature(PASS[name], cast(Any, _public_key(doc)), _tbs(msg, doc), bytes(sig))


def test_wrong_key_is_rejected() -> None:
    doc = _load("ecdsa-examples/ecdsa-sig-01.json")
    msg = decode_sign1(_message(doc))
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(InvalidSignature):
        verify_signature(labels.ALG_ES256, other, _tbs(msg, doc), msg.signature)


def test_eddsa_minus_8_is_outside_the_allow_list() -> None:
    """Decision: the polymorphic EdDSA id (-8) is refused; the profile names Ed25519 by its own id, -19."""
    doc = _load("eddsa-examples/eddsa-sig-01.json")
    msg = decode_sign1(_message(doc))
    header_alg = msg.protected_map()[labels.ALG]
    assert header_alg == labels.ALG_EDDSA
    with pytest.raises(UnsupportedAlgorithm):
        verify_signature(header_alg, cast(Any, _public_key(doc)), _tbs(msg, doc), msg.signature)


@pytest.mark.parametrize("name", sorted(OUTSIDE_ALLOW_LIST))
def test_algorithms_outside_the_allow_list_are_unsupported(name: str) -> None:
    """Decision: P-384, P-521, ES512 and Ed448 are outside the allow-list (-9, -7, -19), even though the
    COSE layer parses them and computes the same ToBeSigned bytes as the working group."""
    doc = _load(name)
    msg = decode_sign1(_message(doc))
    assert _tbs(msg, doc).hex().upper() == doc["intermediates"]["ToBeSign_hex"].upper()
    alg = msg.protected_map()[labels.ALG]
    assert alg == OUTSIDE_ALLOW_LIST[name]
    with pytest.raises(UnsupportedAlgorithm):
        verify_signature(alg, cast(Any, _public_key(doc)), _tbs(msg, doc), msg.signature)


def test_sign_pass_01_redone_protected_is_rejected() -> None:
    """Decision: sign-pass-01 sends the empty protected header as h'A0' but was signed over h'' (the
    zero-length form). We verify over the protected bytes exactly as received and never re-serialise, so
    its ToBeSigned differs from the working group's and the signature does not verify."""
    doc = _load("sign1-tests/sign-pass-01.json")
    msg = decode_sign1(_message(doc))
    assert msg.protected == b"\xa0"
    assert msg.protected_map() == {}
    assert _tbs(msg, doc).hex().upper() != doc["intermediates"]["ToBeSign_hex"].upper()
    alg = msg.unprotected[labels.ALG]  # this example carries alg unprotected
    with pytest.raises(InvalidSignature):
        verify_signature(alg, cast(Any, _public_key(doc)), _tbs(msg, doc), msg.signature)
    # Re-serialising the protected header as h'' would "fix" it; the profile refuses to do that.
    verify_signature(alg, cast(Any, _public_key(doc)), sig_structure(b"", msg.payload), msg.signature)


def test_sign_pass_03_untagged_is_rejected() -> None:
    """Decision: the profile requires the COSE_Sign1 tag (18); an untagged message is not one of our records."""
    doc = _load("sign1-tests/sign-pass-03.json")
    with pytest.raises(MalformedRecord, match="tag 18"):
        decode_sign1(_message(doc))


def test_sign_fail_01_wrong_tag() -> None:
    with pytest.raises(MalformedRecord, match="tag 18"):
        decode_sign1(_message(_load("sign1-tests/sign-fail-01.json")))


def test_mac0_is_not_a_sign1() -> None:
    with pytest.raises(MalformedRecord, match="tag 18"):
        decode_sign1(_message(_load("CWT/A_4.json")))


def test_sign_fail_02_changed_payload() -> None:
    doc = _load("sign1-tests/sign-fail-02.json")
    with pytest.raises(InvalidSignature):
        _verify(doc, decode_sign1(_message(doc)).protected_map()[labels.ALG])


@pytest.mark.parametrize("name, alg", [("sign1-tests/sign-fail-03.json", -999),
                                       ("sign1-tests/sign-fail-04.json", "unknown")])
def test_sign_fail_changed_algorithm_is_unsupported(name: str, alg: object) -> None:
    doc = _load(name)
    msg = decode_sign1(_message(doc))
    assert msg.protected_map()[labels.ALG] == alg
    with pytest.raises(UnsupportedAlgorithm):
        verify_signature(cast(int, alg), cast(Any, _public_key(doc)), _tbs(msg, doc), msg.signature)


@pytest.mark.parametrize("name", ["sign1-tests/sign-fail-06.json", "sign1-tests/sign-fail-07.json"])
def test_sign_fail_added_or_removed_protected_attribute(name: str) -> None:
    doc = _load(name)
    msg = decode_sign1(_message(doc))
    assert _tbs(msg, doc).hex().upper() != doc["intermediates"]["ToBeSign_hex"].upper()
    with pytest.raises(InvalidSignature):
        _verify(doc, msg.protected_map()[labels.ALG])


@pytest.mark.parametrize("name", sorted(SIGN1_EXAMPLES))
def test_profile_rejects_generic_examples(name: str) -> None:
    """None of the examples is a record of this profile (no kid/device/seq, unprotected headers in use)."""
    with pytest.raises(EnvelopeError):
        open_record(_message(_load(name)))

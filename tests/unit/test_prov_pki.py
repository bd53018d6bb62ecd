"""CSR, certificate profile, chain verification with reasons, registry round trip, broker config text."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from envelope import kid_for
from provisioning import (
    ExpiredCertificate,
    InvalidDeviceId,
    InvalidInput,
    RevokedCertificate,
    SoftwareSigner,
    StaleCrl,
    UntrustedCertificate,
    broker,
    build_csr,
    certs,
    check_csr,
    claim_code,
    parse_registry,
    registry_json,
    verify_chain,
    verify_device_chain,
)
from provisioning.registry import Registry, RegistryEntry

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
FLEET = "unit.fleet"


def _issuer(intermediate: bool = False) -> tuple[certs.Issuer, certs.Issuer]:
    rk = ec.generate_private_key(ec.SECP256R1())
    root = certs.Issuer(rk, certs.make_root(FLEET, rk, NOW, 3650))
    if not intermediate:
        return root, root
    ik = ec.generate_private_key(ec.SECP256R1())
    return root, certs.Issuer(ik, certs.make_intermediate(root, FLEET, ik, NOW, 1000))


def _leaf(issuer: certs.Issuer, identity: str = "dev-1", role: str = "device", days: int = 365):
    signer = SoftwareSigner.generate()
    cert = certs.issue_leaf(issuer, fleet=FLEET, identity=identity, public_key=signer.public_key(),
                            not_before=NOW, not_after=NOW + timedelta(days=days), role=role)
    return signer, cert


def der(c: x509.Certificate) -> bytes:
    return c.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("key_type", ["p256", "ed25519"])
def test_csr_round_trip_and_proof_of_possession(key_type: str) -> None:
    signer = SoftwareSigner.generate(key_type)
    csr = build_csr(signer, "dev-42", FLEET)
    assert csr.is_signature_valid
    device_id, pub = check_csr(csr, FLEET)
    assert device_id == "dev-42" and kid_for(pub) == signer.kid
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"spiffe://{FLEET}/device/dev-42"]


@settings(max_examples=30, deadline=None)
@given(st.from_regex(r"[a-z0-9][a-z0-9-]{2,63}", fullmatch=True))
def test_any_valid_id_makes_a_csr_the_ca_accepts(device_id: str) -> None:
    csr = build_csr(SoftwareSigner.generate(), device_id, FLEET)
    assert check_csr(csr, FLEET)[0] == device_id


def test_csr_checks_fleet_and_role() -> None:
    csr = build_csr(SoftwareSigner.generate(), "dev-1", "other.fleet")
    with pytest.raises(InvalidInput, match="wrong CA") as e:
        check_csr(csr, FLEET)
    assert e.value.reason == "wrong_fleet"
    agg = build_csr(SoftwareSigner.generate(), "agg-1", FLEET, role="aggregator")
    with pytest.raises(InvalidInput, match="expected a device"):
        check_csr(agg, FLEET)


def test_claim_code_shape_and_stability() -> None:
    s = SoftwareSigner.generate()
    code = claim_code(s.public_key())
    assert code == claim_code(s.public_key())
    assert len(code) == 9 and code[4] == "-" and not set(code) & set("ILOU")


def test_certificate_profile() -> None:
    root, issuer = _issuer()
    bc = root.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    ku = root.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert bc.critical and bc.value.ca and ku.key_cert_sign and ku.crl_sign
    assert certs.fleet_of_ca(root.cert) == FLEET
    _, leaf = _leaf(issuer)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-1"
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert certs.cert_identity(leaf) == (FLEET, "device", "dev-1")


@pytest.mark.parametrize("intermediate", [False, True])
def test_verify_device_chain_reasons(intermediate: bool) -> None:
    root, issuer = _issuer(intermediate)
    inter = [der(issuer.cert)] if intermediate else []
    _, leaf = _leaf(issuer)
    at = NOW + timedelta(days=1)
    empty = certs.make_crl(issuer, [], now=NOW, next_update=NOW + timedelta(days=30), number=1)
    assert verify_device_chain(der(leaf), inter, [root.cert], empty, at) == "dev-1"
    assert verify_device_chain(der(leaf), inter, [root.cert], None, at, fleet=FLEET) == "dev-1"

    revoked = certs.make_crl(issuer, [(leaf.serial_number, NOW)], now=NOW, next_update=NOW + timedelta(days=30),
                             number=2)
    with pytest.raises(RevokedCertificate) as e:
        verify_device_chain(der(leaf), inter, [root.cert], revoked, at)
    assert e.value.reason == "revoked"

    with pytest.raises(ExpiredCertificate) as ex:
        verify_device_chain(der(leaf), inter, [root.cert], empty, NOW + timedelta(days=400))
    assert ex.value.reason == "expired"

    other_root, _ = _issuer()
    with pytest.raises(UntrustedCertificate) as u:
        verify_device_chain(der(leaf), inter, [other_root.cert], None, at)
    assert u.value.reason == "untrusted"

    with pytest.raises(StaleCrl):
        verify_device_chain(der(leaf), inter, [root.cert], empty, NOW + timedelta(days=31))

    _, agg = _leaf(issuer, "agg-1", role="aggregator")
    with pytest.raises(InvalidDeviceId) as b:
        verify_device_chain(der(agg), inter, [root.cert], None, at)
    assert b.value.reason == "bad_id"

    with pytest.raises(InvalidInput) as g:
        verify_device_chain(b"garbage", [], [root.cert], None, at)
    assert g.value.reason == "bad_cert"


def test_crl_from_another_issuer_is_untrusted() -> None:
    root, issuer = _issuer()
    _, leaf = _leaf(issuer)
    other, _ = _issuer()
    foreign = certs.make_crl(other, [], now=NOW, next_update=NOW + timedelta(days=30), number=1)
    with pytest.raises(UntrustedCertificate, match="CRL"):
        verify_chain(leaf, [], [root.cert], foreign, NOW + timedelta(days=1))


def test_bad_cn_is_refused_even_if_signed() -> None:
    root, issuer = _issuer()
    signer = SoftwareSigner.generate()
    with pytest.raises(InvalidDeviceId):
        cert = certs.issue_leaf(issuer, fleet=FLEET, identity="Bad_Id", public_key=signer.public_key(),
                                not_before=NOW, not_after=NOW + timedelta(days=1))
        verify_chain(cert, [], [root.cert], None, NOW + timedelta(hours=1))


def _entry(status: str = "active") -> RegistryEntry:
    s = SoftwareSigner.generate()
    pem = s.public_key().public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return RegistryEntry("dev-1", s.kid, -9, pem, 0xABC, NOW, NOW + timedelta(days=1), status)


def test_registry_round_trip_and_tamper_detection() -> None:
    reg = Registry(FLEET, "sha256:00", NOW, (_entry(), _entry("revoked")))
    text = registry_json(reg)
    back = parse_registry(text)
    assert back == reg
    doc = json.loads(text)
    assert set(doc["devices"][0]) >= {"device_id", "kid", "alg", "public_key", "serial", "not_before",
                                      "not_after", "status"}
    doc["devices"][0]["kid"] = "00" * 16
    with pytest.raises(InvalidInput, match="does not match its public key"):
        parse_registry(json.dumps(doc))
    with pytest.raises(InvalidInput, match="expected format"):
        parse_registry(json.dumps({"format": "other"}))
    with pytest.raises(InvalidInput, match="not JSON"):
        parse_registry("{")


def test_broker_config_text() -> None:
    paths = broker.BrokerPaths("/b/ca.pem", "/b/s.crt", "/b/s.key", "/b/crl.pem", "/b/edge.acl")
    conf = broker.render_listener(paths, port=8883, bind=None, fleet=FLEET, ca_fingerprint="sha256:00")
    for line in ("listener 8883", "require_certificate true", "use_identity_as_username true",
                 "crlfile /b/crl.pem", "acl_file /b/edge.acl", "allow_anonymous false"):
        assert line in conf.splitlines()
    acl = broker.render_acl("edge/v1", ["agg-2", "agg-1"])
    assert "pattern write edge/v1/%u/#" not in acl and "pattern read edge/v1/%u/ack" in acl
    assert "pattern write edge/v1/%u/result/+" in acl and "pattern write edge/v1/%u/status" in acl
    assert not any(line.startswith("pattern write") and line.endswith("/ack") for line in acl.splitlines())
    assert acl.index("user agg-1") < acl.index("user agg-2")
    assert "topic write edge/v1/+/ack" in acl
    with pytest.raises(InvalidInput):
        broker.render_acl("edge/#", [])
    with pytest.raises(InvalidInput):
        broker.render_acl("edge/v1", ["Bad Name"])


def test_docs_broker_acl_block_is_what_render_acl_writes() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "broker.md").read_text()
    start = text.index("## The ACL\n\n```\n") + len("## The ACL\n\n```\n")
    block = text[start:text.index("```", start)].strip()
    acl = broker.render_acl("edge/v1", ["agg-1"])
    assert block == "\n".join(line for line in acl.splitlines() if line and not line.startswith("#"))

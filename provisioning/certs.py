"""Pure X.509 builders for the fleet PKI: root, intermediate, device/aggregator/server certificates, CRLs.

Time, serial numbers and keys are passed in, so tests can make expired certificates and stale CRLs without
clock tricks. The profile is fixed by DESIGN §6: P-256 CA with BasicConstraints CA=true and
keyCertSign/cRLSign; leaves with CN = id, a SPIFFE SAN URI, clientAuth EKU and digitalSignature.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from envelope import PublicKey
from provisioning.csr import parse_spiffe_uri, spiffe_uri
from provisioning.errors import InvalidDeviceId, InvalidInput

ROLES = ("device", "aggregator")


@dataclass(frozen=True)
class Issuer:
    """A CA that signs: its key and certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(cn: str, fleet: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if fleet:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, fleet))
    return x509.Name(attrs)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )


def _leaf_key_usage(key_agreement: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=key_agreement, key_cert_sign=False, crl_sign=False, encipher_only=False,
        decipher_only=False,
    )


def make_root(fleet: str, key: ec.EllipticCurvePrivateKey, now: datetime, days: int) -> x509.Certificate:
    """A self-signed fleet root; the fleet name is in O and in a ``spiffe://<fleet>`` SAN URI."""
    name = _name(f"{fleet} fleet root CA", fleet)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{fleet}")]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )


def make_intermediate(
    root: Issuer, fleet: str, key: ec.EllipticCurvePrivateKey, now: datetime, days: int
) -> x509.Certificate:
    """An issuing CA under ``root`` (path length 0: it signs only leaves)."""
    return (
        x509.CertificateBuilder()
        .subject_name(_name(f"{fleet} fleet issuing CA", fleet))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=days), root.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_aki(root.cert), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{fleet}")]),
                       critical=False)
        .sign(root.key, hashes.SHA256())
    )


def _aki(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def issue_leaf(
    issuer: Issuer,
    *,
    fleet: str,
    identity: str,
    public_key: PublicKey,
    not_before: datetime,
    not_after: datetime,
    serial: int | None = None,
    role: str = "device",
) -> x509.Certificate:
    """A client certificate for a device or an aggregator: CN = identity, SPIFFE SAN, clientAuth."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {ROLES}, got {role!r}")
    return (
        x509.CertificateBuilder()
        .subject_name(_name(identity))
        .issuer_name(issuer.cert.subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_uri(fleet, identity, role))]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(issuer.cert), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


def issue_server(
    issuer: Issuer, *, hostnames: Sequence[str], public_key: PublicKey, now: datetime, days: int
) -> x509.Certificate:
    """A TLS server certificate for the broker (serverAuth, SAN DNS names and IP addresses)."""
    if not hostnames:
        raise InvalidInput("a server certificate needs at least one hostname or IP address")
    sans: list[x509.GeneralName] = []
    for h in hostnames:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    return (
        x509.CertificateBuilder()
        .subject_name(_name(hostnames[0]))
        .issuer_name(issuer.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=days), issuer.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(key_agreement=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_aki(issuer.cert), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


def make_crl(
    issuer: Issuer,
    revoked: Iterable[tuple[int, datetime]],
    *,
    now: datetime,
    next_update: datetime,
    number: int,
) -> x509.CertificateRevocationList:
    """A CRL from ``issuer`` listing ``(serial, revocation time)`` pairs."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(now - timedelta(minutes=1))
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_aki(issuer.cert), critical=False)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(issuer.key, hashes.SHA256())


def fingerprint(cert: x509.Certificate) -> str:
    """``sha256:<hex>`` of the certificate DER: how docs, status and the registry name a CA."""
    return "sha256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def fleet_of_ca(cert: x509.Certificate) -> str | None:
    """The fleet name a CA certificate carries (SAN ``spiffe://<fleet>``), if any."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://") and "/" not in uri[len("spiffe://"):]:
            return uri[len("spiffe://"):]
    return None


def cert_identity(cert: x509.Certificate) -> tuple[str, str, str]:
    """``(fleet, role, id)`` from a leaf's SPIFFE SAN URI; ``InvalidDeviceId`` if it has none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
    if len(uris) != 1:
        raise InvalidDeviceId(f"certificate must carry exactly one spiffe:// SAN URI, found {len(uris)}")
    return parse_spiffe_uri(uris[0])


def pem(*certs: x509.Certificate) -> bytes:
    """Concatenated PEM of ``certs`` (leaf first for chains)."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def load_certificates(data: bytes, *, source: str = "certificate") -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, or the single certificate of a DER blob."""
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as e:
        raise InvalidInput(f"{source} is not a PEM or DER X.509 certificate ({e})", reason="bad_cert") from e
    if not certs:
        raise InvalidInput(f"{source} holds no certificate", reason="bad_cert")
    return certs

"""Pure checks of a device certificate against the fleet trust anchors and CRL (no I/O, time passed in).

Used by ``device install-cert`` and by aggregators verifying the x5chain of a birth record. Every failure is
an ``InvalidInput`` child whose ``reason`` says which check failed: ``untrusted``, ``revoked``, ``expired``,
``bad_id`` (or ``stale_crl``, ``bad_cert``), so rejects can be counted by cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from envelope.names import is_valid_device_id
from provisioning.certs import cert_identity
from provisioning.errors import (
    ExpiredCertificate,
    InvalidDeviceId,
    InvalidInput,
    RevokedCertificate,
    StaleCrl,
    UntrustedCertificate,
)

CrlArg = x509.CertificateRevocationList | Sequence[x509.CertificateRevocationList] | None


def load_crl(source: bytes | str | Path) -> x509.CertificateRevocationList:
    """Parse a CRL from PEM/DER bytes, or read it from a path (``str``/``Path``)."""
    if isinstance(source, bytes):
        data, where = source, "CRL"
    else:
        where = f"CRL file {source}"
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise InvalidInput(f"{where} cannot be read: {e.strerror}", reason="bad_crl") from e
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as e:
        raise InvalidInput(f"{where} is not a PEM or DER X.509 CRL ({e})", reason="bad_crl") from e


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def leaf_identity(leaf: x509.Certificate, *, role: str = "device", fleet: str | None = None) -> str:
    """The id a leaf certifies: CN, which must equal the SAN's id, have the device-id shape and ``role``."""
    cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise InvalidDeviceId(f"certificate subject must hold exactly one CN, found {len(cns)}")
    raw = cns[0].value
    cn = raw if isinstance(raw, str) else raw.decode(errors="replace")
    if not is_valid_device_id(cn):
        raise InvalidDeviceId(f"certificate CN {cn!r} is not a valid device id (3-64 of a-z, 0-9, '-')")
    san_fleet, san_role, san_id = cert_identity(leaf)
    if san_id != cn:
        raise InvalidDeviceId(f"certificate CN {cn!r} and SAN id {san_id!r} disagree")
    if san_role != role:
        raise InvalidDeviceId(f"certificate is for a {san_role}, expected a {role}")
    if fleet is not None and san_fleet != fleet:
        raise UntrustedCertificate(f"certificate is for fleet {san_fleet!r}, expected fleet {fleet!r}")
    return cn


def _check_crl(leaf: x509.Certificate, issuer: x509.Certificate, crls: Sequence[x509.CertificateRevocationList],
               at: datetime) -> None:
    matching = [c for c in crls if c.issuer == issuer.subject]
    if not matching:
        raise UntrustedCertificate(f"no CRL from the certificate's issuer {issuer.subject.rfc4514_string()!r}")
    pub = issuer.public_key()
    if not isinstance(pub, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise UntrustedCertificate("issuer key type cannot sign CRLs of this fleet")
    for crl in matching:
        if not crl.is_signature_valid(pub):
            raise UntrustedCertificate("the CRL's signature does not verify with its issuer's key")
        nxt = crl.next_update_utc
        if nxt is not None and nxt < at:
            raise StaleCrl(
                f"the CRL expired at {nxt.isoformat()} (checked at {at.isoformat()}); "
                "issue a new one with `edge-provision ca crl`"
            )
        rev = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
        if rev is not None:
            raise RevokedCertificate(
                f"certificate serial {leaf.serial_number:x} was revoked at {rev.revocation_date_utc.isoformat()}"
            )


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    ca_certs: Sequence[x509.Certificate],
    crl: CrlArg,
    at_time: datetime,
    *,
    role: str = "device",
    fleet: str | None = None,
) -> str:
    """``verify_device_chain`` over parsed certificates; returns the identity (CN)."""
    at = _utc(at_time)
    if not ca_certs:
        raise UntrustedCertificate("no trusted fleet CA certificate given")
    if at > leaf.not_valid_after_utc:
        raise ExpiredCertificate(f"certificate expired at {leaf.not_valid_after_utc.isoformat()} "
                                 f"(checked at {at.isoformat()})")
    if at < leaf.not_valid_before_utc:
        raise ExpiredCertificate(f"certificate is not valid before {leaf.not_valid_before_utc.isoformat()} "
                                 f"(checked at {at.isoformat()}; is the clock right?)")
    identity = leaf_identity(leaf, role=role, fleet=fleet)
    try:
        verifier = PolicyBuilder().store(Store(list(ca_certs))).time(at).build_client_verifier()
        verified = verifier.verify(leaf, list(intermediates))
    except VerificationError as e:
        raise UntrustedCertificate(f"certificate does not chain to the fleet CA: {e}") from e
    chain = verified.chain
    if crl is not None:
        crls = [crl] if isinstance(crl, x509.CertificateRevocationList) else list(crl)
        issuer = chain[1] if len(chain) > 1 else chain[0]
        _check_crl(leaf, issuer, crls, at)
    return identity


def verify_device_chain(
    leaf_der: bytes,
    intermediates_der: Sequence[bytes],
    ca_certs: Sequence[x509.Certificate],
    crl: CrlArg,
    at_time: datetime,
    *,
    fleet: str | None = None,
) -> str:
    """Check a device certificate (DER) and its intermediates against the fleet CA(s) and CRL at ``at_time``.

    Returns the device id. Raises ``ExpiredCertificate`` (reason ``expired``), ``UntrustedCertificate``
    (``untrusted``; ``StaleCrl`` ``stale_crl``), ``RevokedCertificate`` (``revoked``), ``InvalidDeviceId``
    (``bad_id``) or ``InvalidInput`` (``bad_cert``) for bytes that are not a certificate.
    """
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
        inter = [x509.load_der_x509_certificate(d) for d in intermediates_der]
    except ValueError as e:
        raise InvalidInput(f"device certificate chain is not DER X.509 ({e})", reason="bad_cert") from e
    return verify_chain(leaf, inter, ca_certs, crl, at_time, fleet=fleet)

"""Certificate chains of the fleet, checked the same way by agents and aggregators (DESIGN §6, §8).

Pure over ``cryptography`` objects (time passed in, no I/O). A leaf chains to a configured fleet root
through intermediates taken from the x5chain it came with or from a configured bundle; every CA on the
verified path may have published a CRL, and each one found is checked (signature by that CA, freshness,
the serial below it). The leaf's CRL issuer must have one once any CRL is configured, so revocation
cannot be skipped by omission. The role and id come from the SPIFFE SAN ``spiffe://<fleet>/<role>/<id>``.

``verify_receipt`` is the one check a device runs before it deletes anything: chain to the fleet root,
aggregator role, CRLs, the header's key is the certificate's, the signature, the aggregator id the payload
names, and the device id. Every cause becomes one ``InvalidReceipt`` with a ``reason``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from envelope import EnvelopeError, MalformedReceipt, Receipt, kid_for, open_receipt, receipt_header
from envelope.receipt import DEFAULT_MAX_RECEIPT_BYTES
from envelope.record import sig_structure, verify_signature
from provisioning.certs import cert_identity, fleet_of_ca
from provisioning.errors import (
    ExpiredCertificate,
    InvalidInput,
    RevokedCertificate,
    StaleCrl,
    UntrustedCertificate,
)
from provisioning.verify import leaf_identity

Crls = Sequence[x509.CertificateRevocationList]

# Every reason verify_receipt can give (docs/envelope.md §6); tests check the code against this list.
RECEIPT_REASONS = (
    "malformed", "oversize", "not_cbor", "not_sign1", "bad_header", "bad_alg", "bad_content_type", "no_x5chain",
    "bad_payload", "bad_version", "bad_cert", "untrusted", "revoked", "expired", "stale_crl", "bad_id",
    "key_mismatch", "bad_signature", "wrong_aggregator", "wrong_device",
)


class InvalidReceipt(Exception):
    """A receipt that must not be acted on. ``reason`` is a stable code from ``RECEIPT_REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _public(cert: x509.Certificate) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
    key = cert.public_key()
    if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise UntrustedCertificate(f"key type {type(key).__name__} of {cert.subject.rfc4514_string()} "
                                   "is not P-256 or Ed25519")
    return key


def check_crls(path: Sequence[x509.Certificate], crls: Crls, at: datetime) -> None:
    """Check every certificate of a verified ``path`` (leaf first, root last) against its issuer's CRLs.

    A CRL counts only when its issuer name matches and its signature verifies with that issuer's key.
    Once any CRL is configured, the leaf's issuer must have one (``untrusted`` otherwise).
    """
    if not crls:
        return
    for depth, (cert, issuer) in enumerate(itertools.pairwise(path)):
        matching = [c for c in crls if c.issuer == issuer.subject]
        if not matching:
            if depth == 0:
                raise UntrustedCertificate(f"no CRL from the certificate's issuer {issuer.subject.rfc4514_string()!r}")
            continue
        public = _public(issuer)
        valid = [c for c in matching if c.is_signature_valid(public)]
        if not valid:
            raise UntrustedCertificate(f"the CRL of {issuer.subject.rfc4514_string()!r} is not signed by it")
        for crl in valid:
            nxt = crl.next_update_utc
            if nxt is not None and nxt < at:
                raise StaleCrl(f"the CRL of {issuer.subject.rfc4514_string()!r} expired at {nxt.isoformat()} "
                               f"(checked at {at.isoformat()}); issue a new one with `edge-provision ca crl`")
            rev = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if rev is not None:
                raise RevokedCertificate(f"certificate {cert.subject.rfc4514_string()!r} serial "
                                         f"{cert.serial_number:x} was revoked at {rev.revocation_date_utc.isoformat()}")


def verified_path(chain_der: Sequence[bytes], cas: Sequence[x509.Certificate], crls: Crls, now: datetime,
                  role: str, *, bundle: Sequence[x509.Certificate] = ()) -> list[x509.Certificate]:
    """The verified path [leaf, intermediates..., root] of ``chain_der`` (leaf first); raises ``InvalidInput``.

    Reasons: ``bad_cert`` (not DER X.509), ``expired``, ``bad_id`` (CN/SAN/role), ``untrusted`` (no path
    to a root, wrong fleet, CRL missing or not signed by its CA), ``stale_crl``, ``revoked``.
    """
    at = _utc(now)
    if not chain_der:
        raise InvalidInput("no certificate given", reason="bad_cert")
    if not cas:
        raise UntrustedCertificate("no trusted fleet CA certificate given")
    try:
        leaf = x509.load_der_x509_certificate(bytes(chain_der[0]))
        carried = [x509.load_der_x509_certificate(bytes(d)) for d in chain_der[1:]]
        if at > leaf.not_valid_after_utc:
            raise ExpiredCertificate(f"certificate expired at {leaf.not_valid_after_utc.isoformat()} "
                                     f"(checked at {at.isoformat()})")
        if at < leaf.not_valid_before_utc:
            raise ExpiredCertificate(f"certificate is not valid before {leaf.not_valid_before_utc.isoformat()} "
                                     f"(checked at {at.isoformat()}; is the clock right?)")
        leaf_identity(leaf, role=role)
        try:
            verifier = PolicyBuilder().store(Store(list(cas))).time(at).build_client_verifier()
            path = list(verifier.verify(leaf, carried + list(bundle)).chain)
        except VerificationError as e:
            raise UntrustedCertificate(f"certificate does not chain to a fleet CA: {e}") from e
        fleet, _, _ = cert_identity(leaf)
        root_fleet = fleet_of_ca(path[-1])
        if root_fleet is not None and root_fleet != fleet:
            raise UntrustedCertificate(f"certificate is for fleet {fleet!r}, the root is fleet {root_fleet!r}")
        check_crls(path, crls, at)
        return path
    except InvalidInput:
        raise
    except Exception as e:  # ValueError, TypeError, UnsupportedAlgorithm... from broken certificates
        raise InvalidInput(f"certificate chain is not usable X.509: {type(e).__name__}: {e}", reason="bad_cert") from e


def verify_chain(chain_der: Sequence[bytes], cas: Sequence[x509.Certificate], crls: Crls, now: datetime,
                 role: str, *, bundle: Sequence[x509.Certificate] = ()) -> tuple[str, str, str]:
    """Verify a leaf-first DER chain for ``role``; returns ``(fleet, role, id)`` from the leaf's SAN."""
    path = verified_path(chain_der, cas, crls, now, role, bundle=bundle)
    return cert_identity(path[0])


def verify_receipt(data: bytes | bytearray | memoryview, cas: Sequence[x509.Certificate], crls: Crls, now: datetime,
                   device_id: str, *,
                   bundle: Sequence[x509.Certificate] = (), max_bytes: int = DEFAULT_MAX_RECEIPT_BYTES) -> Receipt:
    """The receipt in ``data`` if it is valid for ``device_id``; raises ``InvalidReceipt`` otherwise.

    Does not judge ``settled`` against earlier receipts: that is the device's delivery state.
    """
    try:
        receipt, msg = open_receipt(data, max_bytes)
        header = receipt_header(msg)
    except MalformedReceipt as e:
        raise InvalidReceipt(e.reason, f"receipt is malformed: {e}") from e
    try:
        path = verified_path(header.x5chain, cas, crls, now, "aggregator", bundle=bundle)
    except InvalidInput as e:
        raise InvalidReceipt(e.reason, f"receipt signer certificate refused: {e}") from e
    leaf = path[0]
    try:
        public = _public(leaf)
    except InvalidInput as e:
        raise InvalidReceipt("bad_cert", str(e)) from e
    if kid_for(public) != header.kid:
        raise InvalidReceipt("key_mismatch", f"receipt kid {header.kid.hex()} is not the certificate's key "
                             f"{kid_for(public).hex()}")
    try:
        verify_signature(header.alg, public, sig_structure(msg.protected, msg.payload), msg.signature)
    except EnvelopeError as e:
        raise InvalidReceipt("bad_signature" if e.reason == "bad_signature" else "bad_alg",
                             f"receipt signature refused: {e}") from e
    _, _, agg_id = cert_identity(leaf)
    if receipt.agg != agg_id:
        raise InvalidReceipt("wrong_aggregator", f"receipt names aggregator {receipt.agg!r}, its certificate "
                             f"is for {agg_id!r}")
    if receipt.dev != device_id:
        raise InvalidReceipt("wrong_device", f"receipt is for device {receipt.dev!r}, expected {device_id!r}")
    return receipt

"""Which public keys may sign which device's records: fleet CA(s), CRLs, learned and registered devices.

A device key is trusted when its certificate chains to a fleet CA, is within validity, is not revoked and
names the device (CN or SPIFFE SAN), or when the operator's registry (exported by ``edge-provision``) lists
it. Keys are found by kid (DESIGN §3). Revocation and expiry are checked on every lookup, so a CRL reload
takes effect for devices learned before it. No file I/O here except in ``load_*`` helpers at the bottom.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from aggregator.errors import Rejected, TrustError
from envelope import PublicKey, kid_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceKey:
    """A trusted public key and the device it speaks for."""

    device_id: str
    kid: bytes
    public_key: PublicKey
    source: str  # "x5chain" or "registry"
    certificate: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()  # the certificate, then intermediates, as verified


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def cert_device_ids(cert: x509.Certificate) -> set[str]:
    """Device ids a certificate names: its subject CN and any ``spiffe://<fleet>/device/<id>`` SAN URI."""
    ids = {str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ids
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://") and "/device/" in uri:
            ids.add(uri.rsplit("/device/", 1)[1])
    return ids


def check_device_chain(chain_der: Sequence[bytes], device_id: str, cas: Sequence[x509.Certificate],
                       now: datetime) -> list[x509.Certificate]:
    """Verify a device certificate chain to a fleet CA at ``now``; returns the verified path, leaf first.

    The single place the chain rule lives (switch to ``provisioning.verify_device_chain`` once it exists):
    parseable DER, leaf within validity, path to one of ``cas`` (cryptography's client verifier: signatures,
    CA constraints, key usage, clientAuth), and the leaf's CN or SPIFFE SAN equal to ``device_id``.
    Revocation is checked by the caller against the CRLs it holds.
    """
    if not chain_der:
        raise Rejected("bad_chain", "birth record carries no certificate", device_id=device_id)
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as e:
        raise Rejected("bad_chain", f"x5chain holds a certificate that is not DER X.509: {e}",
                       device_id=device_id) from e
    leaf = certs[0]
    if now > leaf.not_valid_after_utc:
        raise Rejected("cert_expired", f"device certificate expired at {leaf.not_valid_after_utc.isoformat()}",
                       device_id=device_id)
    if now < leaf.not_valid_before_utc:
        raise Rejected("cert_not_yet_valid",
                       f"device certificate is valid only from {leaf.not_valid_before_utc.isoformat()}",
                       device_id=device_id)
    if not cas:
        raise Rejected("bad_chain", "no fleet CA configured to verify the certificate against", device_id=device_id)
    names = cert_device_ids(leaf)
    if device_id not in names:
        raise Rejected("key_mismatch", f"certificate names {sorted(names)}, the topic names {device_id!r}",
                       device_id=device_id)
    verifier = PolicyBuilder().store(Store(list(cas))).time(now).build_client_verifier()
    try:
        verified = verifier.verify(leaf, certs[1:])
    except VerificationError as e:
        raise Rejected("bad_chain", f"certificate does not chain to the fleet CA: {e}", device_id=device_id) from e
    return list(verified.chain)


class TrustStore:
    """Fleet CAs, CRLs and the keys of known devices, by kid. Thread-safe; lookups are dict reads."""

    def __init__(self, cas: Iterable[x509.Certificate] = (), crls: Iterable[x509.CertificateRevocationList] = (),
                 registry: Iterable[DeviceKey] = ()) -> None:
        self._lock = threading.Lock()
        self._cas = list(cas)
        self._revoked: dict[bytes, set[int]] = {}
        self._keys: dict[bytes, DeviceKey] = {}
        self.set_crls(crls)
        for key in registry:
            self.add(key)

    @property
    def cas(self) -> list[x509.Certificate]:
        return list(self._cas)

    def set_crls(self, crls: Iterable[x509.CertificateRevocationList]) -> None:
        """Replace the CRLs. Each must be signed by one of the CAs; revocation applies to later lookups."""
        revoked: dict[bytes, set[int]] = {}
        for crl in crls:
            issuer = next((ca for ca in self._cas if ca.subject == crl.issuer), None)
            if issuer is None or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                raise TrustError(f"CRL issued by {crl.issuer.rfc4514_string()} is not signed by a fleet CA")
            serials = revoked.setdefault(crl.issuer.public_bytes(), set())
            serials.update(r.serial_number for r in crl)
        with self._lock:
            self._revoked = revoked

    def is_revoked(self, cert: x509.Certificate) -> bool:
        """True when ``cert``'s serial appears on a CRL of its issuer."""
        return cert.serial_number in self._revoked.get(cert.issuer.public_bytes(), ())

    def add(self, key: DeviceKey) -> None:
        """Trust ``key`` for its device (registry entries, keys learned from a verified chain)."""
        with self._lock:
            self._keys[key.kid] = key

    def known(self) -> list[DeviceKey]:
        with self._lock:
            return list(self._keys.values())

    def key_for(self, kid: bytes, now: datetime) -> DeviceKey:
        """The trusted key with ``kid``; raises ``Rejected`` if unknown, revoked or expired at ``now``."""
        key = self._keys.get(kid)
        if key is None:
            raise Rejected("unknown_kid", f"no trusted key has kid {kid.hex()[:64]}")
        for cert in key.chain:
            if self.is_revoked(cert):
                raise Rejected("revoked", f"certificate serial {cert.serial_number:x} of {key.device_id} is revoked",
                               device_id=key.device_id)
        if key.certificate is not None and now > key.certificate.not_valid_after_utc:
            raise Rejected("cert_expired", f"certificate of {key.device_id} expired at "
                           f"{key.certificate.not_valid_after_utc.isoformat()}", device_id=key.device_id)
        return key

    def learn_chain(self, device_id: str, x5chain: Sequence[bytes], kid: bytes, now: datetime) -> DeviceKey:
        """Verify a birth record's chain for ``device_id`` and return its key (not yet added: verify first)."""
        path = check_device_chain(x5chain, device_id, self._cas, now)
        for cert in path[:-1]:  # the anchor itself is trusted configuration
            if self.is_revoked(cert):
                raise Rejected("revoked", f"certificate serial {cert.serial_number:x} is revoked", device_id=device_id)
        leaf = path[0]
        public = leaf.public_key()
        if not isinstance(public, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
            raise Rejected("bad_chain", f"certificate key type {type(public).__name__} is not P-256 or Ed25519",
                           device_id=device_id)
        if kid_for(public) != kid:
            raise Rejected("key_mismatch", f"record kid {kid.hex()} is not the certificate's key "
                           f"{kid_for(public).hex()}", device_id=device_id)
        return DeviceKey(device_id, kid, public, "x5chain", leaf, tuple(path[:-1]))


# ---- loading from files (the thin I/O part) ----------------------------------------------------------


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """All PEM certificates in a file."""
    try:
        data = Path(path).read_bytes()
        return x509.load_pem_x509_certificates(data)
    except (OSError, ValueError) as e:
        raise TrustError(f"{path}: expected PEM certificate(s): {e}") from e


def load_crl(path: str | Path) -> x509.CertificateRevocationList:
    """A CRL in PEM or DER."""
    try:
        data = Path(path).read_bytes()
        if data.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except (OSError, ValueError) as e:
        raise TrustError(f"{path}: expected a PEM or DER CRL: {e}") from e


def _public_key(text: str, where: str) -> PublicKey:
    raw = text.encode()
    try:
        key = (serialization.load_pem_public_key(raw) if text.lstrip().startswith("-----")
               else serialization.load_der_public_key(base64.b64decode(raw)))
    except ValueError as e:
        raise TrustError(f"{where}: public_key is neither PEM nor base64 SPKI DER: {e}") from e
    if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise TrustError(f"{where}: public key must be P-256 or Ed25519, got {type(key).__name__}")
    return key


def registry_entries(doc: Any, where: str, cas: Sequence[x509.Certificate], now: datetime) -> list[DeviceKey]:
    """Device keys from a registry document: ``{"devices": [...]}`` or a list of entries.

    Each entry has ``device_id`` and ``public_key`` (PEM or base64 SPKI DER) and/or ``certificate`` (PEM).
    A certificate is checked to the fleet CA (expiry and revocation again at each lookup); a bare key is
    trusted because the operator exported it. ``kid`` (hex), when present, must match the key.
    """
    entries = doc.get("devices") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise TrustError(f"{where}: expected a list of devices or {{\"devices\": [...]}}")
    keys: list[DeviceKey] = []
    for i, entry in enumerate(entries):
        at = f"{where}: devices[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("device_id"), str):
            raise TrustError(f"{at}: expected an object with a device_id string")
        device_id = entry["device_id"]
        cert_pem = entry.get("certificate") or entry.get("cert_pem") or entry.get("certificate_pem")
        cert = None
        chain: tuple[x509.Certificate, ...] = ()
        if isinstance(cert_pem, str):
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
            if cas:
                try:
                    path = check_device_chain([cert.public_bytes(serialization.Encoding.DER)], device_id, cas,
                                              max(now, cert.not_valid_before_utc))
                except Rejected as e:
                    if e.reason != "cert_expired":
                        raise TrustError(f"{at}: certificate rejected: {e}") from e
                    path = [cert]
                chain = tuple(path[:-1]) if len(path) > 1 else (cert,)
            else:
                chain = (cert,)
            public = cert.public_key()
            if not isinstance(public, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
                raise TrustError(f"{at}: certificate key must be P-256 or Ed25519")
        elif isinstance(entry.get("public_key"), str):
            public = _public_key(entry["public_key"], at)
        else:
            raise TrustError(f"{at}: needs a certificate (PEM) or a public_key")
        kid = kid_for(public)
        if isinstance(entry.get("kid"), str) and entry["kid"].lower() != kid.hex():
            raise TrustError(f"{at}: kid {entry['kid']} does not match the key (expected {kid.hex()})")
        keys.append(DeviceKey(device_id, kid, public, "registry", cert, chain))
    return keys


def load_registry(path: str | Path, cas: Sequence[x509.Certificate], now: datetime) -> list[DeviceKey]:
    """Read a registry JSON file exported by the provisioning tools."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise TrustError(f"{path}: expected a registry JSON file: {e}") from e
    return registry_entries(doc, str(path), cas, now)


def load_trust_store(ca_files: Sequence[str], crl_files: Sequence[str] = (), registry_files: Sequence[str] = (),
                     now: datetime | None = None) -> TrustStore:
    """Build a ``TrustStore`` from files named in the config."""
    now = now or datetime.now(timezone.utc)
    cas = [c for f in ca_files for c in load_certificates(f)]
    store = TrustStore(cas, [load_crl(f) for f in crl_files])
    for f in registry_files:
        for key in load_registry(f, cas, now):
            store.add(key)
    log.info("trust store: %d CA certificate(s), %d CRL(s), %d registered key(s)",
             len(cas), len(crl_files), len(store.known()))
    return store

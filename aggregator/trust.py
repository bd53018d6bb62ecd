"""Which public keys may sign which device's records: fleet CA(s), CRLs, learned and registered devices.

A device key is trusted when its certificate chains to a fleet root (intermediates from the birth record's
x5chain or a configured bundle), is within validity, neither it nor a CA above it is revoked (the CRL of any
CA on the path), and it names the device (``provisioning.chain``: role device, CN = SAN id), or when the
operator's registry (``edge-provision fleet export-registry``, read with ``provisioning.load_registry``)
lists it as active. Keys are found by kid (DESIGN §3). Revocation and expiry are checked again on every lookup, so a CRL
reload takes effect for devices learned before it. No file I/O except in the ``load_*`` helpers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

import provisioning
from aggregator.errors import Rejected, TrustError
from envelope import PublicKey, kid_for
from provisioning.chain import verified_path

log = logging.getLogger(__name__)

# provisioning's reason codes -> the aggregator's reject reasons (docs/aggregator.md)
_CHAIN_REASONS = {"expired": "cert_expired", "revoked": "revoked", "untrusted": "bad_chain",
                  "bad_cert": "bad_chain", "bad_id": "key_mismatch", "stale_crl": "stale_crl"}


@dataclass(frozen=True)
class DeviceKey:
    """A trusted public key and the device it speaks for."""

    device_id: str
    kid: bytes
    public_key: PublicKey
    source: str  # "x5chain" or "registry"
    serial: int | None = None
    issuer: bytes | None = None  # DER of the issuer name (the CRL lookup key)
    not_after: datetime | None = None
    revoked: bool = False  # the registry already marked it revoked
    ancestors: tuple[tuple[bytes, int], ...] = ()  # (issuer DER, serial) of the CAs between it and the root


def check_device_chain(chain_der: Sequence[bytes], device_id: str, cas: Sequence[x509.Certificate],
                       crls: Sequence[x509.CertificateRevocationList], now: datetime,
                       bundle: Sequence[x509.Certificate] = ()) -> list[x509.Certificate]:
    """Verify a birth record's x5chain for ``device_id`` at ``now``; returns the path [leaf, ..., root].

    Delegates to ``provisioning.chain.verified_path`` (path to a fleet root through carried or bundled
    intermediates, validity, role, CN = SAN id, CRLs of every CA on the path) and maps its reasons to reject
    reasons; then checks that the certified id is the topic's device.
    """
    if not chain_der:
        raise Rejected("bad_chain", "birth record carries no certificate", device_id=device_id)
    try:
        path = verified_path(chain_der, cas, crls, now, "device", bundle=bundle)
    except provisioning.InvalidInput as e:
        raise Rejected(_CHAIN_REASONS.get(e.reason, "bad_chain"), f"device certificate refused: {e}",
                       device_id=device_id) from e
    leaf = path[0]
    identity = provisioning.leaf_identity(leaf)
    if identity != device_id:
        raise Rejected("key_mismatch", f"certificate names device {identity!r}, the topic names {device_id!r}",
                       device_id=device_id)
    return path


class TrustStore:
    """Fleet CAs, CRLs and the keys of known devices, by kid. Thread-safe; lookups are dict reads."""

    def __init__(self, cas: Iterable[x509.Certificate] = (), crls: Iterable[x509.CertificateRevocationList] = (),
                 registry: Iterable[DeviceKey] = (), bundle: Iterable[x509.Certificate] = ()) -> None:
        self._lock = threading.Lock()
        self._cas = list(cas)
        self._bundle = list(bundle)  # intermediates a birth record's x5chain may leave out
        self._crls: list[x509.CertificateRevocationList] = []
        self._revoked: set[tuple[bytes, int]] = set()
        self._revoked_serials: set[int] = set()
        self._keys: dict[bytes, DeviceKey] = {}
        self.set_crls(crls)
        for key in registry:
            self.add(key)

    @property
    def cas(self) -> list[x509.Certificate]:
        return list(self._cas)

    @property
    def bundle(self) -> list[x509.Certificate]:
        return list(self._bundle)

    def set_crls(self, crls: Iterable[x509.CertificateRevocationList]) -> None:
        """Replace the CRLs; revocation applies to later lookups.

        A CRL whose issuer is a configured CA (root or bundle) must be signed by it. A CRL of an intermediate
        that only birth records carry cannot be checked yet: it is kept, and each chain check verifies it
        against the intermediate on the path (a forged one then refuses that path: it fails closed).
        """
        crls = list(crls)
        revoked: set[tuple[bytes, int]] = set()
        for crl in crls:
            issuer = next((ca for ca in self._cas + self._bundle if ca.subject == crl.issuer), None)
            if issuer is None:
                log.info("CRL of %s: its CA is not configured; checked against the chain that names it",
                         crl.issuer.rfc4514_string())
            else:
                public = issuer.public_key()
                if not isinstance(public, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)) or \
                        not crl.is_signature_valid(public):
                    raise TrustError(f"CRL issued by {crl.issuer.rfc4514_string()} is not signed by that CA")
            revoked.update((crl.issuer.public_bytes(), r.serial_number) for r in crl)
        with self._lock:
            self._crls = crls
            self._revoked = revoked
            self._revoked_serials = {serial for _, serial in revoked}

    def add(self, key: DeviceKey) -> None:
        """Trust ``key`` for its device (registry entries, keys learned from a verified chain)."""
        with self._lock:
            self._keys[key.kid] = key

    def known(self) -> list[DeviceKey]:
        with self._lock:
            return list(self._keys.values())

    def _is_revoked(self, key: DeviceKey) -> bool:
        if key.revoked or any(a in self._revoked for a in key.ancestors):
            return True
        if key.serial is None:
            return False
        if key.issuer is None:
            return key.serial in self._revoked_serials
        return (key.issuer, key.serial) in self._revoked

    def key_for(self, kid: bytes, now: datetime) -> DeviceKey:
        """The trusted key with ``kid``; raises ``Rejected`` if unknown, revoked or expired at ``now``."""
        key = self._keys.get(kid)
        if key is None:
            raise Rejected("unknown_kid", f"no trusted key has kid {kid.hex()[:64]}")
        if self._is_revoked(key):
            raise Rejected("revoked", f"the certificate of {key.device_id} (kid {kid.hex()}) is revoked",
                           device_id=key.device_id)
        if key.not_after is not None and now > key.not_after:
            raise Rejected("cert_expired", f"the certificate of {key.device_id} expired at "
                           f"{key.not_after.isoformat()}", device_id=key.device_id)
        return key

    def learn_chain(self, device_id: str, x5chain: Sequence[bytes], kid: bytes, now: datetime) -> DeviceKey:
        """Verify a birth record's chain for ``device_id``; returns its key (the caller adds it once the
        record's signature also verified)."""
        path = check_device_chain(x5chain, device_id, self._cas, self._crls, now, self._bundle)
        leaf = path[0]
        public = leaf.public_key()
        if not isinstance(public, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
            raise Rejected("bad_chain", f"certificate key type {type(public).__name__} is not P-256 or Ed25519",
                           device_id=device_id)
        if kid_for(public) != kid:
            raise Rejected("key_mismatch", f"record kid {kid.hex()} is not the certificate's key "
                           f"{kid_for(public).hex()}", device_id=device_id)
        ancestors = tuple((c.issuer.public_bytes(), c.serial_number) for c in path[1:-1])
        return DeviceKey(device_id, kid, public, "x5chain", leaf.serial_number, leaf.issuer.public_bytes(),
                         leaf.not_valid_after_utc, ancestors=ancestors)


# ---- loading from files (the thin I/O part) ----------------------------------------------------------


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """All certificates in a PEM (or DER) file."""
    try:
        return provisioning.load_certificates(Path(path).read_bytes(), source=str(path))
    except OSError as e:
        raise TrustError(f"{path}: cannot read CA certificate file: {e.strerror or e}") from e
    except provisioning.InvalidInput as e:
        raise TrustError(str(e)) from e


def load_crl(path: str | Path) -> x509.CertificateRevocationList:
    """A CRL in PEM or DER."""
    try:
        return provisioning.load_crl(Path(path))
    except provisioning.InvalidInput as e:
        raise TrustError(str(e)) from e


def load_registry(path: str | Path) -> list[DeviceKey]:
    """Device keys from a registry exported by ``edge-provision`` (revoked entries kept, marked revoked)."""
    try:
        registry = provisioning.load_registry(path)
        return [DeviceKey(e.device_id, e.kid, e.public_key(), "registry", e.serial, None, e.not_after,
                          e.status == "revoked") for e in registry.entries]
    except provisioning.InvalidInput as e:
        raise TrustError(str(e)) from e


def load_trust_store(ca_files: Sequence[str], crl_files: Sequence[str] = (),
                     registry_files: Sequence[str] = (), bundle_files: Sequence[str] = ()) -> TrustStore:
    """Build a ``TrustStore`` from files named in the config.

    ``ca_files`` are trust anchors (the fleet root alone is enough); ``bundle_files`` hold intermediates
    for chains that do not carry them. A CA file that holds root and intermediate (the fleet's
    ca-bundle.pem) also works: its self-signed certificates are anchors, the others intermediates.
    """
    found = [c for f in ca_files for c in load_certificates(f)]
    cas = [c for c in found if c.issuer == c.subject] or found
    bundle = [c for c in found if c not in cas] + [c for f in bundle_files for c in load_certificates(f)]
    store = TrustStore(cas, [load_crl(f) for f in crl_files], bundle=bundle)
    for f in registry_files:
        for key in load_registry(f):
            store.add(key)
    log.info("trust store: %d CA certificate(s), %d CRL(s), %d registered key(s)",
             len(cas), len(crl_files), len(store.known()))
    return store


def utcnow() -> datetime:
    """The current time, aware (UTC)."""
    return datetime.now(timezone.utc)

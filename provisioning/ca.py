"""The fleet CA directory the operator keeps offline: keys, certificates, the issued-certificate index, CRL.

Layout of ``<ca_dir>`` (0700)::

    fleet.json          fleet name, whether an intermediate issues, default validity, CRL lifetime
    root.key root.crt   P-256 root (key 0600)
    issuing.key issuing.crt   optional intermediate that signs devices and CRLs
    index.json          every certificate issued: serial, identity, role, kid, key, validity, status
    issued/<serial>.pem each issued certificate
    crl.pem             the current CRL (from the issuing CA)

Mutations hold an exclusive ``flock`` on ``<ca_dir>/.lock``. All checks of a request happen before anything
is written; the index is written once per command (so ``fleet sign`` of 500 CSRs is one index write).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from envelope import PublicKey, kid_for, labels
from provisioning import certs
from provisioning.csr import check_csr, claim_code, validate_fleet_name
from provisioning.device_id import validate_device_id
from provisioning.errors import CaStateError, InvalidInput, KeyStoreError
from provisioning.file_key import load_file_signer, write_private_key
from provisioning.fsutil import atomic_write
from provisioning.registry import Registry, RegistryEntry

log = logging.getLogger(__name__)

CRL_WARN_DAYS = 7


@dataclass(frozen=True)
class CaSettings:
    """What ``ca init`` decided, kept in ``fleet.json``."""

    fleet: str
    intermediate: bool
    default_days: int = 365
    crl_days: int = 30


@dataclass
class IssuedCert:
    """One row of the index: a certificate this CA issued."""

    serial: int
    identity: str
    role: str
    kid: str
    alg: int
    public_key: str
    not_before: str
    not_after: str
    claim_code: str
    status: str = "active"
    revoked_at: str | None = None

    def to_registry_entry(self) -> RegistryEntry:
        return RegistryEntry(
            device_id=self.identity,
            kid=bytes.fromhex(self.kid),
            alg=self.alg,
            public_key_pem=self.public_key,
            serial=self.serial,
            not_before=datetime.fromisoformat(self.not_before),
            not_after=datetime.fromisoformat(self.not_after),
            status=self.status,
            revoked_at=datetime.fromisoformat(self.revoked_at) if self.revoked_at else None,
        )


@dataclass(frozen=True)
class IssueDecision:
    """What to do with a request for ``identity``'s key ``kid`` given what the CA already issued.

    ``action``: ``issue`` (nothing valid yet, or ``reissue`` asked for a new key), ``existing`` (this key already
    has a valid certificate: hand out that one, issue nothing, ``reissue`` or not), ``refuse`` (the device holds
    a valid certificate for another key: a second one needs ``--reissue``). ``previous``: the valid
    certificates the device holds.
    """

    action: str
    previous: tuple[IssuedCert, ...] = ()

    def refusal(self, source: str, identity: str) -> InvalidInput:
        """The error a refused request raises (reason ``already_certified``)."""
        held = ", ".join(f"serial {r.serial:x} (kid {r.kid[:16]}, valid until {r.not_after})" for r in self.previous)
        return InvalidInput(f"{source}: {identity!r} already holds a valid certificate for another key: {held}; "
                            "pass --reissue to issue a second one (a key rotation), then revoke the old one once "
                            "the device uses the new key", reason="already_certified")


def issue_decision(index: list[IssuedCert], identity: str, kid: str, role: str, now: datetime, *,
                   reissue: bool = False) -> IssueDecision:
    """The one rule for a second certificate (``ca sign`` and ``fleet sign``). Pure.

    Only certificates that still work count: revoked or expired ones do not (renewing an expired device is a
    first issue again).
    """
    valid = tuple(r for r in index if r.identity == identity and r.role == role and r.status == "active"
                  and datetime.fromisoformat(r.not_after) > now)
    if any(r.kid == kid for r in valid):
        return IssueDecision("existing", valid)  # even with reissue: one valid certificate per key is enough
    if not valid or reissue:
        return IssueDecision("issue", valid)
    return IssueDecision("refuse", valid)


def alg_for(key: PublicKey) -> int:
    """COSE alg a device key signs records with."""
    return labels.ALG_ED25519 if isinstance(key, ed25519.Ed25519PublicKey) else labels.ALG_ESP256


def public_pem(key: PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class FleetCa:
    """An open CA directory. Use ``FleetCa.init`` once, then ``with FleetCa.open(dir) as ca:``."""

    def __init__(self, ca_dir: Path, settings: CaSettings, root: certs.Issuer, issuing: certs.Issuer,
                 index: list[IssuedCert], crl_number: int, lock_fd: int) -> None:
        self.dir = ca_dir
        self.settings = settings
        self.root = root
        self.issuing = issuing
        self.index = index
        self.crl_number = crl_number
        self._lock_fd = lock_fd
        self._dirty = False

    # --- lifecycle ---------------------------------------------------------------------------------

    @staticmethod
    def _lock(ca_dir: Path) -> int:
        fd = os.open(ca_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise CaStateError(f"CA directory {ca_dir} is in use by another edge-provision command") from e
        return fd

    @classmethod
    def init(cls, ca_dir: Path, fleet: str, *, now: datetime, intermediate: bool = False,
             root_days: int = 3650, intermediate_days: int = 1825, default_days: int = 365,
             crl_days: int = 30) -> FleetCa:
        """Create a new CA directory (refuses one that already holds a CA)."""
        validate_fleet_name(fleet)
        for name, v in (("root validity", root_days), ("default validity", default_days),
                        ("CRL lifetime", crl_days), ("intermediate validity", intermediate_days)):
            if v < 1:
                raise InvalidInput(f"{name} must be at least 1 day, got {v}")
        if (ca_dir / "fleet.json").exists() or (ca_dir / "root.key").exists():
            raise CaStateError(f"{ca_dir} already holds a CA (fleet.json/root.key); refusing to overwrite it")
        ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(ca_dir, 0o700)
        (ca_dir / "issued").mkdir(mode=0o755, exist_ok=True)
        lock_fd = cls._lock(ca_dir)
        root_key = ec.generate_private_key(ec.SECP256R1())
        root = certs.Issuer(root_key, certs.make_root(fleet, root_key, now, root_days))
        issuing = root
        if intermediate:
            ikey = ec.generate_private_key(ec.SECP256R1())
            issuing = certs.Issuer(ikey, certs.make_intermediate(root, fleet, ikey, now, intermediate_days))
        settings = CaSettings(fleet, intermediate, default_days, crl_days)
        write_private_key(ca_dir / "root.key", root_key)
        atomic_write(ca_dir / "root.crt", certs.pem(root.cert))
        if intermediate:
            write_private_key(ca_dir / "issuing.key", issuing.key)
            atomic_write(ca_dir / "issuing.crt", certs.pem(issuing.cert))
        ca = cls(ca_dir, settings, root, issuing, [], 1, lock_fd)
        ca._dirty = True
        ca.save()
        ca.write_crl(now=now)
        log.info("initialised fleet CA %s for fleet %s in %s", certs.fingerprint(root.cert), fleet, ca_dir)
        return ca

    @classmethod
    def open(cls, ca_dir: Path) -> FleetCa:
        """Open an existing CA directory, taking its lock."""
        if not (ca_dir / "fleet.json").is_file():
            raise CaStateError(f"{ca_dir} holds no fleet CA (no fleet.json); create one with `edge-provision ca init`")
        lock_fd = cls._lock(ca_dir)
        try:
            meta = json.loads((ca_dir / "fleet.json").read_text())
            settings = CaSettings(**meta["settings"])
            root = certs.Issuer(cls._load_key(ca_dir / "root.key"), cls._load_cert(ca_dir / "root.crt"))
            issuing = root
            if settings.intermediate:
                issuing = certs.Issuer(cls._load_key(ca_dir / "issuing.key"), cls._load_cert(ca_dir / "issuing.crt"))
            idx = json.loads((ca_dir / "index.json").read_text())
            index = [IssuedCert(**row) for row in idx["certs"]]
            return cls(ca_dir, settings, root, issuing, index, int(idx["crl_number"]), lock_fd)
        except (OSError, KeyError, TypeError, ValueError) as e:
            os.close(lock_fd)
            raise CaStateError(f"CA directory {ca_dir} is incomplete or damaged: {e}") from e
        except BaseException:
            os.close(lock_fd)
            raise

    @staticmethod
    def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
        key = load_file_signer(path).private_key
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyStoreError(f"CA key {path} must be P-256")
        return key

    @staticmethod
    def _load_cert(path: Path) -> x509.Certificate:
        return x509.load_pem_x509_certificate(path.read_bytes())

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> FleetCa:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # --- state ---------------------------------------------------------------------------------------

    @property
    def fleet(self) -> str:
        return self.settings.fleet

    @property
    def intermediates(self) -> list[x509.Certificate]:
        """Certificates between a leaf and the root (sent by clients in their chain)."""
        return [self.issuing.cert] if self.settings.intermediate else []

    @property
    def ca_bundle(self) -> bytes:
        """PEM of root (and intermediate): what a broker or device trusts."""
        return certs.pem(self.root.cert, *self.intermediates)

    @property
    def fingerprint(self) -> str:
        return certs.fingerprint(self.root.cert)

    def save(self) -> None:
        """Write ``fleet.json`` and ``index.json`` if anything changed."""
        if not self._dirty:
            return
        meta = {"settings": asdict(self.settings), "root_fingerprint": self.fingerprint}
        atomic_write(self.dir / "fleet.json", (json.dumps(meta, indent=2) + "\n").encode())
        idx: dict[str, Any] = {"crl_number": self.crl_number, "certs": [asdict(r) for r in self.index]}
        atomic_write(self.dir / "index.json", (json.dumps(idx, indent=1) + "\n").encode())
        self._dirty = False

    def active_for(self, identity: str) -> list[IssuedCert]:
        return [r for r in self.index if r.identity == identity and r.status == "active"]

    # --- issuing --------------------------------------------------------------------------------------

    def check_request(self, csr: x509.CertificateSigningRequest, *, role: str = "device",
                      source: str = "CSR") -> tuple[str, PublicKey]:
        """Every check of a CSR against this CA's fleet and its index; writes nothing."""
        identity, key = check_csr(csr, self.fleet, source=source, role=role)
        kid = kid_for(key).hex()
        for row in self.index:
            if row.kid == kid and row.identity != identity:
                raise InvalidInput(
                    f"{source}: this public key is already certified for {row.identity!r} (serial {row.serial:x}); "
                    "two devices sharing a key means a cloned image: make a fresh key on the device",
                    reason="key_reuse",
                )
            if row.identity == identity and row.role != role:
                raise InvalidInput(
                    f"{source}: {identity!r} is already an {row.role} identity of this fleet; "
                    f"refusing to issue it a {role} certificate",
                    reason="role_conflict",
                )
        return identity, key

    def issue(self, identity: str, key: PublicKey, *, now: datetime, days: int | None = None,
              role: str = "device", not_before: datetime | None = None,
              not_after: datetime | None = None) -> tuple[IssuedCert, x509.Certificate]:
        """Issue a certificate, append it to the index and write ``issued/<serial>.pem`` (index saved later)."""
        validate_device_id(identity)
        days = self.settings.default_days if days is None else days
        if days < 1:
            raise InvalidInput(f"validity must be at least 1 day, got {days}")
        nb = not_before or (now - timedelta(minutes=5))
        na = not_after or min(now + timedelta(days=days), self.issuing.cert.not_valid_after_utc)
        cert = certs.issue_leaf(self.issuing, fleet=self.fleet, identity=identity, public_key=key,
                                not_before=nb, not_after=na, role=role)
        row = IssuedCert(
            serial=cert.serial_number, identity=identity, role=role, kid=kid_for(key).hex(), alg=alg_for(key),
            public_key=public_pem(key), not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(), claim_code=claim_code(key),
        )
        atomic_write(self.dir / "issued" / f"{cert.serial_number:x}.pem", certs.pem(cert))
        self.index.append(row)
        self._dirty = True
        log.info("issued %s certificate serial %x for %s", role, cert.serial_number, identity)
        return row, cert

    def sign_csr(self, csr: x509.CertificateSigningRequest, *, now: datetime, days: int | None = None,
                 role: str = "device", source: str = "CSR") -> tuple[IssuedCert, x509.Certificate]:
        """Check then issue; the index is saved."""
        identity, key = self.check_request(csr, role=role, source=source)
        row, cert = self.issue(identity, key, now=now, days=days, role=role)
        self.save()
        return row, cert

    def issued_cert(self, serial: int) -> x509.Certificate:
        """A certificate this CA issued earlier, from ``issued/<serial>.pem``."""
        path = self.dir / "issued" / f"{serial:x}.pem"
        try:
            return x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as e:
            raise CaStateError(f"{path}: cannot read issued certificate: {e}") from e

    def chain_pem(self, cert: x509.Certificate) -> bytes:
        """Leaf then intermediates: what a device installs and presents."""
        return certs.pem(cert, *self.intermediates)

    # --- revocation -------------------------------------------------------------------------------------

    def find(self, target: str) -> list[IssuedCert]:
        """Rows matching ``target``: an identity (all its active certificates) or a hex serial."""
        rows = [r for r in self.index if r.identity == target and r.status == "active"]
        if rows:
            return rows
        t = target.lower().removeprefix("0x").replace(":", "")
        try:
            serial = int(t, 16)
        except ValueError:
            serial = -1
        rows = [r for r in self.index if r.serial == serial]
        if not rows:
            known = any(r.identity == target for r in self.index)
            hint = " (all its certificates are already revoked)" if known else ""
            raise InvalidInput(f"no active certificate of this CA matches device or serial {target!r}{hint}",
                               reason="not_found")
        return rows

    def revoke(self, target: str, *, now: datetime) -> list[IssuedCert]:
        """Mark the matching certificates revoked and save the index (call ``write_crl`` to publish)."""
        rows = self.find(target)
        changed = [r for r in rows if r.status != "revoked"]
        for r in changed:
            r.status = "revoked"
            r.revoked_at = now.isoformat()
            log.info("revoked serial %x (%s)", r.serial, r.identity)
        if changed:
            self._dirty = True
            self.save()
        return rows

    def make_crl(self, *, now: datetime, days: int | None = None) -> x509.CertificateRevocationList:
        """A new CRL of every revoked certificate (next update ``days`` from now); writes nothing."""
        days = self.settings.crl_days if days is None else days
        if days < 1:
            raise InvalidInput(f"CRL lifetime must be at least 1 day, got {days}")
        revoked = [(r.serial, datetime.fromisoformat(r.revoked_at or now.isoformat()))
                   for r in self.index if r.status == "revoked"]
        return certs.make_crl(self.issuing, revoked, now=now, next_update=now + timedelta(days=days),
                              number=self.crl_number)

    def write_crl(self, *, now: datetime, days: int | None = None) -> x509.CertificateRevocationList:
        """Make and write ``crl.pem`` (world-readable: brokers load it), bumping the CRL number."""
        crl = self.make_crl(now=now, days=days)
        atomic_write(self.dir / "crl.pem", crl.public_bytes(serialization.Encoding.PEM))
        self.crl_number += 1
        self._dirty = True
        self.save()
        return crl

    # --- registry ------------------------------------------------------------------------------------------

    def registry(self, *, now: datetime) -> Registry:
        """The device registry (aggregator identities excluded)."""
        entries = tuple(r.to_registry_entry() for r in self.index if r.role == "device")
        return Registry(self.fleet, self.fingerprint, now, entries)

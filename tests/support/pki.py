"""A throwaway fleet PKI for tests, made with the provisioning library itself.

    fleet = make_fleet(tmp_path, devices=["dev-a", "dev-b"])
    fleet.ca_cert, fleet.crl, fleet.registry          # paths
    fleet.devices["dev-a"].key / .cert / .key_uri     # 0600 PKCS#8 key, leaf+intermediate chain PEM
    fleet.revoke("dev-b")                              # rewrites crl and registry
    fleet.add_device("dev-c", not_after=past)          # e.g. an expired certificate
    fleet.add_aggregator("agg-1")                      # client cert with role aggregator
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from provisioning import SoftwareSigner, build_csr, write_private_key
from provisioning.ca import FleetCa
from provisioning.fsutil import atomic_write
from provisioning.registry import registry_json


@dataclass
class DeviceFiles:
    """One identity's files: key (0600), certificate chain (leaf first), key URI, kid and serial."""

    device_id: str
    key: Path
    cert: Path
    kid: bytes
    serial: int
    role: str = "device"

    @property
    def key_uri(self) -> str:
        return f"file:{self.key}"

    def signer(self) -> SoftwareSigner:
        from provisioning import load_file_signer

        return load_file_signer(self.key)


@dataclass
class Fleet:
    """Paths of a test fleet's CA and identities; methods change it the way an operator would."""

    root: Path
    name: str
    ca_dir: Path
    ca_cert: Path
    ca_key: Path
    ca_bundle: Path
    crl: Path
    registry: Path
    intermediate: bool
    devices: dict[str, DeviceFiles] = field(default_factory=dict)
    aggregators: dict[str, DeviceFiles] = field(default_factory=dict)

    def _open(self) -> FleetCa:
        return FleetCa.open(self.ca_dir)

    def _issue(self, identity: str, role: str, key_type: str, not_before: datetime | None,
               not_after: datetime | None, now: datetime | None) -> DeviceFiles:
        now = now or datetime.now(timezone.utc)
        signer = SoftwareSigner.generate(key_type)
        folder = self.root / ("devices" if role == "device" else "aggregators") / identity
        folder.mkdir(parents=True, exist_ok=True)
        key_path = folder / ("device.key" if role == "device" else "client.key")
        write_private_key(key_path, signer.private_key, overwrite=True)
        with self._open() as ca:
            identity, pub = ca.check_request(build_csr(signer, identity, self.name, role=role), role=role)
            row, cert = ca.issue(identity, pub, now=now, role=role, not_before=not_before, not_after=not_after)
            ca.save()
            cert_path = key_path.with_suffix(".crt")
            atomic_write(cert_path, ca.chain_pem(cert))
            atomic_write(self.registry, registry_json(ca.registry(now=now)).encode())
        return DeviceFiles(identity, key_path, cert_path, signer.kid, row.serial, role)

    def add_device(self, device_id: str, *, key_type: str = "p256", not_before: datetime | None = None,
                   not_after: datetime | None = None, now: datetime | None = None) -> DeviceFiles:
        """Issue a device certificate (explicit validity makes expired or future certificates)."""
        files = self._issue(device_id, "device", key_type, not_before, not_after, now)
        self.devices[device_id] = files
        return files

    def add_aggregator(self, name: str, *, now: datetime | None = None) -> DeviceFiles:
        """Issue an aggregator client certificate (CN = name, SAN spiffe://<fleet>/aggregator/<name>)."""
        files = self._issue(name, "aggregator", "p256", None, None, now)
        self.aggregators[name] = files
        return files

    def identity(self, name: str | None = None) -> dict[str, str]:
        """The aggregator config's ``[identity]`` for aggregator ``name`` (the only one when not given)."""
        files = self.aggregators[name] if name else next(iter(self.aggregators.values()))
        return {"key": files.key_uri, "cert_file": str(files.cert)}

    def revoke(self, device_id_or_serial: str, *, now: datetime | None = None, crl_days: int = 30) -> None:
        """Revoke, then rewrite the CRL and the registry."""
        now = now or datetime.now(timezone.utc)
        with self._open() as ca:
            ca.revoke(device_id_or_serial, now=now)
            ca.write_crl(now=now, days=crl_days)
            atomic_write(self.registry, registry_json(ca.registry(now=now)).encode())
        self._sync_crl()

    def write_crl(self, *, now: datetime | None = None, days: int = 30) -> None:
        """Re-issue the CRL (a ``now`` in the past with small ``days`` makes a stale CRL)."""
        with self._open() as ca:
            ca.write_crl(now=now or datetime.now(timezone.utc), days=days)
        self._sync_crl()

    def _sync_crl(self) -> None:
        atomic_write(self.crl, (self.ca_dir / "crl.pem").read_bytes())


def make_fleet(tmp_path: Path, devices: Iterable[str] = (), *, name: str = "test.fleet",
               intermediate: bool = False, aggregators: Iterable[str] = ()) -> Fleet:
    """A new fleet CA under ``tmp_path/pki`` with a certified key per device (all files world-readable
    except keys, which are 0600 and owned by the test user)."""
    root = tmp_path / "pki"
    root.mkdir(parents=True, exist_ok=True)
    ca_dir = root / "ca"
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    with FleetCa.init(ca_dir, name, now=now, intermediate=intermediate) as ca:
        bundle = root / "ca-bundle.pem"
        atomic_write(bundle, ca.ca_bundle)
        atomic_write(root / "ca.crt", (ca_dir / "root.crt").read_bytes())
        atomic_write(root / "crl.pem", (ca_dir / "crl.pem").read_bytes())
        registry = root / "registry.json"
        atomic_write(registry, registry_json(ca.registry(now=now)).encode())
    fleet = Fleet(root=root, name=name, ca_dir=ca_dir, ca_cert=root / "ca.crt", ca_key=ca_dir / "root.key",
                  ca_bundle=bundle, crl=root / "crl.pem", registry=registry, intermediate=intermediate)
    for d in devices:
        fleet.add_device(d)
    for a in aggregators:
        fleet.add_aggregator(a)
    return fleet

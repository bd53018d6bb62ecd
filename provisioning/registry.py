"""The device registry aggregators load: which key (kid) belongs to which device, and whether it is revoked.

Written by ``edge-provision fleet export-registry`` as JSON (format in docs/provisioning.md), one entry per
device certificate, so a device mid-rotation appears twice (same ``device_id``, two kids) until the old
certificate is revoked or expires. ``load_registry`` is what an aggregator calls; ``registry_json`` /
``parse_registry`` are the pure halves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from envelope import PublicKey, kid_for
from envelope.names import is_valid_device_id
from provisioning.errors import InvalidInput

REGISTRY_FORMAT = "edge-provision-registry/1"
STATUSES = ("active", "revoked")


@dataclass(frozen=True)
class RegistryEntry:
    """One device certificate: the key a device signs records with, and its status."""

    device_id: str
    kid: bytes
    alg: int
    public_key_pem: str
    serial: int
    not_before: datetime
    not_after: datetime
    status: str  # "active" | "revoked"
    revoked_at: datetime | None = None

    def public_key(self) -> PublicKey:
        """The entry's public key, parsed."""
        key = serialization.load_pem_public_key(self.public_key_pem.encode())
        if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
            raise InvalidInput(f"registry key for {self.device_id} is a {type(key).__name__}", reason="bad_registry")
        return key

    def is_valid_at(self, when: datetime) -> bool:
        """Active and inside the certificate's validity period at ``when``."""
        return self.status == "active" and self.not_before <= when <= self.not_after

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "device_id": self.device_id,
            "kid": self.kid.hex(),
            "alg": self.alg,
            "public_key": self.public_key_pem,
            "serial": format(self.serial, "x"),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "status": self.status,
        }
        if self.revoked_at is not None:
            d["revoked_at"] = self.revoked_at.isoformat()
        return d


@dataclass(frozen=True)
class Registry:
    """A fleet's registry: the fleet name, the root CA fingerprint and the entries."""

    fleet: str
    ca_fingerprint: str
    generated_at: datetime
    entries: tuple[RegistryEntry, ...]

    def by_kid(self) -> dict[bytes, RegistryEntry]:
        """Entries keyed by kid (kids are unique: one key, one certificate entry)."""
        return {e.kid: e for e in self.entries}

    def for_device(self, device_id: str) -> list[RegistryEntry]:
        """Every entry of ``device_id``, oldest first."""
        return [e for e in self.entries if e.device_id == device_id]


def registry_json(registry: Registry) -> str:
    """Serialise deterministically (sorted by device id then not_before)."""
    doc = {
        "format": REGISTRY_FORMAT,
        "fleet": registry.fleet,
        "ca_fingerprint": registry.ca_fingerprint,
        "generated_at": registry.generated_at.isoformat(),
        "devices": [e.to_json() for e in sorted(registry.entries, key=lambda e: (e.device_id, e.not_before))],
    }
    return json.dumps(doc, indent=2) + "\n"


def _field(d: Mapping[str, Any], key: str, typ: type, where: str) -> Any:
    if key not in d:
        raise InvalidInput(f"{where}: missing {key!r}", reason="bad_registry")
    value = d[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise InvalidInput(f"{where}: {key!r} must be {typ.__name__}, got {type(value).__name__}",
                           reason="bad_registry")
    return value


def _time(d: Mapping[str, Any], key: str, where: str) -> datetime:
    raw = _field(d, key, str, where)
    try:
        t = datetime.fromisoformat(raw)
    except ValueError as e:
        raise InvalidInput(f"{where}: {key!r} is not an ISO 8601 time: {raw!r}", reason="bad_registry") from e
    if t.tzinfo is None:
        raise InvalidInput(f"{where}: {key!r} lacks a UTC offset: {raw!r}", reason="bad_registry")
    return t


def _entry(d: Any, where: str) -> RegistryEntry:
    if not isinstance(d, dict):
        raise InvalidInput(f"{where}: expected an object, got {type(d).__name__}", reason="bad_registry")
    device_id = _field(d, "device_id", str, where)
    if not is_valid_device_id(device_id):
        raise InvalidInput(f"{where}: invalid device_id {device_id!r}", reason="bad_registry")
    status = _field(d, "status", str, where)
    if status not in STATUSES:
        raise InvalidInput(f"{where}: status must be one of {STATUSES}, got {status!r}", reason="bad_registry")
    try:
        kid = bytes.fromhex(_field(d, "kid", str, where))
        serial = int(_field(d, "serial", str, where), 16)
    except ValueError as e:
        raise InvalidInput(f"{where}: kid and serial must be hex strings", reason="bad_registry") from e
    entry = RegistryEntry(
        device_id=device_id,
        kid=kid,
        alg=_field(d, "alg", int, where),
        public_key_pem=_field(d, "public_key", str, where),
        serial=serial,
        not_before=_time(d, "not_before", where),
        not_after=_time(d, "not_after", where),
        status=status,
        revoked_at=_time(d, "revoked_at", where) if "revoked_at" in d else None,
    )
    try:
        actual = kid_for(entry.public_key())
    except ValueError as e:
        raise InvalidInput(f"{where}: public_key is not a PEM public key", reason="bad_registry") from e
    if actual != entry.kid:
        raise InvalidInput(f"{where}: kid {entry.kid.hex()} does not match its public key ({actual.hex()})",
                           reason="bad_registry")
    return entry


def parse_registry(text: str, *, source: str = "registry") -> Registry:
    """Parse and check a registry document (every kid recomputed from its key)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{source} is not JSON ({e})", reason="bad_registry") from e
    if not isinstance(doc, dict) or doc.get("format") != REGISTRY_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InvalidInput(f"{source}: expected format {REGISTRY_FORMAT!r}, got {got!r}", reason="bad_registry")
    devices = _field(doc, "devices", list, source)
    entries = tuple(_entry(d, f"{source} devices[{i}]") for i, d in enumerate(devices))
    kids = [e.kid for e in entries]
    if len(set(kids)) != len(kids):
        raise InvalidInput(f"{source}: the same kid appears twice", reason="bad_registry")
    return Registry(
        fleet=_field(doc, "fleet", str, source),
        ca_fingerprint=_field(doc, "ca_fingerprint", str, source),
        generated_at=_time(doc, "generated_at", source),
        entries=entries,
    )


def load_registry(path: str | Path) -> Registry:
    """Read and check the registry file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InvalidInput(f"registry file {p} cannot be read: {e.strerror}", reason="bad_registry") from e
    return parse_registry(text, source=f"registry {p}")


def build_registry(fleet: str, ca_fingerprint: str, generated_at: datetime,
                   entries: Iterable[RegistryEntry]) -> Registry:
    """A ``Registry`` value from its parts."""
    return Registry(fleet, ca_fingerprint, generated_at, tuple(entries))

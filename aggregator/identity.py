"""The aggregator's own identity: the key that signs receipts and the certificate chain that goes with them.

Loaded once at start from ``[identity]`` (``edge-provision aggregator init`` made the key, ``ca sign --role
aggregator`` the certificate). Checked before the first receipt, so a wrong file fails the start, not every
device: the certificate is an aggregator's (SAN ``spiffe://<fleet>/aggregator/<id>``), its key is the
signing key, and, when fleet CAs are configured, it chains to one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

import provisioning
from aggregator.config import IdentitySettings
from aggregator.errors import TrustError
from envelope import Signer, kid_for
from provisioning.certs import cert_identity
from provisioning.chain import verify_chain


@dataclass(frozen=True)
class Identity:
    """Who signs this worker's receipts."""

    aggregator_id: str
    fleet: str
    signer: Signer
    chain_der: tuple[bytes, ...]  # leaf first

    @property
    def subject(self) -> str:
        return f"spiffe://{self.fleet}/aggregator/{self.aggregator_id}"


def _certs(path: str, what: str) -> list[x509.Certificate]:
    try:
        return provisioning.load_certificates(Path(path).read_bytes(), source=path)
    except OSError as e:
        raise TrustError(f"{path}: cannot read the {what}: {e.strerror or e}") from e
    except provisioning.InvalidInput as e:
        raise TrustError(str(e)) from e


def load_identity(settings: IdentitySettings, cas: Sequence[x509.Certificate], now: datetime,
                  bundle: Sequence[x509.Certificate] = ()) -> Identity | None:
    """The configured identity, or None when ``[identity]`` is empty; raises ``TrustError`` when unusable."""
    if not settings.key or not settings.cert_file:
        return None
    certs = _certs(settings.cert_file, "aggregator certificate")
    if settings.chain_file:
        certs += [c for c in _certs(settings.chain_file, "identity chain") if c not in certs]
    chain = tuple(c.public_bytes(serialization.Encoding.DER) for c in certs)
    try:
        fleet, role, ident = cert_identity(certs[0])
    except provisioning.InvalidInput as e:
        raise TrustError(f"{settings.cert_file}: {e}") from e
    if role != "aggregator":
        raise TrustError(f"{settings.cert_file}: the certificate is for a {role}, expected an aggregator "
                         "(edge-provision ca sign --role aggregator)")
    try:
        signer = provisioning.open_signer(settings.key)
    except provisioning.ProvisioningError as e:
        raise TrustError(f"identity.key: {e}") from e
    public = certs[0].public_key()
    if kid_for(public) != signer.kid:  # type: ignore[arg-type]
        raise TrustError(f"{settings.cert_file}: the certificate is not for the key {settings.key} "
                         f"(kid {signer.kid.hex()})")
    if cas:
        try:
            verify_chain(chain, cas, [], now, "aggregator", bundle=bundle)
        except provisioning.InvalidInput as e:
            raise TrustError(f"{settings.cert_file}: the aggregator certificate does not verify against "
                             f"trust.ca_files: {e}") from e
    return Identity(ident, fleet, signer, chain)

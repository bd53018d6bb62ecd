"""The signing interface every key store implements, and the key id of a public key.

The envelope never touches private key material: it asks a ``Signer`` for a signature in COSE form (raw
r||s for ECDSA, 64 bytes for Ed25519). File keys and PKCS#11 tokens (provisioning) both implement it.
"""

from __future__ import annotations

import hashlib
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


@runtime_checkable
class Signer(Protocol):
    """A private key that signs in place and exposes only its public half."""

    @property
    def alg(self) -> int:
        """COSE algorithm id this key signs with (-9 ESP256 or -19 Ed25519)."""
        ...

    @property
    def kid(self) -> bytes:
        """Key id: first 16 bytes of SHA-256 over the public key's SubjectPublicKeyInfo DER."""
        ...

    def public_key(self) -> PublicKey:
        """The public key, for CSRs, registries and verification."""
        ...

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` and return the signature in COSE form."""
        ...


def spki_der(public_key: PublicKey) -> bytes:
    """SubjectPublicKeyInfo DER of a public key."""
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def kid_for(public_key: PublicKey) -> bytes:
    """Key id of ``public_key`` as DESIGN §3 defines it."""
    return hashlib.sha256(spki_der(public_key)).digest()[:16]

"""File key store: a PKCS#8 PEM private key, 0600, in a 0700 directory, owned by the service user.

Generation writes atomically (temp file in the same directory, fsync, ``os.replace``) so a power cut never
leaves half a key. Loading refuses a key that others could read, naming the file, its mode and the fix.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from envelope import PublicKey, kid_for, labels
from provisioning.errors import KeyStoreError, UnsafeKeyPermissions
from provisioning.fsutil import atomic_write

log = logging.getLogger(__name__)

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
KEY_TYPES = ("p256", "ed25519")


class SoftwareSigner:
    """A ``Signer`` over an in-memory private key (loaded from a file key store, or made in tests)."""

    def __init__(self, private_key: PrivateKey, *, deterministic: bool = False) -> None:
        self._key = private_key
        self._public = private_key.public_key()
        self._kid = kid_for(self._public)
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            if private_key.curve.name != "secp256r1":
                raise KeyStoreError(f"EC key must be P-256 (secp256r1), got {private_key.curve.name}")
            self._alg = labels.ALG_ESP256
            self._ecdsa = ec.ECDSA(hashes.SHA256(), deterministic_signing=deterministic)
        elif isinstance(private_key, ed25519.Ed25519PrivateKey):
            self._alg = labels.ALG_ED25519
        else:  # pragma: no cover - guarded by the type
            raise KeyStoreError(f"unsupported key type {type(private_key).__name__}")

    @classmethod
    def generate(cls, key_type: str = "p256") -> SoftwareSigner:
        """A fresh key of ``key_type`` (p256 or ed25519), held in memory only."""
        return cls(generate_private_key(key_type))

    @property
    def alg(self) -> int:
        return self._alg

    @property
    def kid(self) -> bytes:
        return self._kid

    def public_key(self) -> PublicKey:
        return self._public

    @property
    def private_key(self) -> PrivateKey:
        """The key object, for CSR signing on the device. Never serialise it to logs."""
        return self._key

    def sign(self, data: bytes) -> bytes:
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        r, s = decode_dss_signature(key.sign(data, self._ecdsa))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def __repr__(self) -> str:
        return f"SoftwareSigner(alg={self._alg}, kid={self._kid.hex()})"


def generate_private_key(key_type: str = "p256") -> PrivateKey:
    """A new private key of ``key_type``: ``p256`` (default) or ``ed25519``."""
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise KeyStoreError(f"key type must be one of {KEY_TYPES}, got {key_type!r}")


def check_key_file_permissions(path: Path) -> None:
    """Refuse a key file that is group/world accessible or owned by someone else."""
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise KeyStoreError(f"key file {path} does not exist (create one with `edge-provision device init`)") from e
    except PermissionError as e:
        raise KeyStoreError(f"key file {path} cannot be read by this user (uid {os.geteuid()})") from e
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise UnsafeKeyPermissions(
            f"key file {path} has mode {mode:04o}: it is readable by other users; "
            f"run `chmod 600 {path}` (and check who may have copied it)"
        )
    if st.st_uid != os.geteuid():
        raise UnsafeKeyPermissions(
            f"key file {path} is owned by uid {st.st_uid}, but the agent runs as uid {os.geteuid()}; "
            f"run `chown {os.geteuid()} {path}`"
        )


def load_file_signer(path: str | Path) -> SoftwareSigner:
    """Load a PKCS#8 PEM key after checking its permissions."""
    p = Path(path)
    check_key_file_permissions(p)
    try:
        key = serialization.load_pem_private_key(p.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise KeyStoreError(f"key file {p} is not an unencrypted PKCS#8 PEM private key") from e
    except OSError as e:
        raise KeyStoreError(f"key file {p} cannot be read: {e.strerror}") from e
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise KeyStoreError(f"key file {p} holds a {type(key).__name__}; expected P-256 or Ed25519")
    return SoftwareSigner(key)


def write_private_key(path: str | Path, key: PrivateKey, *, overwrite: bool = False) -> None:
    """Write ``key`` as PKCS#8 PEM with mode 0600 atomically; the directory is created 0700."""
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if p.exists() and not overwrite:
        raise KeyStoreError(f"key file {p} already exists; refusing to overwrite a device key")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(p, pem, mode=0o600)
    log.info("wrote private key %s (mode 0600)", p)


def create_file_key(path: str | Path, key_type: str = "p256", *, overwrite: bool = False) -> SoftwareSigner:
    """Generate a key and store it at ``path``; returns its signer."""
    key = generate_private_key(key_type)
    write_private_key(path, key, overwrite=overwrite)
    return SoftwareSigner(key)

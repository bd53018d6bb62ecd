"""Open, create, rotate and close keys named by URI: the one way the agent and the tools get at a device key.

``file:`` keys live in ``provisioning.file_key``; ``pkcs11:`` keys in ``provisioning.pkcs11_key``, imported
lazily so that a host without python-pkcs11 can still use file keys.
"""

from __future__ import annotations

import os
from pathlib import Path

from envelope import Signer
from provisioning.errors import KeyStoreError
from provisioning.file_key import create_file_key, load_file_signer
from provisioning.key_uri import FileKeyUri, Pkcs11KeyUri, parse_key_uri


def open_signer(uri: str) -> Signer:
    """Open the key named by ``uri`` (``file:`` or ``pkcs11:``) for signing."""
    parsed = parse_key_uri(uri)
    if isinstance(parsed, FileKeyUri):
        return load_file_signer(parsed.path)
    assert isinstance(parsed, Pkcs11KeyUri)
    from provisioning.pkcs11_key import open_pkcs11_signer  # noqa: PLC0415 - optional dependency

    return open_pkcs11_signer(parsed)


def close_signer(signer: Signer) -> None:
    """Release what a signer holds (a PKCS#11 session); a no-op for file keys."""
    close = getattr(signer, "close", None)
    if callable(close):
        close()


def key_tier(uri: str) -> str:
    """``file`` or ``pkcs11``: the storage tier a URI names (reported in status and birth records)."""
    return "file" if isinstance(parse_key_uri(uri), FileKeyUri) else "pkcs11"


def key_exists(uri: str) -> bool:
    """True when the key named by ``uri`` is present (the file exists / the token holds the label)."""
    parsed = parse_key_uri(uri)
    if isinstance(parsed, FileKeyUri):
        return Path(parsed.path).exists()
    from provisioning.pkcs11_key import pkcs11_key_exists  # noqa: PLC0415

    return pkcs11_key_exists(parsed)


def create_key(uri: str, key_type: str = "p256") -> Signer:
    """Generate a new key where ``uri`` says; refuses to replace an existing key."""
    parsed = parse_key_uri(uri)
    if isinstance(parsed, FileKeyUri):
        return create_file_key(parsed.path, key_type)
    if key_type != "p256":
        raise KeyStoreError(f"PKCS#11 keys are P-256 only, got key type {key_type!r}")
    from provisioning.pkcs11_key import generate_pkcs11_key  # noqa: PLC0415

    return generate_pkcs11_key(parsed)


def successor_key_uri(uri: str) -> str:
    """Where a rotated key waits until its certificate is installed (``device.next.key`` / ``<label>.next``)."""
    parsed = parse_key_uri(uri)
    if isinstance(parsed, FileKeyUri):
        p = Path(parsed.path)
        return "file:" + str(p.with_name(p.stem + ".next" + p.suffix))
    nxt = uri.replace(f"object={parsed.object}", f"object={parsed.object}.next", 1)
    if nxt == uri:
        raise KeyStoreError(f"cannot derive a rotation label from {uri!r}: write object=<label> unescaped")
    return nxt


def promote_key(current_uri: str, successor_uri: str) -> None:
    """Make the rotated key the device key (atomic rename of the file, or relabel in the token)."""
    cur, nxt = parse_key_uri(current_uri), parse_key_uri(successor_uri)
    if isinstance(cur, FileKeyUri) and isinstance(nxt, FileKeyUri):
        os.replace(nxt.path, cur.path)
        fd = os.open(Path(cur.path).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    if isinstance(cur, Pkcs11KeyUri) and isinstance(nxt, Pkcs11KeyUri):
        from provisioning.pkcs11_key import promote_pkcs11_key  # noqa: PLC0415

        promote_pkcs11_key(cur, nxt)
        return
    raise KeyStoreError(f"cannot rotate between key tiers ({current_uri!r} → {successor_uri!r})")

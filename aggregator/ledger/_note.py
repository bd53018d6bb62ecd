"""C2SP signed-note signing and verification (Ed25519 only), for ledger notes.

Interim: the transparency-log work (issue 11 item 2) brings the project's ``envelope.note``; once it is in
main this module delegates to it and goes away. Format (c2sp.org/signed-note): text ending in a newline,
a blank line, then ``— <key name> base64(key id || signature)`` lines; key id = the first 4 bytes of
SHA-256(key name || 0x0A || 0x01 || 32-byte public key); verifier key ``<name>+<hex key id>+base64(0x01 || pk)``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from aggregator.ledger.errors import LedgerError
from envelope import Signer

_ALG_ED25519 = b"\x01"
_DASH = "\u2014"


def _raw(public: ed25519.Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, public: ed25519.Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ALG_ED25519 + _raw(public)).digest()[:4]


def verifier_key(name: str, public: ed25519.Ed25519PublicKey) -> str:
    """The vkey string of ``public`` under ``name``."""
    return f"{name}+{key_id(name, public).hex()}+{base64.b64encode(_ALG_ED25519 + _raw(public)).decode()}"


def signer(name: str, key: Signer) -> Callable[[str], str]:
    """A function that signs a note text with the Ed25519 ``key`` under ``name`` and returns the signed note."""
    if not name or any(c.isspace() or c == "+" for c in name):
        raise LedgerError(f"note key name must be non-empty without spaces or '+', got {name!r}")
    public = key.public_key()
    if not isinstance(public, ed25519.Ed25519PublicKey):
        raise LedgerError("a signed-note key must be Ed25519")
    kid = key_id(name, public)

    def sign(text: str) -> str:
        if not text.endswith("\n") or any(ord(c) < 0x20 and c != "\n" for c in text):
            raise LedgerError("a note text must end with a newline and hold no control characters")
        sig = key.sign(text.encode())
        return f"{text}\n{_DASH} {name} {base64.b64encode(kid + sig).decode()}\n"

    return sign


def parse_verifier_key(vkey: str) -> tuple[str, bytes, ed25519.Ed25519PublicKey]:
    """(name, key id, public key) of an Ed25519 vkey; raises ``LedgerError``."""
    try:
        name, kid_hex, b64 = vkey.strip().split("+", 2)
        raw = base64.b64decode(b64, validate=True)
        kid = bytes.fromhex(kid_hex)
    except (ValueError, binascii.Error) as e:
        raise LedgerError(f"verifier key {vkey[:80]!r} is not <name>+<hex id>+<base64 key>") from e
    if len(kid) != 4 or len(raw) != 33 or raw[:1] != _ALG_ED25519:
        raise LedgerError(f"verifier key {vkey[:80]!r} is not an Ed25519 signed-note key")
    public = ed25519.Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_id(name, public) != kid:
        raise LedgerError(f"verifier key {vkey[:80]!r}: key id does not match name and key")
    return name, kid, public


def verify(signed: str, vkey: str) -> str:
    """The note text of ``signed`` if a signature by ``vkey`` verifies; raises ``LedgerError`` otherwise."""
    name, kid, public = parse_verifier_key(vkey)
    cut = signed.rfind("\n\n")
    if cut < 0 or not signed.endswith("\n"):
        raise LedgerError("not a signed note: no blank line before the signatures")
    text, sig_lines = signed[:cut + 1], signed[cut + 2:].splitlines()
    found = False
    for line in sig_lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise LedgerError(f"malformed signature line {line[:80]!r}")
        if parts[1] != name:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error as e:
            raise LedgerError(f"signature of {name} is not base64") from e
        if blob[:4] != kid:
            continue
        try:
            public.verify(blob[4:], text.encode())
        except InvalidSignature as e:
            raise LedgerError(f"the signature of {name} on this note does not verify") from e
        found = True
    if not found:
        raise LedgerError(f"the note carries no signature by {name} ({kid.hex()})")
    return text

"""C2SP signed notes with Ed25519 keys, verifier key strings, and tlog-checkpoint bodies (DESIGN §9).

A checkpoint is the text ``<origin>\\n<size>\\n<base64 root>\\n`` signed as a note: a blank line, then one
line ``— <key name> base64(key id || signature)`` per signature. The key id is the first four bytes of
SHA-256(name || 0x0A || 0x01 || public key). ``open_note`` follows the spec's rules: signatures of unknown
keys are ignored, a known key whose signature fails rejects the note, and at least one known key must
verify. Pure (cryptography only); parsing refuses anything off-format with ``MalformedNote``, verification
failures raise ``InvalidNote``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from envelope.errors import InvalidNote, MalformedNote
from envelope.limits import DEFAULT_LIMITS

SIG_ED25519 = 0x01
MAX_NOTE_BYTES = DEFAULT_LIMITS.max_note_bytes  # the values live in envelope.limits
MAX_SIGNATURES = DEFAULT_LIMITS.max_note_signatures  # the spec asks verifiers to accept at least 16
_DASH = "\u2014 "
_MAX_SIZE = 1 << 63


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): the canonical encoding only."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise MalformedNote(f"{what} is not standard base64: {text[:60]!r}") from e
    if _b64(raw) != text:
        raise MalformedNote(f"{what} is not canonical base64: {text[:60]!r}")
    return raw


def check_key_name(name: object) -> str:
    """A key name: non-empty text without Unicode spaces, plus signs or control characters."""
    if not isinstance(name, str) or not name:
        raise MalformedNote("a key name must be non-empty text")
    if any(c.isspace() or c == "+" or ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise MalformedNote(f"key name {name[:80]!r} contains a space, a plus sign or a control character")
    return name


def key_id(name: str, sig_type: int, public: bytes) -> int:
    """The C2SP key id: the first 4 bytes (big-endian) of SHA-256(name || 0x0A || type || public key)."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public).digest()
    return int.from_bytes(digest[:4], "big")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class NoteVerifier:
    """An Ed25519 note verifier: key name, key id, public key. ``from_vkey`` parses a verifier key string."""

    name: str
    key_id: int
    public_key: Ed25519PublicKey

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey) -> NoteVerifier:
        check_key_name(name)
        return cls(name, key_id(name, SIG_ED25519, _raw_public(public_key)), public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex key id>+<base64(0x01 || public key)>``; raises ``MalformedNote``."""
        if not isinstance(vkey, str):
            raise MalformedNote("a verifier key must be text")
        parts = vkey.strip().split("+", 2)  # base64 may contain "+"; names never do
        if len(parts) != 3:
            raise MalformedNote(f"a verifier key is <name>+<key id>+<key>, got {vkey[:120]!r}")
        name, hex_id, key_b64 = parts
        check_key_name(name)
        if len(hex_id) != 8 or hex_id != hex_id.lower() or any(c not in "0123456789abcdef" for c in hex_id):
            raise MalformedNote(f"verifier key id must be 8 lowercase hex digits, got {hex_id[:20]!r}")
        material = _unb64(key_b64, "verifier key")
        if len(material) != 33 or material[0] != SIG_ED25519:
            raise MalformedNote("only Ed25519 verifier keys (type 0x01, 32-byte key) are supported")
        public = Ed25519PublicKey.from_public_bytes(material[1:])
        if key_id(name, SIG_ED25519, material[1:]) != int(hex_id, 16):
            raise MalformedNote(f"verifier key id {hex_id} does not match its name and key")
        return cls(name, int(hex_id, 16), public)

    def vkey(self) -> str:
        """The verifier key string of this key."""
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([SIG_ED25519]) + _raw_public(self.public_key))}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """True when ``signature`` (without the key id prefix) is this key's signature of ``text``."""
        try:
            self.public_key.verify(signature, text)
        except _CryptoInvalidSignature:
            return False
        return True


class NoteSigner:
    """Signs note texts with an Ed25519 private key under a key name (the log's origin)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = check_key_name(name)
        self._key = private_key
        self.verifier = NoteVerifier.from_public_key(name, private_key.public_key())
        self.key_id = self.verifier.key_id

    @property
    def vkey(self) -> str:
        return self.verifier.vkey()

    def sign(self, text: bytes) -> bytes:
        """4-byte key id || Ed25519 signature of ``text``."""
        return self.key_id.to_bytes(4, "big") + self._key.sign(text)


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key id and the signature bytes (key id prefix removed)."""

    name: str
    key_id: int
    signature: bytes


@dataclass(frozen=True)
class Note:
    """A parsed note: the text (with its final newline) and its signature lines; ``verified_by`` after ``open_note``."""

    text: str
    signatures: tuple[NoteSignature, ...]
    verified_by: tuple[str, ...] = ()


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNote("note text must end with a newline")
    bad = next((c for c in text if (ord(c) < 0x20 and c != "\n") or ord(c) == 0x7F), None)
    if bad is not None:
        raise MalformedNote(f"note text contains the control character {bad!r}")


def sign_note(text: str, signers: Sequence[NoteSigner]) -> bytes:
    """The signed note: ``text`` (ending in a newline), a blank line, one signature line per signer."""
    _check_text(text)
    if not signers:
        raise ValueError("a note needs at least one signer")
    raw = text.encode("utf-8")
    lines = "".join(f"{_DASH}{s.name} {_b64(s.sign(raw))}\n" for s in signers)
    return raw + b"\n" + lines.encode("utf-8")


def parse_note(data: bytes | str, *, max_bytes: int = MAX_NOTE_BYTES,
               max_signatures: int = MAX_SIGNATURES) -> Note:
    """Split a signed note into text and signature lines (nothing verified); raises ``MalformedNote``."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedNote(f"a note must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise MalformedNote(f"note of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        doc = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedNote("a note must be valid UTF-8") from e
    cut = doc.rfind("\n\n")
    if cut < 0:
        raise MalformedNote("a note needs a blank line before its signatures")
    text, block = doc[: cut + 1], doc[cut + 2:]
    if text == "\n" or not text:
        raise MalformedNote("the note text is empty")
    _check_text(text)
    if not block.endswith("\n"):
        raise MalformedNote("the signature block must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > max_signatures:
        raise MalformedNote(f"more than {max_signatures} signatures")
    sigs = []
    for line in lines:
        if not line.startswith(_DASH):
            raise MalformedNote(f"a signature line starts with an em dash and a space, got {line[:60]!r}")
        name, sep, sig_b64 = line[len(_DASH):].partition(" ")
        if not sep:
            raise MalformedNote(f"a signature line is '— <name> <base64>', got {line[:80]!r}")
        check_key_name(name)
        raw = _unb64(sig_b64, f"the signature of {name[:60]}")
        if len(raw) < 5:
            raise MalformedNote(f"the signature of {name[:60]} is too short")
        sigs.append(NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    _check_text(block)
    return Note(text, tuple(sigs))


def open_note(data: bytes | str, verifiers: Sequence[NoteVerifier], **limits: int) -> Note:
    """Parse and verify: raises ``MalformedNote`` (format) or ``InvalidNote`` (no known key verifies, or one fails)."""
    note = parse_note(data, **limits)
    known = {(v.name, v.key_id): v for v in verifiers}
    raw = note.text.encode("utf-8")
    ok: list[str] = []
    for sig in note.signatures:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            continue  # unknown keys are ignored, even when they share a name or an id with a known one
        if not v.verify(raw, sig.signature):
            raise InvalidNote(f"the signature of {sig.name} does not verify")
        ok.append(sig.name)
    if not ok:
        raise InvalidNote("no signature of a known key")
    return Note(note.text, note.signatures, tuple(ok))


# ---- tlog-checkpoint ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin line, tree size, root hash, optional extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        """The note text of this checkpoint."""
        if not self.origin or "\n" in self.origin:
            raise ValueError("a checkpoint origin is one non-empty line")
        if not 0 <= self.size < _MAX_SIZE or len(self.root) != 32:
            raise ValueError("a checkpoint needs a size in 0..2**63-1 and a 32-byte root")
        if any(not e or "\n" in e for e in self.extensions):
            raise ValueError("extension lines are non-empty single lines")
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), _b64(self.root), *self.extensions))


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint in a note text; raises ``MalformedNote`` unless it is exactly the tlog-checkpoint form."""
    if not text.endswith("\n"):
        raise MalformedNote("a checkpoint text ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise MalformedNote("a checkpoint has at least three non-empty lines: origin, size, root hash")
    origin, size_s, root_s, *ext = lines
    if not size_s.isascii() or not size_s.isdigit() or (size_s != "0" and size_s.startswith("0")):
        raise MalformedNote(f"checkpoint tree size must be decimal without leading zeros, got {size_s[:40]!r}")
    size = int(size_s)
    if size >= _MAX_SIZE:
        raise MalformedNote(f"checkpoint tree size {size_s[:40]} is too large")
    root = _unb64(root_s, "checkpoint root hash")
    if len(root) != 32:
        raise MalformedNote(f"checkpoint root hash must be 32 bytes, got {len(root)}")
    return Checkpoint(origin, size, root, tuple(ext))


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> bytes:
    """The signed checkpoint note (the key name should be the origin)."""
    return sign_note(checkpoint.body(), [signer])


def open_checkpoint(data: bytes | str, verifiers: Sequence[NoteVerifier],
                    origin: str | None = None) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint and return it; ``origin``: the origin line it must carry."""
    note = open_note(data, verifiers)
    cp = parse_checkpoint(note.text)
    if origin is not None and cp.origin != origin:
        raise InvalidNote(f"checkpoint origin {cp.origin[:80]!r} is not the expected {origin[:80]!r}")
    return cp, note

"""Errors of the envelope package: one root, split by what went wrong with the bytes we were given."""

from __future__ import annotations


class EnvelopeError(Exception):
    """Root of every envelope error. ``reason`` is a short stable code for counters and reject tables."""

    reason = "envelope"


class MalformedRecord(EnvelopeError):
    """The bytes are not a COSE_Sign1 record of this profile (not CBOR, wrong shape, missing header)."""

    reason = "malformed"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class UnsupportedAlgorithm(EnvelopeError):
    """The record names an algorithm outside the allow-list, or one that does not fit the key."""

    reason = "bad_alg"


class InvalidSignature(EnvelopeError):
    """The signature does not verify under the given public key. Deliberately says nothing more."""

    reason = "bad_signature"


class MalformedReceipt(EnvelopeError):
    """The bytes are not a receipt of this profile (docs/envelope.md §6). ``reason`` names the first problem."""

    reason = "malformed"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidProof(EnvelopeError):
    """A Merkle inclusion or consistency proof does not bind what it claims (RFC 6962/9162, envelope.merkle)."""

    reason = "bad_proof"


class MalformedNote(EnvelopeError):
    """The bytes are not a C2SP signed note or checkpoint (format, limits); ``envelope.note``."""

    reason = "malformed_note"


class InvalidNote(EnvelopeError):
    """No signature of a known key verifies the note, or one of them fails. Deliberately says little more."""

    reason = "bad_note_signature"

"""The signed-record profile shared by agent, aggregator and provisioning (DESIGN §3, docs/envelope.md).

Pure: depends only on cbor2 and cryptography. ``seal`` builds a record given a ``Signer``; ``open_record``
parses received bytes; ``Record.verify`` checks the signature over those exact bytes. ``merkle`` (RFC 6962
trees, proofs, tlog-tiles) and ``note`` (C2SP signed notes and checkpoints) are the transparency log's core.
"""

from envelope import labels, merkle, note
from envelope.errors import (
    EnvelopeError,
    InvalidNote,
    InvalidProof,
    InvalidSignature,
    MalformedNote,
    MalformedReceipt,
    MalformedRecord,
    UnsupportedAlgorithm,
)
from envelope.limits import DEFAULT_LIMITS, Limits
from envelope.names import DEVICE_ID_RE, device_id_problem, is_valid_device_id, topic_prefix_problem
from envelope.note import Checkpoint, NoteSigner, NoteVerifier
from envelope.receipt import (
    LogPosition,
    Receipt,
    ReceiptHeader,
    decode_receipt_payload,
    encode_receipt_payload,
    open_receipt,
    receipt_header,
    seal_receipt,
)
from envelope.record import (
    DEFAULT_MAX_RECORD_BYTES,
    Record,
    RecordHeader,
    Sign1,
    decode_sign1,
    encode_payload,
    open_record,
    seal,
    sha256,
    sig_structure,
    verify_signature,
)
from envelope.signer import PublicKey, Signer, kid_for, spki_der

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_RECORD_BYTES",
    "DEVICE_ID_RE",
    "Checkpoint",
    "EnvelopeError",
    "InvalidNote",
    "InvalidProof",
    "InvalidSignature",
    "Limits",
    "LogPosition",
    "MalformedNote",
    "MalformedReceipt",
    "MalformedRecord",
    "NoteSigner",
    "NoteVerifier",
    "PublicKey",
    "Receipt",
    "ReceiptHeader",
    "Record",
    "RecordHeader",
    "Sign1",
    "Signer",
    "UnsupportedAlgorithm",
    "decode_receipt_payload",
    "decode_sign1",
    "device_id_problem",
    "encode_payload",
    "encode_receipt_payload",
    "is_valid_device_id",
    "kid_for",
    "labels",
    "merkle",
    "note",
    "open_receipt",
    "open_record",
    "receipt_header",
    "seal",
    "seal_receipt",
    "sha256",
    "sig_structure",
    "spki_der",
    "topic_prefix_problem",
    "verify_signature",
]

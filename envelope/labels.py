"""COSE header labels, algorithm ids and content types of the depin-edge signed-record profile.

One place for the numbers in DESIGN §3 so that the agent, the aggregator and the provisioning tools cannot
drift apart. The profile is documented in docs/envelope.md.
"""

from __future__ import annotations

from typing import Final

# Standard COSE header parameters (RFC 9052 §3.1, RFC 9360).
ALG: Final = 1
CRIT: Final = 2  # labels the recipient must understand, or reject the message (RFC 9052 §3.1)
CONTENT_TYPE: Final = 3
KID: Final = 4
CWT_CLAIMS: Final = 15  # RFC 9597
COUNTER_SIGNATURE: Final = 7  # RFC 8152's; RFC 9052 §3.1 says recipients must understand it: we do not
X5CHAIN: Final = 33

# CWT claim keys used inside label 15.
CLAIM_SUB: Final = 2
CLAIM_IAT: Final = 6

# Private-use labels of this profile.
EPOCH: Final = -65537
SEQ: Final = -65538
CAPTURE: Final = -65539
STREAM: Final = -65540
MODEL_DIGEST: Final = -65541
INPUT_DIGEST: Final = -65542

# Every protected label a record of this profile may mark critical: the ones the verifier understands.
RECORD_LABELS: Final = frozenset({ALG, CRIT, CONTENT_TYPE, KID, CWT_CLAIMS, X5CHAIN, EPOCH, SEQ, CAPTURE, STREAM,
                                  MODEL_DIGEST, INPUT_DIGEST})

# Algorithms (COSE registry). ESP256 is the fully-specified name (RFC 9864) for ECDSA P-256 + SHA-256.
ALG_ESP256: Final = -9
ALG_ES256: Final = -7
ALG_EDDSA: Final = -8
ALG_ED25519: Final = -19
P256_ALGS: Final = frozenset({ALG_ESP256, ALG_ES256})
ACCEPTED_ALGS: Final = frozenset({ALG_ESP256, ALG_ES256, ALG_ED25519})

# Hash algorithm id for SHA-256 in a COSE_Hash-style [alg, digest] pair.
HASH_SHA256: Final = -16

# Clock states carried in the capture-time header.
CLOCK_UNSYNCED: Final = 0
CLOCK_NTP: Final = 1
CLOCK_GNSS: Final = 2

# COSE_Sign1 CBOR tag.
COSE_SIGN1_TAG: Final = 18

KIND_RESULT: Final = "result"
KIND_READING: Final = "reading"
KIND_TELEMETRY: Final = "telemetry"
KIND_STATUS: Final = "status"
KIND_GAP: Final = "gap"
KIND_RECEIPT: Final = "receipt"  # signed by an aggregator, not a device record (docs/envelope.md §6)

CONTENT_TYPES: Final[dict[str, str]] = {
    kind: f"application/vnd.depin-edge.{kind}+cbor"
    for kind in (KIND_RESULT, KIND_READING, KIND_TELEMETRY, KIND_STATUS, KIND_GAP, KIND_RECEIPT)
}
# Kinds a device signs (open_record accepts only these; a receipt is opened with envelope.open_receipt).
RECORD_KINDS: Final = frozenset({KIND_RESULT, KIND_READING, KIND_TELEMETRY, KIND_STATUS, KIND_GAP})
KIND_BY_CONTENT_TYPE: Final[dict[str, str]] = {ct: kind for kind, ct in CONTENT_TYPES.items() if kind in RECORD_KINDS}

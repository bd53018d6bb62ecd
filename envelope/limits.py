"""Every size and bound applied to bytes from outside, in one object (as python-tuf's ``UpdaterConfig``).

The agent and the aggregator import the same ``DEFAULT_LIMITS``, so a device refuses to commit what an
aggregator with default settings would refuse to store (issue 12, item 15). An aggregator may be configured
lower or higher (``[aggregator] max_record_bytes``, ``max_skew_s``); ``Limits`` is frozen, so a changed copy
is made with ``dataclasses.replace``. The serial protocol's sizes are fixed by its wire spec and live with it
(``firmware_bridge.messages``: ``MAX_BODY``, ``MAX_WIRE``, ``MAX_ERROR_TEXT``), not here: the C side is compiled
with them and ``firmware_bridge`` imports nothing else of the project.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    """Bounds on untrusted input of the record and receipt profiles (docs/envelope.md §1, §3, §5, §6)."""

    # A whole record (COSE_Sign1 bytes) above this is refused before it is parsed. 65535, not 65536: a
    # tlog-tiles entry bundle prefixes each entry with a 16-bit length, so an aggregator with a transparency
    # log cannot store a larger record, and the agent must not commit one.
    max_record_bytes: int = 65_535
    # A whole receipt (signed by an aggregator, checked by a device), and a signed note (log checkpoint).
    max_receipt_bytes: int = 64 * 1024
    max_note_bytes: int = 64 * 1024
    max_note_signatures: int = 64  # the signed-note spec asks verifiers to accept at least 16
    # Nesting of the record and protected header CBOR (arrays, maps, tags).
    max_cbor_depth: int = 64
    # Nesting of a payload map: the deepest one of the profile (telemetry) is 4.
    max_payload_depth: int = 16
    # Certificates in an x5chain (leaf + intermediates).
    max_chain_certs: int = 8
    # Capture or signing time this far ahead of receipt (or signing this far behind) is flagged as skew.
    max_skew_ms: int = 300_000
    # Receipts: rejected entries, Merkle proof hashes, id and reason text.
    max_receipt_rejects: int = 1024
    max_proof_hashes: int = 64
    max_id_chars: int = 64
    max_reason_chars: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{f.name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = Limits()

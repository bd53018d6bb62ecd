"""What settles a seq (DESIGN §8): the one table of reject reasons, and the settled point.

A seq of a device is *settled* when it is stored, rejected for a permanent reason, or below the device's
signed low-water mark (``"low_water"`` in its latest verified birth or telemetry payload: the oldest seq its
outbox still holds). Transient causes (a key not known yet, a stale CRL, a bug of ours) never settle: the
record is held or the device sends it again. The settled point is the highest ``s`` such that every seq
``<= s`` is settled; a receipt tells the device it may delete up to it.

Seqs come from one per-device counter across epochs, so the settled point is per device; a receipt names
the epoch of the record at that point. Pure: the store applies these rules inside its transaction
(``DeviceBook.cover`` for permanent rejects and the low-water mark), tests check both against
``settled_point``. docs/aggregator.md's reject table is checked against ``REJECT_REASONS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

PERMANENT: Final = "permanent"
TRANSIENT: Final = "transient"

# reason -> (disposition, what it means). Every reason the verifier, the trust store, the store and the
# service emit is here (tests/unit/test_agg_settle.py scans the code for them).
REJECT_REASONS: Final[dict[str, tuple[str, str]]] = {
    "oversize": (PERMANENT, "the record is larger than max_record_bytes"),
    "not_cbor": (PERMANENT, "the bytes are not strict CBOR"),
    "malformed": (PERMANENT, "not a COSE_Sign1 record of the profile, or an x5chain on a non-status record"),
    "envelope": (PERMANENT, "any other envelope refusal"),
    "bad_crit": (PERMANENT, "the protected header marks critical (crit, label 2) a label the profile does not "
                            "understand, or carries a counter signature (label 7): RFC 9052 §3.1"),
    "bad_alg": (PERMANENT, "algorithm outside the allow-list, or not fitting the key"),
    "bad_topic": (PERMANENT, "the topic is not a record topic of the prefix"),
    "topic_mismatch": (PERMANENT, "the protected header names another device, kind or stream than the topic"),
    "bad_seq": (PERMANENT, "seq or epoch outside 1..2**63-1"),
    "bad_chain": (TRANSIENT, "the birth record's certificate does not chain to a fleet root (a missing "
                             "intermediate or CA file is the operator's to fix)"),
    "key_mismatch": (PERMANENT, "the key belongs to another device, or the kid is not the certificate's"),
    "revoked": (PERMANENT, "the device certificate or a CA above it is revoked"),
    "cert_expired": (TRANSIENT, "the device certificate is outside its validity: renewing it lets the "
                                "records in"),
    "bad_signature": (PERMANENT, "the signature does not verify"),
    "bad_payload": (PERMANENT, "the payload is outside the profile (docs/envelope.md §5): not a strict CBOR map "
                               "of data (duplicate keys, trailing bytes, indefinite lengths, too deep, tags)"),
    "bad_gap": (PERMANENT, "a gap record's range is invalid"),
    "epoch_regression": (PERMANENT, "the epoch goes backwards against stored neighbours"),
    "unknown_kid": (TRANSIENT, "no trusted key has this kid yet: held until the birth record arrives"),
    "hold_full": (TRANSIENT, "an unknown-key record did not fit the hold (count or bytes); sent again later"),
    "hold_expired": (TRANSIENT, "an unknown-key record waited longer than hold.max_age_s; sent again later"),
    "stale_crl": (TRANSIENT, "a CRL on the path is past its next update: the operator must refresh it"),
    "internal_error": (TRANSIENT, "a bug of the aggregator (logged with a traceback)"),
}


def is_permanent(reason: str) -> bool:
    """True when a record rejected for ``reason`` settles its seq. Unknown reasons are transient (safe)."""
    return REJECT_REASONS.get(reason, (TRANSIENT, ""))[0] == PERMANENT


def settled_point(stored: Iterable[int], rejected: Iterable[int], low_water: int = 0) -> int:
    """Highest ``s`` such that every seq in ``1..s`` is stored, permanently rejected or below ``low_water``.

    The definition, written plainly: the store computes the same point incrementally (``DeviceBook``).
    """
    done = set(stored) | set(rejected)
    s = max(0, low_water - 1)
    while s + 1 in done:
        s += 1
    return s


def low_water_of(payload: Any) -> int | None:
    """The low-water mark a verified birth or telemetry payload carries, if it carries a valid one."""
    if not isinstance(payload, Mapping):
        return None
    value = payload.get("low_water")
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2**63:
        return None
    return value

"""Receipts: what an aggregator signs for a device it took data from (DESIGN §8, docs/envelope.md §6).

A receipt is a COSE_Sign1 (tag 18) by the aggregator's key with its certificate chain in the protected
header; the payload says which seqs of one device epoch are settled, which were rejected for good and why,
the aggregator's time, whether the device should re-publish its birth record, and (issue 11) the
transparency-log position. Pure: ``seal_receipt`` needs a ``Signer``; ``open_receipt`` parses bytes from
outside and raises ``MalformedReceipt`` for anything off-profile, never another exception. Chain, role and
signature checks live in ``provisioning.chain.verify_receipt`` (they need the fleet trust anchors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from envelope import cbor_det
from envelope import labels as L
from envelope.errors import MalformedReceipt
from envelope.limits import DEFAULT_LIMITS
from envelope.record import Sign1, decode_sign1, sig_structure
from envelope.signer import Signer

RECEIPT_VERSION = 1
CONTENT_TYPE = L.CONTENT_TYPES[L.KIND_RECEIPT]
# The values live in envelope.limits (one definition of every untrusted size); these names stay for callers.
DEFAULT_MAX_RECEIPT_BYTES = DEFAULT_LIMITS.max_receipt_bytes
MAX_ID_CHARS = DEFAULT_LIMITS.max_id_chars
MAX_REASON_CHARS = DEFAULT_LIMITS.max_reason_chars
MAX_REJECTED = DEFAULT_LIMITS.max_receipt_rejects  # per receipt; a batcher carries the rest over to the next one
MAX_PROOF_HASHES = DEFAULT_LIMITS.max_proof_hashes  # a Merkle proof of a tree below 2**64 leaves
_U63 = 2**63  # seqs and epochs live in signed 64-bit columns on the aggregator
_PROTECTED_LABELS = frozenset({L.ALG, L.CONTENT_TYPE, L.KID, L.X5CHAIN})
_PAYLOAD_KEYS = frozenset({"v", "agg", "dev", "epoch", "settled", "rejected", "time_ms", "birth", "log"})
_LOG_KEYS = frozenset({"checkpoint", "index", "inclusion", "prev_size", "consistency"})


@dataclass(frozen=True)
class LogPosition:
    """Where the device's newest settled stored record sits in the transparency log (issue 11, DESIGN §9)."""

    checkpoint: str
    index: int
    inclusion: tuple[bytes, ...] = ()
    prev_size: int = 0
    consistency: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class Receipt:
    """The signed statement of one receipt. ``settled``: every seq <= it in ``epoch`` is settled."""

    agg: str
    dev: str
    epoch: int
    settled: int
    time_ms: int
    rejected: tuple[tuple[int, str], ...] = ()
    birth: bool = False
    log: LogPosition | None = None
    v: int = RECEIPT_VERSION


@dataclass(frozen=True)
class ReceiptHeader:
    """What the protected header of a receipt says: algorithm, key id, certificate chain (leaf first)."""

    alg: int
    kid: bytes
    x5chain: tuple[bytes, ...]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(value: object, name: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        raise MalformedReceipt("bad_payload", f"{name} must be text of 1..{MAX_ID_CHARS} characters, "
                               f"got {value!r:.80}")
    return value


def _check_uint(value: object, name: str, limit: int = _U63) -> int:
    if not _is_int(value) or not 0 <= value < limit:  # type: ignore[operator]
        raise MalformedReceipt("bad_payload", f"{name} must be an integer in 0..{limit - 1}, got {value!r:.80}")
    assert isinstance(value, int)
    return value


def _check_hashes(value: object, name: str) -> tuple[bytes, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > MAX_PROOF_HASHES or \
            not all(isinstance(h, bytes) and len(h) == 32 for h in value):
        raise MalformedReceipt("bad_payload", f"log {name} must be an array of at most {MAX_PROOF_HASHES} "
                               "32-byte hashes")
    return tuple(value)


def _check_rejected(value: object) -> tuple[tuple[int, str], ...]:
    if not isinstance(value, (list, tuple)) or len(value) > MAX_REJECTED:
        raise MalformedReceipt("bad_payload", f"rejected must be an array of at most {MAX_REJECTED} entries")
    out: list[tuple[int, str]] = []
    for entry in value:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise MalformedReceipt("bad_payload", f"rejected entries must be [seq, reason], got {entry!r:.80}")
        seq = _check_uint(entry[0], "rejected seq")
        reason = entry[1]
        if seq < 1 or not isinstance(reason, str) or not 1 <= len(reason) <= MAX_REASON_CHARS:
            raise MalformedReceipt("bad_payload", f"rejected entry must be [seq >= 1, reason text of 1.."
                                   f"{MAX_REASON_CHARS} characters], got {entry!r:.80}")
        if out and seq <= out[-1][0]:
            raise MalformedReceipt("bad_payload", "rejected seqs must be strictly ascending")
        out.append((seq, reason))
    return tuple(out)


def _check_log(value: object) -> LogPosition | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != _LOG_KEYS:
        raise MalformedReceipt("bad_payload", f"log must be null or a map with exactly the keys {sorted(_LOG_KEYS)}")
    checkpoint = value["checkpoint"]
    if not isinstance(checkpoint, str) or not checkpoint:
        raise MalformedReceipt("bad_payload", "log checkpoint must be non-empty text")
    return LogPosition(checkpoint, _check_uint(value["index"], "log index"),
                       _check_hashes(value["inclusion"], "inclusion"),
                       _check_uint(value["prev_size"], "log prev_size"),
                       _check_hashes(value["consistency"], "consistency"))


def check_receipt(receipt: Receipt) -> Receipt:
    """Raise ``MalformedReceipt`` unless every field is in the profile's range; returns ``receipt``.

    One rule set for both directions: ``encode_receipt_payload`` refuses what ``open_receipt`` would refuse.
    """
    if receipt.v != RECEIPT_VERSION or isinstance(receipt.v, bool):
        raise MalformedReceipt("bad_version", f"receipt version must be {RECEIPT_VERSION}, got {receipt.v!r:.40}")
    _check_id(receipt.agg, "agg")
    _check_id(receipt.dev, "dev")
    _check_uint(receipt.epoch, "epoch")
    _check_uint(receipt.settled, "settled")
    _check_uint(receipt.time_ms, "time_ms")
    if not isinstance(receipt.birth, bool):
        raise MalformedReceipt("bad_payload", f"birth must be a boolean, got {receipt.birth!r:.40}")
    _check_rejected(receipt.rejected)
    if receipt.log is not None:
        if not isinstance(receipt.log, LogPosition):
            raise MalformedReceipt("bad_payload", f"log must be a LogPosition or None, got {receipt.log!r:.40}")
        _check_log(_log_map(receipt.log))
    return receipt


def _log_map(log: LogPosition) -> dict[str, Any]:
    return {"checkpoint": log.checkpoint, "index": log.index, "inclusion": list(log.inclusion),
            "prev_size": log.prev_size, "consistency": list(log.consistency)}


def receipt_payload_map(receipt: Receipt) -> dict[str, Any]:
    """The payload map of ``receipt`` (text keys, as docs/envelope.md §6 lists them)."""
    return {
        "v": receipt.v, "agg": receipt.agg, "dev": receipt.dev, "epoch": receipt.epoch, "settled": receipt.settled,
        "rejected": [[s, r] for s, r in receipt.rejected], "time_ms": receipt.time_ms, "birth": receipt.birth,
        "log": None if receipt.log is None else _log_map(receipt.log),
    }


def encode_receipt_payload(receipt: Receipt) -> bytes:
    """Deterministic CBOR of the receipt payload; raises ``MalformedReceipt`` for out-of-profile fields."""
    return cbor_det.dumps(receipt_payload_map(check_receipt(receipt)))


def decode_receipt_payload(data: bytes) -> Receipt:
    """The ``Receipt`` a payload encodes; strict: exact key set, exact types, strict CBOR."""
    try:
        cbor_det.check_strict(data)
        doc = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types on garbage
        raise MalformedReceipt("bad_payload", f"receipt payload is not strict CBOR: {e}") from e
    if not isinstance(doc, dict):
        raise MalformedReceipt("bad_payload", f"receipt payload must be a map, got {type(doc).__name__}")
    if set(doc) != _PAYLOAD_KEYS:
        keys = sorted(repr(k) for k in doc)
        raise MalformedReceipt("bad_payload", f"receipt payload must have exactly the keys {sorted(_PAYLOAD_KEYS)}, "
                               f"got {', '.join(keys)[:200]}")
    version = doc["v"]
    if not _is_int(version) or version != RECEIPT_VERSION:
        raise MalformedReceipt("bad_version", f"receipt version must be {RECEIPT_VERSION}, got {version!r:.40}")
    birth = doc["birth"]
    if not isinstance(birth, bool):
        raise MalformedReceipt("bad_payload", f"birth must be a boolean, got {birth!r:.40}")
    return Receipt(
        agg=_check_id(doc["agg"], "agg"), dev=_check_id(doc["dev"], "dev"),
        epoch=_check_uint(doc["epoch"], "epoch"), settled=_check_uint(doc["settled"], "settled"),
        time_ms=_check_uint(doc["time_ms"], "time_ms"), rejected=_check_rejected(doc["rejected"]),
        birth=birth, log=_check_log(doc["log"]), v=version,
    )


def encode_protected(alg: int, kid: bytes, chain_der: Sequence[bytes]) -> bytes:
    """Protected header bytes: alg, content type, kid, x5chain (one certificate as a bstr, RFC 9360)."""
    if not chain_der or not all(isinstance(c, bytes) and c for c in chain_der):
        raise ValueError("a receipt needs the signer's certificate chain (leaf first, DER)")
    chain: bytes | list[bytes] = chain_der[0] if len(chain_der) == 1 else list(chain_der)
    return cbor_det.dumps({L.ALG: alg, L.CONTENT_TYPE: CONTENT_TYPE, L.KID: kid, L.X5CHAIN: chain})


def seal_receipt(signer: Signer, chain_der: Sequence[bytes], receipt: Receipt) -> bytes:
    """Sign ``receipt`` with the aggregator key; ``chain_der`` = [leaf, intermediates...] in DER."""
    payload = encode_receipt_payload(receipt)
    protected = encode_protected(signer.alg, signer.kid, chain_der)
    signature = signer.sign(sig_structure(protected, payload))
    # tag 18, array of 4: protected bstr, empty unprotected map, payload bstr, signature bstr
    return b"\xd2\x84" + cbor_det.bstr(protected) + b"\xa0" + cbor_det.bstr(payload) + cbor_det.bstr(signature)


def receipt_header(msg: Sign1) -> ReceiptHeader:
    """Check and return the protected header of a receipt; raises ``MalformedReceipt``."""
    if msg.unprotected:
        raise MalformedReceipt("bad_header", "unprotected header must be empty")
    if not msg.protected:
        raise MalformedReceipt("bad_header", "protected header must not be empty")
    try:
        hdr = msg.protected_map(tags=False)
    except Exception as e:
        raise MalformedReceipt("bad_header", f"protected header: {e}") from e
    extra = [k for k in hdr if k not in _PROTECTED_LABELS]
    if extra:  # includes crit (2): nothing beyond these four labels is understood (RFC 9052 §3.1)
        raise MalformedReceipt("bad_header", f"protected header has labels outside the profile: {extra!r:.80}")
    alg = hdr.get(L.ALG)
    if not _is_int(alg) or alg not in L.ACCEPTED_ALGS:
        raise MalformedReceipt("bad_alg", f"algorithm {alg!r:.40} is not accepted; expected one of "
                               f"{sorted(L.ACCEPTED_ALGS)}")
    if hdr.get(L.CONTENT_TYPE) != CONTENT_TYPE:
        raise MalformedReceipt("bad_content_type", f"content type must be {CONTENT_TYPE!r}, got "
                               f"{hdr.get(L.CONTENT_TYPE)!r:.80}")
    kid = hdr.get(L.KID)
    if not isinstance(kid, bytes) or len(kid) != 16:
        raise MalformedReceipt("bad_header", "kid must be a 16-byte string")
    chain = hdr.get(L.X5CHAIN)
    if isinstance(chain, bytes) and chain:
        x5chain: tuple[bytes, ...] = (chain,)
    elif isinstance(chain, (list, tuple)) and chain and all(isinstance(c, bytes) and c for c in chain):
        x5chain = tuple(chain)
    else:
        raise MalformedReceipt("no_x5chain", "x5chain must be a certificate byte string or a non-empty array")
    if len(x5chain) > DEFAULT_LIMITS.max_chain_certs:
        raise MalformedReceipt("bad_header", f"x5chain holds {len(x5chain)} certificates, at most "
                               f"{DEFAULT_LIMITS.max_chain_certs} are accepted")
    return ReceiptHeader(alg, kid, x5chain)


def open_receipt(data: bytes | bytearray | memoryview,
                 max_bytes: int = DEFAULT_MAX_RECEIPT_BYTES) -> tuple[Receipt, Sign1]:
    """Parse received receipt bytes (not verified); raises ``MalformedReceipt``, never anything else."""
    try:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedReceipt("not_cbor", f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) <= max_bytes and data[:1] != b"\xd2":  # cbor2 silently strips tag 55799; nothing but 18
            raise MalformedReceipt("not_sign1", "a receipt must start with CBOR tag 18 (COSE_Sign1)")
        try:
            msg = decode_sign1(data, max_bytes=max_bytes)
        except Exception as e:
            reason = getattr(e, "reason", "not_sign1")
            raise MalformedReceipt(reason if reason in ("oversize", "not_cbor") else "not_sign1", str(e)) from e
        receipt_header(msg)
        return decode_receipt_payload(msg.payload), msg
    except MalformedReceipt:
        raise
    except Exception as e:  # a bug in a check above must still surface as a refusal of these bytes
        raise MalformedReceipt("malformed", f"receipt refused: {type(e).__name__}: {e}") from e

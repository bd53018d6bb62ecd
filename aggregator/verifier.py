"""The verifier: topic + received bytes + trust store in, a verified record out, or one ``Rejected``.

Pure (no I/O, the time is passed in). Order matters for cost and for what an attacker learns: size limit,
parse, topic, allow-listed algorithm, header-vs-topic, key by kid (learning it from a birth record's
x5chain when present), signature over the bytes exactly as received, then the payload profile (every
content type: a strict CBOR map of data, else ``bad_payload``), the gap record's range and the clock-skew
flag. Sequence rules need the store's state and live in ``aggregator.sequence``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from aggregator.errors import Rejected
from aggregator.topics import TopicInfo, parse_topic
from aggregator.trust import DeviceKey, TrustStore
from envelope import EnvelopeError, Record, kid_for, labels, open_record
from envelope.limits import DEFAULT_LIMITS, Limits

MAX_SEQ = 2**63 - 1  # stores keep seq in a signed 64-bit column
SKEW_FUTURE = 1  # capture or signing time later than receipt + bound
SKEW_PAST = 2  # signed earlier than receipt - bound: a slow clock or a long backlog
SKEW_UNSYNCED = 4  # the device said its clock was not synchronised at capture

_GAP_FIELDS = {"first": int, "last": int, "count": int, "bytes": int, "reason": str}


@dataclass(frozen=True)
class GapInfo:
    """A gap record's claim: seqs ``first..last`` were evicted by the agent's outbox policy."""

    first: int
    last: int
    count: int
    bytes: int
    reason: str


@dataclass(frozen=True)
class VerifiedRecord:
    """A record whose signature, key and topic checked out. Sequence rules are applied by the store."""

    record: Record
    topic: TopicInfo
    key: DeviceKey
    received_ms: int
    skew_flags: int = 0
    gap: GapInfo | None = None
    learned: bool = False  # the key was learned from this record's x5chain
    payload: dict[str, Any] | None = None  # the decoded payload (checked against the profile)

    @property
    def device_id(self) -> str:
        return self.record.device_id

    @property
    def seq(self) -> int:
        return self.record.seq

    @property
    def epoch(self) -> int:
        return self.record.epoch


def gap_info(payload: Any, seq: int, device_id: str) -> GapInfo:
    """Validate a gap record's payload: an evicted range wholly before the gap record's own seq."""
    if not isinstance(payload, dict):
        raise Rejected("bad_gap", f"gap payload must be a map, got {type(payload).__name__}", device_id=device_id)
    values: dict[str, Any] = {}
    for name, typ in _GAP_FIELDS.items():
        v = payload.get(name)
        if not isinstance(v, typ) or isinstance(v, bool):
            raise Rejected("bad_gap", f"gap payload field {name!r} must be {typ.__name__}, got {v!r:.40}",
                           device_id=device_id)
        values[name] = v
    first, last = values["first"], values["last"]
    if not 1 <= first <= last < seq or values["count"] != last - first + 1 or values["bytes"] < 0:
        raise Rejected("bad_gap", f"gap range {first}..{last} (count {values['count']}) must satisfy "
                       f"1 <= first <= last < {seq} and count = last - first + 1", device_id=device_id)
    return GapInfo(**values)


def embedded_key(record: Record) -> DeviceKey:
    """The key of a birth record's own leaf certificate, not chained to anything (``verify`` without a CA).

    Raises ``Rejected`` (``unknown_kid`` without an x5chain, ``bad_chain`` for a certificate that does not
    parse or holds another key type, ``key_mismatch`` when the kid is not its key): never anything else.
    """
    if not record.x5chain:
        raise Rejected("unknown_kid", "no --trust CA or --registry given and the record carries no x5chain",
                       device_id=record.device_id)
    try:
        public = x509.load_der_x509_certificate(record.x5chain[0]).public_key()
    except Exception as e:  # ValueError, InvalidVersion, UnsupportedAlgorithm... from broken DER
        raise Rejected("bad_chain", f"the x5chain certificate is not usable X.509: {type(e).__name__}: {e}",
                       device_id=record.device_id) from e
    if not isinstance(public, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise Rejected("bad_chain", f"certificate key type {type(public).__name__} is not P-256 or Ed25519",
                       device_id=record.device_id)
    if kid_for(public) != record.kid:
        raise Rejected("key_mismatch", "record kid is not the embedded certificate's key", device_id=record.device_id)
    return DeviceKey(record.device_id, record.kid, public, "x5chain-untrusted")


def skew_flags(record: Record, received_ms: int, max_skew_ms: int) -> int:
    """Clock-skew flags of a record against our receipt time (stored with the record, never a reject)."""
    flags = 0
    signed_ms = record.iat * 1000
    if max(signed_ms, record.capture_ms) > received_ms + max_skew_ms:
        flags |= SKEW_FUTURE
    if signed_ms < received_ms - max_skew_ms:
        flags |= SKEW_PAST
    if record.clock_state == labels.CLOCK_UNSYNCED:
        flags |= SKEW_UNSYNCED
    return flags


class Verifier:
    """Checks records against a ``TrustStore``; learns device keys from verified birth records."""

    def __init__(self, trust: TrustStore, prefix: str = "edge/v1", limits: Limits = DEFAULT_LIMITS) -> None:
        self.trust = trust
        self.prefix = prefix
        self.limits = limits  # envelope.limits: the one definition of every untrusted size, shared with agents

    def verify(self, topic: str, data: bytes, received_ms: int) -> VerifiedRecord:
        """Verify one record received on ``topic`` at ``received_ms``; raises ``Rejected``."""
        info = parse_topic(topic, self.prefix)
        try:
            record = open_record(data, limits=self.limits)
        except EnvelopeError as e:
            raise Rejected(e.reason, str(e), device_id=info.device_id) from e
        try:
            return self.verify_record(record, info, received_ms)
        except Rejected as e:
            e.seq, e.epoch = record.seq, record.epoch  # the seq this reject may settle (aggregator.settle)
            e.device_id = e.device_id or info.device_id  # the topic's device (the broker ACL vouches for it)
            raise

    def verify_record(self, record: Record, info: TopicInfo, received_ms: int) -> VerifiedRecord:
        """Verify an already parsed record against the topic it arrived on."""
        dev = info.device_id
        if record.device_id != dev or record.kind != info.kind or record.stream != info.stream:
            raise Rejected("topic_mismatch", f"header says device {record.device_id[:64]!r} kind {record.kind!r} "
                           f"stream {record.stream[:64]!r}, topic says {dev!r} {info.kind!r} {info.stream!r}",
                           device_id=dev)
        if not 1 <= record.seq <= MAX_SEQ or record.epoch > MAX_SEQ:
            raise Rejected("bad_seq", f"seq must be 1..{MAX_SEQ} and epoch at most {MAX_SEQ}, got seq "
                           f"{record.seq} epoch {record.epoch}", device_id=dev)
        now = datetime.fromtimestamp(received_ms / 1000, timezone.utc)
        learned = False
        if record.x5chain:
            if record.kind != labels.KIND_STATUS:
                raise Rejected("malformed", f"x5chain is allowed on status records only, got a {record.kind} record",
                               device_id=dev)
            key = self.trust.learn_chain(dev, record.x5chain, record.kid, now)
            learned = True
        else:
            key = self.trust.key_for(record.kid, now)
        if key.device_id != dev:
            raise Rejected("key_mismatch", f"kid {record.kid.hex()} belongs to {key.device_id!r}, "
                           f"the record claims {dev!r}", device_id=dev)
        try:
            record.verify(key.public_key)
        except EnvelopeError as e:
            raise Rejected(e.reason, f"{e} (kid {record.kid.hex()})", device_id=dev) from e
        if learned:
            self.trust.add(key)  # only once the chain and the signature both verified
        try:  # every content type: a signed payload outside the profile is refused, not stored (issue 12)
            payload = record.payload(self.limits)
        except EnvelopeError as e:
            raise Rejected(e.reason, str(e), device_id=dev) from e
        gap = gap_info(payload, record.seq, dev) if record.kind == labels.KIND_GAP else None
        return VerifiedRecord(record, info, key, received_ms, skew_flags(record, received_ms,
                              self.limits.max_skew_ms), gap, learned, payload)

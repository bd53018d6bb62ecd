"""Seal and open COSE_Sign1 records of the depin-edge profile (DESIGN §3, docs/envelope.md).

Pure: no clock, no I/O. The caller passes the header values (time, epoch, seq) and a ``Signer``. Opening
parses the received bytes and keeps the protected header and payload exactly as received, so the signature
is always checked over those bytes, never over a re-serialisation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from envelope import cbor_det
from envelope import labels as L
from envelope.errors import InvalidSignature, MalformedRecord, UnsupportedAlgorithm
from envelope.limits import DEFAULT_LIMITS, Limits
from envelope.signer import PublicKey, Signer

DEFAULT_MAX_RECORD_BYTES = DEFAULT_LIMITS.max_record_bytes  # kept for callers; the value lives in envelope.limits
_SIG1_CONTEXT = cbor_det.dumps("Signature1")
_EMPTY_BSTR = b"\x40"
_TAG18_ARRAY4 = b"\xd2\x84"
_EMPTY_MAP = b"\xa0"


@dataclass(frozen=True)
class RecordHeader:
    """Everything the protected header of one record says. ``kind`` selects the content type."""

    kind: str
    device_id: str
    stream: str
    epoch: int
    seq: int
    iat: int
    capture_ms: int
    clock_state: int = L.CLOCK_UNSYNCED
    model_sha256: bytes | None = None
    input_sha256: bytes | None = None
    x5chain: tuple[bytes, ...] = ()

    def protected_map(self, alg: int, kid: bytes) -> dict[int, Any]:
        """The protected header map for this record, signed by a key with ``alg`` and ``kid``."""
        if self.kind not in L.RECORD_KINDS:
            raise ValueError(f"unknown record kind {self.kind!r}; expected one of {sorted(L.RECORD_KINDS)}")
        hdr: dict[int, Any] = {
            L.ALG: alg,
            L.CONTENT_TYPE: L.CONTENT_TYPES[self.kind],
            L.KID: kid,
            L.CWT_CLAIMS: {L.CLAIM_SUB: self.device_id, L.CLAIM_IAT: self.iat},
            L.EPOCH: self.epoch,
            L.SEQ: self.seq,
            L.CAPTURE: [self.capture_ms, self.clock_state],
            L.STREAM: self.stream,
        }
        if self.model_sha256 is not None:
            hdr[L.MODEL_DIGEST] = [L.HASH_SHA256, self.model_sha256]
        if self.input_sha256 is not None:
            hdr[L.INPUT_DIGEST] = [L.HASH_SHA256, self.input_sha256]
        if self.x5chain:
            hdr[L.X5CHAIN] = self.x5chain[0] if len(self.x5chain) == 1 else list(self.x5chain)
        return hdr


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The RFC 9052 Sig_structure for COSE_Sign1 (the profile uses an empty external AAD)."""
    aad = cbor_det.bstr(external_aad) if external_aad else _EMPTY_BSTR
    return b"\x84" + _SIG1_CONTEXT + cbor_det.bstr(protected) + aad + cbor_det.bstr(payload)


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Deterministic CBOR encoding of a payload map."""
    return cbor_det.dumps(payload)


def _check_header(header: RecordHeader) -> None:
    """Refuse header values ``open_record`` would reject, so a bad record fails here, not at the aggregator."""
    if header.kind not in L.RECORD_KINDS:
        raise ValueError(f"unknown record kind {header.kind!r}; expected one of {sorted(L.RECORD_KINDS)}")
    if not isinstance(header.device_id, str) or not isinstance(header.stream, str):
        raise ValueError(f"device_id and stream must be str, got {type(header.device_id).__name__} and "
                         f"{type(header.stream).__name__}")
    for name in ("epoch", "seq"):
        value = getattr(header, name)
        if not _is_int(value) or not 0 <= value < 2**64:
            raise ValueError(f"{name} must be an int in 0..2**64-1, got {value!r:.40}")
    for name in ("iat", "capture_ms"):  # beyond 64-bit heads CBOR needs a bignum tag, and headers have no tags
        value = getattr(header, name)
        if not _is_int(value) or not -(2**64) <= value < 2**64:
            raise ValueError(f"{name} must be an int in -2**64..2**64-1, got {value!r:.40}")
    if not _is_int(header.clock_state) or header.clock_state not in _CLOCK_STATES:
        raise ValueError(f"clock_state must be 0, 1 or 2, got {header.clock_state!r:.40}")
    for name in ("model_sha256", "input_sha256"):
        value = getattr(header, name)
        if value is not None and (not isinstance(value, bytes) or len(value) != 32):
            raise ValueError(f"{name} must be 32 bytes (a SHA-256 digest) or None, got {value!r:.40}")
    if not all(isinstance(c, bytes) and c for c in header.x5chain):
        raise ValueError("x5chain must hold non-empty DER certificates (bytes)")


_CLOCK_STATES = (L.CLOCK_UNSYNCED, L.CLOCK_NTP, L.CLOCK_GNSS)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
# Encoded labels in the bytewise order RFC 8949 §4.2.1 gives them: 1 3 4 15 33 -65537 ... -65542.
_LBL_X5CHAIN = b"\x18\x21"
_LBL_EPOCH = b"\x3a\x00\x01\x00\x00"
_LBL_SEQ = b"\x3a\x00\x01\x00\x01"
_LBL_CAPTURE = b"\x3a\x00\x01\x00\x02\x82"  # label, then the head of a 2-element array
_LBL_STREAM = b"\x3a\x00\x01\x00\x03"
_LBL_MODEL = b"\x3a\x00\x01\x00\x04\x82\x2f\x58\x20"  # label, [ -16, bstr(32) ...
_LBL_INPUT = b"\x3a\x00\x01\x00\x05\x82\x2f\x58\x20"
_prefix_cache: dict[tuple[int, bytes, str, str], bytes] = {}
_PREFIX_CACHE_MAX = 256


def _prefix(alg: int, kid: bytes, kind: str, device_id: str) -> bytes:
    """Encoded labels 1, 3, 4 and 15 up to the iat value: constant for one signer, kind and device."""
    key = (alg, kid, kind, device_id)
    prefix = _prefix_cache.get(key)
    if prefix is None:
        prefix = (b"\x01" + cbor_det.dumps(alg) + b"\x03" + cbor_det.tstr(L.CONTENT_TYPES[kind])
                  + b"\x04" + cbor_det.bstr(kid) + b"\x0f\xa2\x02" + cbor_det.tstr(device_id) + b"\x06")
        if len(_prefix_cache) >= _PREFIX_CACHE_MAX:
            _prefix_cache.clear()
        _prefix_cache[key] = prefix
    return prefix


def encode_protected(header: RecordHeader, alg: int, kid: bytes) -> bytes:
    """The protected header bytes: equal to ``cbor_det.dumps(header.protected_map(alg, kid))``, built faster.

    The map is written directly in its fixed bytewise key order, with the constant part cached per signer,
    kind and device. ``header`` must have passed ``_check_header``.
    """
    uint = cbor_det.uint
    count = 8 + bool(header.x5chain) + (header.model_sha256 is not None) + (header.input_sha256 is not None)
    parts = [bytes([0xA0 | count]), _prefix(alg, kid, header.kind, header.device_id),
             cbor_det.dumps(header.iat)]
    if header.x5chain:
        chain = header.x5chain
        parts.append(_LBL_X5CHAIN)
        parts.append(cbor_det.bstr(chain[0]) if len(chain) == 1 else cbor_det.dumps(list(chain)))
    parts += [_LBL_EPOCH, uint(header.epoch), _LBL_SEQ, uint(header.seq), _LBL_CAPTURE,
              cbor_det.dumps(header.capture_ms), bytes([header.clock_state]), _LBL_STREAM,
              cbor_det.tstr(header.stream)]
    if header.model_sha256 is not None:
        parts += [_LBL_MODEL, header.model_sha256]
    if header.input_sha256 is not None:
        parts += [_LBL_INPUT, header.input_sha256]
    return b"".join(parts)


def seal(signer: Signer, header: RecordHeader, payload: dict[str, Any] | bytes) -> bytes:
    """Build and sign one tagged COSE_Sign1 record; returns its bytes.

    Raises ``ValueError`` for header values the profile does not allow (see ``open_record``).
    """
    _check_header(header)
    payload_bytes = payload if isinstance(payload, bytes) else encode_payload(payload)
    protected = encode_protected(header, signer.alg, signer.kid)
    pbstr = cbor_det.bstr(protected)
    lbstr = cbor_det.bstr(payload_bytes)
    signature = signer.sign(b"\x84" + _SIG1_CONTEXT + pbstr + _EMPTY_BSTR + lbstr)
    return _TAG18_ARRAY4 + pbstr + _EMPTY_MAP + lbstr + cbor_det.bstr(signature)


@dataclass(frozen=True)
class Record:
    """A parsed, not yet verified record. ``protected_bytes`` and ``payload_bytes`` are as received."""

    raw: bytes
    protected_bytes: bytes
    payload_bytes: bytes
    signature: bytes
    alg: int
    kid: bytes
    kind: str
    device_id: str
    iat: int
    epoch: int
    seq: int
    capture_ms: int
    clock_state: int
    stream: str
    model_sha256: bytes | None = None
    input_sha256: bytes | None = None
    x5chain: tuple[bytes, ...] = field(default=())

    def payload(self, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
        """The decoded payload map (only meaningful after verification); raises ``MalformedRecord``
        (reason ``bad_payload``) for anything outside the payload profile (``cbor_det.check_payload``)."""
        try:
            cbor_det.check_payload(self.payload_bytes, max_depth=limits.max_payload_depth)
            doc = cbor2.loads(self.payload_bytes)
        except Exception as e:  # cbor2 raises several types on garbage
            raise MalformedRecord(f"payload is outside the profile: {e}", reason="bad_payload") from e
        if not isinstance(doc, dict):  # check_payload saw a map head; cbor2 must agree
            raise MalformedRecord(f"payload must be a map, got {type(doc).__name__}", reason="bad_payload")
        return doc

    def verify(self, public_key: PublicKey) -> None:
        """Check the signature over the received bytes with ``public_key``; raises on any mismatch."""
        verify_signature(self.alg, public_key, sig_structure(self.protected_bytes, self.payload_bytes),
                         self.signature)


def verify_signature(alg: int, public_key: PublicKey, data: bytes, signature: bytes) -> None:
    """Verify a COSE-form signature; raises ``InvalidSignature`` or ``UnsupportedAlgorithm``.

    ``alg`` is taken as found in a header: a text or any other non-integer value is an unsupported algorithm.
    """
    if not _is_int(alg):
        raise UnsupportedAlgorithm(f"algorithm {alg!r:.40} is not accepted; expected one of {sorted(L.ACCEPTED_ALGS)}")
    if alg in L.P256_ALGS:
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise UnsupportedAlgorithm(f"algorithm {alg} needs a P-256 key, the key for this kid is not one")
        if len(signature) != 64:
            raise InvalidSignature("signature verification failed")
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        try:
            public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        except _CryptoInvalidSignature as e:
            raise InvalidSignature("signature verification failed") from e
    elif alg == L.ALG_ED25519:
        if not isinstance(public_key, ed25519.Ed25519PublicKey):
            raise UnsupportedAlgorithm(f"algorithm {alg} needs an Ed25519 key, the key for this kid is not one")
        try:
            public_key.verify(signature, data)
        except _CryptoInvalidSignature as e:
            raise InvalidSignature("signature verification failed") from e
    else:
        raise UnsupportedAlgorithm(f"algorithm {alg!r} is not accepted; expected one of {sorted(L.ACCEPTED_ALGS)}")


def _digest(value: Any, name: str) -> bytes | None:
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))  # cbor2 >= 6 decodes arrays as tuples
        or len(value) != 2
        or not _is_int(value[0])
        or value[0] != L.HASH_SHA256
        or not isinstance(value[1], bytes)
        or len(value[1]) != 32
    ):
        raise MalformedRecord(f"{name} must be [-16, 32-byte sha256], got {value!r:.80}")
    return value[1]


def _require(hdr: dict[Any, Any], label: int, typ: type | tuple[type, ...], name: str) -> Any:
    value = hdr.get(label)
    if value is None:
        raise MalformedRecord(f"protected header lacks {name} (label {label})")
    if not isinstance(value, typ) or isinstance(value, bool):
        raise MalformedRecord(f"protected header {name} (label {label}) has the wrong type: {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Sign1:
    """The four parts of a tagged COSE_Sign1 as received (generic COSE layer, no profile rules)."""

    protected: bytes
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes

    def protected_map(self, *, tags: bool = True) -> dict[Any, Any]:
        """The decoded protected header; an empty byte string is the empty map (RFC 9052 §3).

        ``tags=False`` (the profiles): a tag anywhere in the header is refused; cbor2 would silently strip a
        tag 55799, so the same header could be sent as two byte strings.
        """
        if not self.protected:
            return {}
        try:
            cbor_det.check_strict(self.protected, tags=tags)
        except ValueError as e:
            raise MalformedRecord(f"protected header is not strict CBOR: {e}") from e
        try:
            hdr = cbor2.loads(self.protected)
        except Exception as e:
            raise MalformedRecord(f"protected header is not CBOR: {e}") from e
        if not isinstance(hdr, dict):
            raise MalformedRecord("protected header must be a map")
        return hdr


_SIGN1_PARTS = ((2, "protected header", "a byte string"), (5, "unprotected header", "a map"),
                (2, "payload", "a byte string"), (2, "signature", "a byte string"))


def _check_layout(data: bytes) -> None:
    """Tag 18 must be the first byte and the only tag around or on the four parts (checked on the bytes).

    cbor2 strips tag 55799 (self-described CBOR) wherever it appears, so ``55799(18([...]))`` or a part
    wrapped in it would decode like the plain record: the same signed record as several byte strings,
    which defeats dedup by bytes and lets anyone on the path change a record without touching its signature.
    RFC 9052 §2 defines ``COSE_Sign1_Tagged = #6.18(COSE_Sign1)``; the profile accepts that form only.
    """
    if data[:1] != b"\xd2":
        what = "CBOR tag 55799 (self-described CBOR)" if data[:3] == b"\xd9\xd9\xf7" else (
            "another tag" if data[:1] and data[0] >> 5 == 6 else "no tag")
        raise MalformedRecord(f"expected CBOR tag 18 (COSE_Sign1) as the first byte, found {what}")
    if data[1:2] != b"\x84":
        raise MalformedRecord("COSE_Sign1 must be an array of 4 elements directly inside tag 18")
    pos = 2
    for major, name, want in _SIGN1_PARTS:
        if data[pos] >> 5 != major:
            raise MalformedRecord(f"COSE_Sign1 {name} must be {want} (no tag), found major type {data[pos] >> 5}")
        pos = cbor_det.item_end(data, pos)


def decode_sign1(data: bytes, *, max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> Sign1:
    """Split a tagged COSE_Sign1 (tag 18 required) into its parts; raises ``MalformedRecord``."""
    if len(data) > max_bytes:
        raise MalformedRecord(f"record is {len(data)} bytes, limit is {max_bytes}", reason="oversize")
    try:
        cbor_det.check_strict(data)
        _check_layout(data)
        outer = cbor2.loads(data)
    except MalformedRecord:
        raise
    except Exception as e:
        raise MalformedRecord(f"not CBOR: {e}", reason="not_cbor") from e
    if not isinstance(outer, cbor2.CBORTag) or outer.tag != L.COSE_SIGN1_TAG:
        raise MalformedRecord("expected a tagged COSE_Sign1 (CBOR tag 18)")
    msg = outer.value
    if not isinstance(msg, (list, tuple)) or len(msg) != 4:  # cbor2 >= 6 decodes arrays as tuples
        raise MalformedRecord("COSE_Sign1 must be an array of 4 elements")
    protected, unprotected, payload, signature = msg
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise MalformedRecord("COSE_Sign1 protected header, payload and signature must be byte strings")
    if not isinstance(unprotected, dict):
        raise MalformedRecord("COSE_Sign1 unprotected header must be a map")
    return Sign1(protected, unprotected, payload, signature)


def _check_crit(hdr: dict[Any, Any]) -> None:
    """RFC 9052 §3.1: refuse a ``crit`` we cannot honour; unknown labels not marked critical are ignored.

    ``crit`` must be a non-empty array of labels (int or text), each present in the protected header; every
    one must be a label this profile understands (``labels.RECORD_LABELS``). A counter signature (label 7,
    RFC 8152) must be understood by every recipient, so a record carrying one is refused too.
    """
    if L.COUNTER_SIGNATURE in hdr:
        raise MalformedRecord("the protected header carries a counter signature (label 7), which this profile "
                              "does not process", reason="bad_crit")
    if L.CRIT not in hdr:
        return
    crit = hdr[L.CRIT]
    if not isinstance(crit, (list, tuple)) or not crit:
        raise MalformedRecord(f"crit (label 2) must be a non-empty array of labels, got {crit!r:.80}",
                              reason="bad_crit")
    for label in crit:
        if not (isinstance(label, str) or _is_int(label)):
            raise MalformedRecord(f"crit names {label!r:.40}, which is not a label", reason="bad_crit")
        if label not in hdr:
            raise MalformedRecord(f"crit names label {label!r:.40}, absent from the protected header",
                                  reason="bad_crit")
        if label not in L.RECORD_LABELS:
            raise MalformedRecord(f"crit names label {label!r:.40}, which this profile does not understand "
                                  "(RFC 9052 §3.1: the record must be rejected)", reason="bad_crit")


def open_record(data: bytes, *, max_bytes: int | None = None, limits: Limits = DEFAULT_LIMITS) -> Record:
    """Parse a record without verifying it. Raises ``MalformedRecord`` on anything off-profile.

    ``limits`` bound the record (``max_record_bytes``, unless ``max_bytes`` is given), its CBOR nesting and
    its x5chain; the same ``DEFAULT_LIMITS`` bound what the agent commits.
    """
    msg = decode_sign1(data, max_bytes=limits.max_record_bytes if max_bytes is None else max_bytes)
    protected, payload, signature = msg.protected, msg.payload, msg.signature
    if msg.unprotected:
        raise MalformedRecord("unprotected header must be empty in this profile")
    if not protected:
        raise MalformedRecord("protected header must not be empty in this profile")
    hdr = msg.protected_map(tags=False)
    _check_crit(hdr)
    if isinstance(hdr.get(L.ALG), str):  # a registered COSE alg may be text; none of ours is
        raise UnsupportedAlgorithm(f"algorithm {hdr[L.ALG]!r:.40} is not accepted; "
                                   f"expected one of {sorted(L.ACCEPTED_ALGS)}")
    alg = _require(hdr, L.ALG, int, "alg")
    if alg not in L.ACCEPTED_ALGS:
        raise UnsupportedAlgorithm(f"algorithm {alg!r} is not accepted; expected one of {sorted(L.ACCEPTED_ALGS)}")
    ctype = _require(hdr, L.CONTENT_TYPE, str, "content type")
    kind = L.KIND_BY_CONTENT_TYPE.get(ctype)
    if kind is None:
        raise MalformedRecord(f"unknown content type {ctype!r:.80}")
    kid = _require(hdr, L.KID, bytes, "kid")
    claims = _require(hdr, L.CWT_CLAIMS, dict, "CWT claims")
    device_id = claims.get(L.CLAIM_SUB)
    iat = claims.get(L.CLAIM_IAT)
    if not isinstance(device_id, str) or not isinstance(iat, int) or isinstance(iat, bool):
        raise MalformedRecord("CWT claims must hold 2 (device id, text) and 6 (iat, integer)")
    epoch = _require(hdr, L.EPOCH, int, "epoch")
    seq = _require(hdr, L.SEQ, int, "seq")
    if not 0 <= seq < 2**64 or not 0 <= epoch < 2**64:
        raise MalformedRecord("seq and epoch must be unsigned 64-bit integers")
    capture = _require(hdr, L.CAPTURE, (list, tuple), "capture time")
    if (
        len(capture) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in capture)
        or capture[1] not in (L.CLOCK_UNSYNCED, L.CLOCK_NTP, L.CLOCK_GNSS)
    ):
        raise MalformedRecord("capture time must be [ms since epoch, clock state 0|1|2]")
    stream = _require(hdr, L.STREAM, str, "stream")
    chain_value = hdr.get(L.X5CHAIN)
    x5chain: tuple[bytes, ...] = ()
    if isinstance(chain_value, bytes):
        x5chain = (chain_value,)
    elif isinstance(chain_value, (list, tuple)) and chain_value and all(isinstance(c, bytes) for c in chain_value):
        x5chain = tuple(chain_value)
    elif chain_value is not None:
        raise MalformedRecord("x5chain must be a certificate byte string or an array of them")
    if len(x5chain) > limits.max_chain_certs:
        raise MalformedRecord(f"x5chain holds {len(x5chain)} certificates, at most {limits.max_chain_certs} "
                              "are accepted")
    return Record(
        raw=data,
        protected_bytes=protected,
        payload_bytes=payload,
        signature=signature,
        alg=alg,
        kid=kid,
        kind=kind,
        device_id=device_id,
        iat=iat,
        epoch=epoch,
        seq=seq,
        capture_ms=capture[0],
        clock_state=capture[1],
        stream=stream,
        model_sha256=_digest(hdr.get(L.MODEL_DIGEST), "model digest"),
        input_sha256=_digest(hdr.get(L.INPUT_DIGEST), "input digest"),
        x5chain=x5chain,
    )


def sha256(data: bytes) -> bytes:
    """SHA-256 digest, the hash every digest header of the profile uses."""
    return hashlib.sha256(data).digest()

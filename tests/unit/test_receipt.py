"""The receipt codec (envelope.receipt): round trips, strictness, and no exception but MalformedReceipt for any
bytes (random mutations of valid receipts)."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from envelope import (
    LogPosition,
    MalformedReceipt,
    Receipt,
    cbor_det,
    encode_receipt_payload,
    open_receipt,
    seal_receipt,
)
from envelope.receipt import MAX_REJECTED, decode_receipt_payload, receipt_payload_map
from provisioning import SoftwareSigner

SIGNER = SoftwareSigner(ed25519.Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
CHAIN = [b"\x30\x03\x02\x01\x01", b"\x30\x03\x02\x01\x02"]
ids = st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}", fullmatch=True)
u63 = st.integers(0, 2**63 - 1)
hashes = st.lists(st.binary(min_size=32, max_size=32), max_size=4).map(tuple)
logs = st.none() | st.builds(LogPosition, st.text(min_size=1, max_size=40), u63, hashes, u63, hashes)
rejected = st.dictionaries(st.integers(1, 2**63 - 1), st.text(min_size=1, max_size=20), max_size=5).map(
    lambda d: tuple(sorted(d.items())))
receipts = st.builds(Receipt, ids, ids, u63, u63, u63, rejected, st.booleans(), logs)
BASE = Receipt("agg-01", "pump-01", 3, 17, 1_767_225_600_000, ((4, "bad_signature"),), True)
VALID = seal_receipt(SIGNER, CHAIN, BASE)


@given(receipts)
def test_seal_open_round_trip(r: Receipt) -> None:
    data = seal_receipt(SIGNER, CHAIN[:1], r)
    parsed, msg = open_receipt(data)
    assert parsed == r
    assert msg.payload == encode_receipt_payload(r)
    assert cbor_det.dumps(cbor2.loads(msg.payload)) == msg.payload  # deterministic encoding


def _refused(data: bytes) -> str:
    with pytest.raises(MalformedReceipt) as info:
        open_receipt(data)
    return info.value.reason


def _payload(**changes: Any) -> bytes:
    doc = receipt_payload_map(BASE)
    doc.update(changes)
    return cbor_det.dumps({k: v for k, v in doc.items() if v is not _DROP})


_DROP = object()


@pytest.mark.parametrize("changes", [
    {"v": 2}, {"v": True}, {"agg": ""}, {"agg": "x" * 65}, {"dev": 7}, {"epoch": -1}, {"epoch": 2**63},
    {"settled": True}, {"settled": 1.0}, {"time_ms": None}, {"birth": 1}, {"rejected": [[0, "x"]]},
    {"rejected": [[2, "a"], [2, "b"]]}, {"rejected": [[3, "a"], [2, "b"]]}, {"rejected": [[2, ""]]},
    {"rejected": [[2, "a", 1]]}, {"rejected": {}}, {"rejected": [[1, "a"]] * (MAX_REJECTED + 1)},
    {"log": {}}, {"log": {"checkpoint": "c", "index": 1, "inclusion": [b"x"], "prev_size": 0, "consistency": []}},
    {"extra": 1}, {"birth": _DROP}, {"log": _DROP},
])
def test_strict_payload_refuses(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedReceipt):
        decode_receipt_payload(_payload(**changes))
    if all(v is not _DROP for v in changes.values()) and "extra" not in changes:
        with pytest.raises(MalformedReceipt):  # and the encoder refuses to make it
            fields = {k: v for k, v in changes.items()}
            r = Receipt(**{**BASE.__dict__, **{k: (tuple(map(tuple, v)) if k == "rejected" and isinstance(v, list)
                                                   else v) for k, v in fields.items()}})
            encode_receipt_payload(r)


@pytest.mark.parametrize("payload", [b"\xa0", b"\x80", _payload() + b"\x00", b"\xbf\xff", b"\x81" * 100 + b"\x00"])
def test_non_profile_payload_bytes_refused(payload: bytes) -> None:
    with pytest.raises(MalformedReceipt):
        decode_receipt_payload(payload)


def _sign1(protected: dict[int, Any] | bytes, unprotected: dict[Any, Any] | None = None,
           payload: bytes | None = None, tag: int = 18) -> bytes:
    p = protected if isinstance(protected, bytes) else cbor_det.dumps(protected)
    return cbor2.dumps(cbor2.CBORTag(tag, [p, unprotected or {}, payload or _payload(), b"\x00" * 64]))


GOOD_HDR = {1: -19, 3: "application/vnd.depin-edge.receipt+cbor", 4: SIGNER.kid, 33: CHAIN[0]}


@pytest.mark.parametrize("data,reason", [
    (_sign1(GOOD_HDR), None),
    (_sign1({**GOOD_HDR, 2: [99]}), "bad_header"),  # crit naming a label we do not understand
    (_sign1({**GOOD_HDR, -65537: 1}), "bad_header"),
    (_sign1({**GOOD_HDR, 1: -35}), "bad_alg"),
    (_sign1({**GOOD_HDR, 1: "ES256"}), "bad_alg"),
    (_sign1({**GOOD_HDR, 3: "application/vnd.depin-edge.status+cbor"}), "bad_content_type"),
    (_sign1({k: v for k, v in GOOD_HDR.items() if k != 33}), "no_x5chain"),
    (_sign1({**GOOD_HDR, 33: []}), "no_x5chain"),
    (_sign1({**GOOD_HDR, 4: b"short"}), "bad_header"),
    (_sign1(GOOD_HDR, {4: b"x"}), "bad_header"),
    (_sign1(b""), "bad_header"),
    (_sign1(GOOD_HDR, tag=17), "not_sign1"),
    (cbor2.dumps(cbor2.CBORTag(55799, cbor2.loads(_sign1(GOOD_HDR)))), "not_sign1"),
    (b"\xd2\xff", "not_cbor"),
    (b"\xff", "not_sign1"),
    (b"\x00" * 70_000, "oversize"),
])
def test_header_rules(data: bytes, reason: str | None) -> None:
    if reason is None:
        open_receipt(data)
    else:
        assert _refused(data) == reason


def test_seal_refuses_an_empty_chain() -> None:
    with pytest.raises(ValueError):
        seal_receipt(SIGNER, [], BASE)


@settings(max_examples=3000, derandomize=True)
@given(st.data())
def test_random_mutations_raise_only_malformed_receipt(data: st.DataObject) -> None:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        i = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and raw:
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            del raw[i:i + data.draw(st.integers(1, 8))]
        elif op == "truncate":
            del raw[i:]
    try:
        open_receipt(bytes(raw))
    except MalformedReceipt as e:
        assert e.reason
    # anything else propagates and fails the test


@settings(max_examples=500, derandomize=True)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_malformed_receipt(raw: bytes) -> None:
    try:
        open_receipt(raw)
    except MalformedReceipt:
        pass


def test_open_accepts_bytes_like() -> None:
    assert open_receipt(memoryview(VALID))[0] == BASE
    assert open_receipt(bytearray(VALID))[0] == BASE

"""The payload profile (docs/envelope.md §5) is enforced for every content type (issue 12, item 12).

* A table over every class of broken payload x every record kind, through the real ``Verifier``: each is
  rejected ``bad_payload`` (permanent) under the topic's device, where round 1 stored all but gap records.
* A differential test over >= 10^5 generated payloads: ``Record.payload()`` accepts exactly what an
  independent reference decoder of the profile (written here, recursive descent) accepts, and both read the
  same value. Inputs: byte-level mutants of the agent's real payload shapes, random CBOR values (tags, simple
  values, non-text keys, bignums) and hand-built adversarial encodings (deep nesting, repeated keys,
  indefinite lengths, trailing bytes, non-shortest heads, invalid UTF-8).
"""

from __future__ import annotations

import dataclasses
import math
import random
import struct
import time
from collections import Counter
from typing import Any

import cbor2
import pytest

from aggregator import Limits, Rejected, TrustStore, Verifier
from aggregator.settle import is_permanent
from aggregator.trust import load_certificates, load_crl
from envelope import DEFAULT_MAX_RECORD_BYTES, EnvelopeError, MalformedRecord, cbor_det, open_record
from envelope.limits import DEFAULT_LIMITS
from tests.support.mutants import mutate_bytes, random_cbor, random_key
from tests.unit.test_agg_support import SimDevice, fleet_with

# ---- an independent reference decoder of the payload profile ---------------------------------------------


class Refused(Exception):
    pass


def ref_decode(data: bytes, max_depth: int = DEFAULT_LIMITS.max_payload_depth) -> Any:
    """The payload ``data`` encodes, or ``Refused``: written from docs/envelope.md §3 and §5, not from cbor_det."""
    if not data or data[0] >> 5 != 5:
        raise Refused("not a map")
    value, end = _ref_item(data, 0, 0, max_depth)
    if end != len(data):
        raise Refused("trailing bytes")
    return value


def _ref_head(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """(major, additional info, argument, position after the head)."""
    if pos >= len(data):
        raise Refused("truncated")
    major, ai = data[pos] >> 5, data[pos] & 31
    if ai == 31:
        raise Refused("indefinite length")
    if ai >= 28:
        raise Refused("reserved")
    if ai < 24:
        return major, ai, ai, pos + 1
    width = {24: 1, 25: 2, 26: 4, 27: 8}[ai]
    raw = data[pos + 1:pos + 1 + width]
    if len(raw) != width:
        raise Refused("truncated")
    arg = int.from_bytes(raw, "big")
    if major != 7 and arg < {24: 24, 25: 256, 26: 65536, 27: 2**32}[ai]:
        raise Refused("not the shortest head")
    return major, ai, arg, pos + 1 + width


def _ref_item(data: bytes, pos: int, depth: int, max_depth: int) -> tuple[Any, int]:
    if depth > max_depth:
        raise Refused("too deep")
    major, ai, arg, pos = _ref_head(data, pos)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        raw = data[pos:pos + arg]
        if len(raw) != arg:
            raise Refused("truncated string")
        if major == 2:
            return bytes(raw), pos + arg
        try:
            return raw.decode("utf-8"), pos + arg
        except UnicodeDecodeError as e:
            raise Refused("bad UTF-8") from e
    if major == 4:
        items = []
        for _ in range(arg):
            if pos >= len(data):
                raise Refused("truncated array")
            item, pos = _ref_item(data, pos, depth + 1, max_depth)
            items.append(item)
        return items, pos
    if major == 5:
        out: dict[str, Any] = {}
        for _ in range(arg):
            if pos >= len(data):
                raise Refused("truncated map")
            key, pos = _ref_item(data, pos, depth + 1, max_depth)
            if not isinstance(key, str):
                raise Refused("non-text key")
            if key in out:
                raise Refused("repeated key")
            out[key], pos = _ref_item(data, pos, depth + 1, max_depth)
        return out, pos
    if major == 6:
        raise Refused("tag")
    if ai in (20, 21):
        return ai == 21, pos
    if ai == 22:
        return None, pos
    if ai == 25:
        return struct.unpack(">e", data[pos - 2:pos])[0], pos
    if ai == 26:
        return struct.unpack(">f", data[pos - 4:pos])[0], pos
    if ai == 27:
        return struct.unpack(">d", data[pos - 8:pos])[0], pos
    raise Refused("simple value")


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN and ints are not floats."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if type(a) is not type(b) and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# ---- generated payloads ----------------------------------------------------------------------------------

SHAPES: list[dict[str, Any]] = [
    {"label": "normal", "score": 0.9123, "scores": [0.9123, 0.05, 0.03, 0.0077],
     "labels": ["normal", "imbalance", "misalignment", "bearing"], "latency_us": 40, "t0_ms": 1767225600000, "n": 128},
    {"uptime_s": 3600, "host": {"cpu_percent": 12.5, "load1": 0.3, "rss_bytes": 61_000_000,
                                "temperatures_c": {"cpu_thermal": 48.2}, "disk_free_bytes": 2**33},
     "outbox": {"depth": 3, "bytes": 900, "last_seq": 2**40}, "mqtt": {"connected": True, "reconnects": 0},
     "pipelines": {"vib": {"windows": 10, "latency_us": {"p50": 40, "p99": 90}}}},
    {"status": "online", "agent": "0.1.0", "key_tier": "file", "alg": -9, "epoch": 7, "delivery": "aggregator",
     "models": [{"stream": "vib", "model": "m", "sha256": "ab" * 32, "labels": ["a", "b"]}], "low_water": 1},
    {"first": 101, "last": 164, "count": 64, "bytes": 19200, "reason": "outbox_full"},
    {"blob": b"\x00\x01", "none": None, "neg": -(2**64), "big": 2**64 - 1, "nan": float("nan"), "f": -0.0},
]
SHAPE_BYTES = [cbor_det.dumps(p) for p in SHAPES]


def _adversarial(rng: random.Random) -> bytes:
    """Hand-built encodings of each class the profile forbids, with random parameters."""
    base = rng.choice(SHAPE_BYTES)
    n = base[0] & 31  # every shape has < 24 keys: a one-byte map head
    body = base[1:]
    k = rng.randrange(12)
    if k == 0:  # deep nesting, around the limit
        d = rng.choice((DEFAULT_LIMITS.max_payload_depth - 1, DEFAULT_LIMITS.max_payload_depth,
                        DEFAULT_LIMITS.max_payload_depth + 1, 64, 10_000))
        return b"\xa1\x61x" + b"\x81" * d + b"\x00"
    if k == 1:  # a repeated key
        return bytes([0xA0 | (n + 1)]) + body + body[: _item_len(body)] + b"\x01"
    if k == 2:  # an array of the same items instead of a map
        return bytes([0x80 | (2 * n)]) + body
    if k == 3:  # trailing bytes
        return base + bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
    if k == 4:  # indefinite-length map, array or string
        return rng.choice((b"\xbf" + body + b"\xff", b"\xa1\x61x\x9f\x01\x02\xff", b"\xa1\x61x\x7f\x61a\xff"))
    if k == 5:  # a non-shortest integer or length
        return rng.choice((b"\xa1\x61x\x18\x05", b"\xa1\x78\x01x\x01", b"\xa1\x61x\x19\x00\x10",
                           bytes([0xB8, n]) + body))
    if k == 6:  # tags: shared references (cyclic objects in cbor2), self-describe, dates, bignums, sets
        return rng.choice((b"\xa1\x61x\xd8\x1c\x81\xd8\x1d\x00", b"\xd9\xd9\xf7" + base, b"\xa1\x61x\xc1\x00",
                           b"\xa1\x61x\xc2\x41\x01", b"\xa1\x61x\xd9\x01\x02\x80", b"\xa1\x61x\xd8\x18\x41\xa0"))
    if k == 7:  # undefined and other simple values
        return rng.choice((b"\xa1\x61x\xf7", b"\xa1\x61x\xe0", b"\xa1\x61x\xf8\x20", b"\xa1\x61x\xf8\xff"))
    if k == 8:  # non-text keys
        return rng.choice((b"\xa1\x01\x02", b"\xa1\x41x\x02", b"\xa1\x80\x01", b"\xa1\xf6\x01"))
    if k == 9:  # invalid UTF-8 in a key or value
        return rng.choice((b"\xa1\x61\xff\x01", b"\xa1\x61x\x62\xc3\x28", b"\xa1\x61x\x63\xed\xa0\x80"))
    if k == 10:  # not a map at all
        return rng.choice((b"", b"\x01", b"\x80", b"\x40", b"\x60", b"\xf6", b"\xc1\x00"))
    return b"\xa1\x61x" + b"\xa1\x61y" * rng.randint(1, 30) + b"\x00"  # nested maps


def _item_len(data: bytes) -> int:
    """Length of the first (text key) item of ``data``."""
    return 1 + (data[0] & 31)


def _random_map(rng: random.Random) -> bytes | None:
    try:
        doc = {rng.choice(("a", "b", "c", "label", "")) if rng.random() < 0.8 else random_key(rng):
               random_cbor(rng) for _ in range(rng.randrange(5))}
        return cbor2.dumps(doc) if rng.random() < 0.5 else cbor_det.dumps(doc)
    except Exception:
        return None


COUNTS = {"mutant": 50_000, "random": 30_000, "adversarial": 20_000}


def _generate(strategy: str, rng: random.Random) -> bytes | None:
    if strategy == "mutant":
        return mutate_bytes(rng.choice(SHAPE_BYTES), rng, max_ops=3)
    if strategy == "random":
        return _random_map(rng)
    return _adversarial(rng)


@pytest.fixture(scope="module")
def opened() -> Any:
    from envelope import RecordHeader, seal
    from provisioning import SoftwareSigner

    header = RecordHeader(kind="result", device_id="dev-a", stream="vib", epoch=1, seq=1, iat=0, capture_ms=0)
    return open_record(seal(SoftwareSigner.generate(), header, {"a": 1}))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(COUNTS))
def test_payload_check_agrees_with_a_reference_decoder(opened: Any, strategy: str) -> None:
    outcomes: Counter[str] = Counter()
    for i in range(COUNTS[strategy]):
        rng = random.Random(f"{strategy}-{i}")
        data = _generate(strategy, rng)
        if data is None:
            continue
        rec = dataclasses.replace(opened, payload_bytes=data)
        try:
            expected = ref_decode(data)
        except Refused:
            expected = Refused
        try:
            got = rec.payload()
        except MalformedRecord as e:
            assert e.reason == "bad_payload"
            assert expected is Refused, f"{strategy} {i}: {data.hex()[:200]} refused ({e}), the reference reads it"
            outcomes["refused"] += 1
            continue
        except Exception as e:
            pytest.fail(f"{strategy} {i}: {data.hex()[:200]} escaped as {type(e).__name__}: {e}")
        assert expected is not Refused, f"{strategy} {i}: {data.hex()[:200]} accepted, the reference refuses it"
        assert same(got, expected), f"{strategy} {i}: {data.hex()[:200]} read as {got!r:.200} vs {expected!r:.200}"
        outcomes["accepted"] += 1
    assert outcomes["refused"] > 0.2 * COUNTS[strategy] and (strategy == "adversarial" or outcomes["accepted"] > 100)
    print(strategy, dict(outcomes))


# ---- through the verifier, every kind --------------------------------------------------------------------

BROKEN: dict[str, bytes] = {
    "duplicate key": b"\xa2\x61a\x01\x61a\x02",
    "10,000-deep nesting": b"\xa1\x61x" + b"\x81" * 10_000 + b"\x00",
    "17-deep nesting": b"\xa1\x61x" + b"\x81" * 16 + b"\x00",
    "array instead of map": b"\x82\x61a\x01",
    "trailing bytes": b"\xa1\x61a\x01\x00",
    "indefinite map": b"\xbf\x61a\x01\xff",
    "indefinite array inside": b"\xa1\x61a\x9f\x01\xff",
    "indefinite text": b"\xa1\x61a\x7f\x61b\xff",
    "non-shortest integer": b"\xa1\x61a\x18\x01",
    "tag (shared reference)": b"\xa1\x61a\xd8\x1c\x80",
    "tag 55799 around the map": b"\xd9\xd9\xf7\xa1\x61a\x01",
    "bignum": b"\xa1\x61a\xc2\x49\x01\x00\x00\x00\x00\x00\x00\x00\x00",
    "undefined": b"\xa1\x61a\xf7",
    "integer key": b"\xa1\x01\x01",
    "invalid UTF-8": b"\xa1\x61a\x61\xff",
    "not CBOR": b"\xff\xff",
    "empty": b"",
}


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimDevice, Verifier]:
    fleet, (dev,) = fleet_with(tmp_path_factory.mktemp("payload"), "dev-a")
    trust = TrustStore(load_certificates(fleet.ca_cert), [load_crl(fleet.crl)])
    v = Verifier(trust, "edge/v1", Limits())
    v.verify(*dev.birth(), int(time.time() * 1000))
    return dev, v


@pytest.mark.parametrize("kind", ["result", "reading", "telemetry", "status", "gap"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_every_kind_refuses_a_payload_outside_the_profile(device: tuple[SimDevice, Verifier], kind: str,
                                                          case: str) -> None:
    dev, v = device
    topic, data = dev.record(kind, payload=BROKEN[case])
    assert len(data) <= DEFAULT_MAX_RECORD_BYTES
    with pytest.raises(Rejected) as e:
        v.verify(topic, data, int(time.time() * 1000))
    assert (e.value.reason, e.value.device_id, e.value.seq) == ("bad_payload", "dev-a", dev.seq), str(e.value)
    assert is_permanent("bad_payload")


@pytest.mark.parametrize("kind", ["result", "reading", "telemetry", "status"])
def test_every_kind_accepts_profile_payloads(device: tuple[SimDevice, Verifier], kind: str) -> None:
    dev, v = device
    for shape in SHAPES:
        topic, data = dev.record(kind, payload=shape)
        vr = v.verify(topic, data, int(time.time() * 1000))
        assert vr.payload is not None and same(vr.payload, ref_decode(cbor_det.dumps(shape)))
    # a payload exactly at the depth limit is accepted (the limit is inclusive)
    topic, data = dev.record(kind, payload=b"\xa1\x61x" + b"\x81" * (DEFAULT_LIMITS.max_payload_depth - 1) + b"\x00")
    v.verify(topic, data, int(time.time() * 1000))


def test_generated_payloads_through_the_verifier(device: tuple[SimDevice, Verifier]) -> None:
    """A sample of the generated inputs, signed and verified: the verifier's verdict is the reference's."""
    dev, v = device
    kinds = ["result", "reading", "telemetry", "status"]
    for i in range(1500):
        rng = random.Random(f"verifier-{i}")
        data = _generate(rng.choice(list(COUNTS)), rng)
        if data is None:
            continue
        topic, record = dev.record(rng.choice(kinds), payload=data)
        try:
            ref_decode(data)
            ok = True
        except Refused:
            ok = False
        try:
            v.verify(topic, record, int(time.time() * 1000))
            assert ok, data.hex()[:200]
        except Rejected as e:
            assert not ok and e.reason == "bad_payload", (e, data.hex()[:200])


def test_envelope_error_reason_of_a_bad_payload() -> None:
    """``Record.payload`` raises only ``MalformedRecord(bad_payload)``: an ``EnvelopeError`` callers handle."""
    assert issubclass(MalformedRecord, EnvelopeError)

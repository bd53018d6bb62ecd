"""No bytes, however broken, make the aggregator's verifier raise anything but ``Rejected`` (issue 12, item 11).

Mutants of a genuine birth record whose x5chain holds leaf + intermediate (the chain is parsed before the
signature is checked, so that is where broken certificates used to escape as InvalidVersion or TypeError):

* ``der``: one TLV of one certificate changed with every enclosing length fixed (reaches the X.509 layer);
* ``cert``: byte-level edits of one certificate;
* ``chain``: the x5chain itself reshaped (dropped, repeated, reordered, garbage entries, empty strings);
* ``header``: one protected header value replaced by random CBOR (every type, tags, simple values);
* ``bytes``: byte-level edits of the whole record, not re-signed: none of those may verify.

Mutants of the first four are re-signed with the device's key, so each reaches every check after the one it
breaks. Each mutant also goes through ``embedded_key`` (the CLI's ``verify`` without a CA). Seeded: a failure
names the strategy and index, and ``_mutant(strategy, i)`` rebuilds that exact input.
"""

from __future__ import annotations

import dataclasses
import random
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import cbor2
import pytest

from aggregator import Limits, Rejected, TrustStore, Verifier
from aggregator.settle import REJECT_REASONS
from aggregator.trust import load_certificates, load_crl
from aggregator.verifier import embedded_key
from envelope import EnvelopeError, labels, open_record, sig_structure
from tests.support.mutants import mutate_bytes, mutate_der, random_cbor
from tests.unit.test_agg_support import SimDevice, fleet_with

# >= 10^5 generated inputs in all (issue 12, "How it is checked").
COUNTS = {"der": 30_000, "cert": 15_000, "chain": 5_000, "header": 15_000, "bytes": 35_000}


class World:
    """One fleet (root -> intermediate -> device), the genuine birth record and its decoded parts."""

    def __init__(self, tmp: Path) -> None:
        fleet, (dev,) = fleet_with(tmp, "dev-a", intermediate=True)
        self.fleet = fleet
        self.dev: SimDevice = dev
        self.topic, self.birth = dev.birth()
        tag = cbor2.loads(self.birth)
        self.header: dict[Any, Any] = cbor2.loads(tag.value[0])
        self.payload: bytes = tag.value[2]
        assert len(dev.chain) == 2
        self.now_ms = int(time.time() * 1000)

    def verifier(self) -> Verifier:
        trust = TrustStore(load_certificates(self.fleet.ca_cert), [load_crl(self.fleet.crl)])
        return Verifier(trust, "edge/v1", Limits())

    def resign(self, header: dict[Any, Any]) -> bytes | None:
        """A record with this protected header, correctly signed by the device (None: cbor2 cannot encode it)."""
        try:
            prot = cbor2.dumps(header)
        except Exception:
            return None
        sig = self.dev.signer.sign(sig_structure(prot, self.payload))
        return cbor2.dumps(cbor2.CBORTag(18, [prot, {}, self.payload, sig]))

    def with_chain(self, chain: Any) -> bytes | None:
        header = dict(self.header)
        header[labels.X5CHAIN] = chain
        return self.resign(header)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("escapes"))


def _mutant(w: World, strategy: str, rng: random.Random) -> bytes | None:
    chain = list(w.dev.chain)
    if strategy in ("der", "cert"):
        k = rng.randrange(len(chain))
        chain[k] = mutate_der(chain[k], rng) if strategy == "der" else mutate_bytes(chain[k], rng, max_ops=6)
        return w.with_chain(chain if rng.random() < 0.8 or k else chain[0])
    if strategy == "chain":
        leaf, inter = chain
        shapes: list[Any] = [
            [], [leaf], [inter], inter, [inter, leaf], [leaf, leaf], [leaf, inter, inter], [leaf, b""], b"",
            [leaf, inter, mutate_der(inter, rng)], [leaf] + [inter] * rng.randint(2, 40), [leaf, 5], [leaf, [inter]],
            [mutate_bytes(leaf, rng), inter], {1: leaf}, leaf[: rng.randrange(len(leaf))], [leaf, inter[:-1]],
            [leaf, random_cbor(rng)], cbor2.CBORTag(24, leaf), [cbor2.CBORTag(55799, leaf), inter],
        ]
        return w.with_chain(rng.choice(shapes))
    if strategy == "header":
        header = dict(w.header)
        for _ in range(rng.randint(1, 2)):
            label = rng.choice([*header, 2, 5, 6, -65541, -65542, -65543, "alg"])
            if rng.random() < 0.1:
                header.pop(label, None)
            else:
                header[label] = random_cbor(rng)
        return w.resign(header)
    return mutate_bytes(w.birth, rng, max_ops=3)


def _check_one(w: World, v: Verifier, strategy: str, data: bytes, outcomes: Counter[str]) -> None:
    try:
        v.verify(w.topic, data, w.now_ms)
    except Rejected as e:
        assert e.reason in REJECT_REASONS, f"unclassified reason {e.reason!r}: {e}"
        assert e.device_id == "dev-a", f"reject without the topic's device: {e!r}"
        outcomes[e.reason] += 1
    else:
        # Unsigned edits never verify; re-signed ones may (a chain with a repeated intermediate is still valid).
        assert strategy != "bytes" or data == w.birth, "an edited, unsigned record verified"
        outcomes["valid"] += 1
    try:
        record = open_record(data)
    except EnvelopeError:
        return
    try:
        embedded_key(record)
    except Rejected as e:
        assert e.reason in REJECT_REASONS


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(COUNTS))
def test_no_mutant_of_a_birth_record_escapes_the_verifier(world: World, strategy: str) -> None:
    v = world.verifier()
    v.verify(world.topic, world.birth, world.now_ms)  # the genuine record verifies
    outcomes: Counter[str] = Counter()
    generated = 0
    with warnings.catch_warnings():
        # cryptography warns (and will later refuse) about e.g. a zero serial: either way a refusal for us
        warnings.simplefilter("ignore")
        for i in range(COUNTS[strategy]):
            rng = random.Random(f"{strategy}-{i}")
            data = _mutant(world, strategy, rng)
            if data is None:
                continue
            generated += 1
            try:
                _check_one(world, v, strategy, data, outcomes)
            except (AssertionError, pytest.fail.Exception):
                raise
            except Exception as e:
                pytest.fail(f"{strategy} mutant {i} escaped the verifier: {type(e).__name__}: {e}")
    assert generated >= 0.95 * COUNTS[strategy]
    # the mutants must reach past the first parser, or the test proves little
    if strategy in ("der", "cert", "chain"):
        assert outcomes["bad_chain"] > 0.3 * generated, outcomes
    print(strategy, generated, dict(outcomes.most_common()))


def test_embedded_key_refuses_broken_certificates_with_a_reason(world: World) -> None:
    """The CLI's ``verify`` without a CA parses the record's own certificate: broken DER is ``bad_chain``."""
    rec = open_record(world.birth)
    assert embedded_key(rec).device_id == "dev-a"
    for bad, reason in ((b"\x30\x03\x02\x01\x05", "bad_chain"), (world.dev.chain[1], "key_mismatch")):
        with pytest.raises(Rejected) as e:
            embedded_key(dataclasses.replace(rec, x5chain=(bad,)))
        assert e.value.reason == reason
    with pytest.raises(Rejected) as e:
        embedded_key(dataclasses.replace(rec, x5chain=()))
    assert e.value.reason == "unknown_kid"

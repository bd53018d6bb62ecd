"""The agent's receipt check: only a receipt signed by a fleet aggregator for this device becomes a delivery
event; everything else is refused with a reason (never another exception), and the kept receipt survives a
restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.receipts import ReceiptChecker, ReceiptRefused, receipt_doc
from provisioning.chain import RECEIPT_REASONS
from tests.support.pki import Fleet, make_fleet
from tests.support.receipts import make_receipt

DEV = "dev-a"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    f = make_fleet(tmp_path_factory.mktemp("fleet"), devices=[DEV, "dev-b"], aggregators=["agg-1", "agg-2"])
    f.add_device("thief")
    return f


def checker(fleet: Fleet, tmp_path: Path, crl: bool = True) -> ReceiptChecker:
    return ReceiptChecker(DEV, str(fleet.ca_cert), str(fleet.crl) if crl else None, str(tmp_path / "receipt.cose"))


def refused(c: ReceiptChecker, data: bytes) -> str:
    with pytest.raises(ReceiptRefused) as ei:
        c.check(data, 1.0)
    return ei.value.reason


def test_a_genuine_receipt_is_a_delivery_event(fleet: Fleet, tmp_path: Path) -> None:
    data = make_receipt(fleet.aggregators["agg-1"], DEV, 3, 42, time_ms=1_700_000_000_000, birth=True,
                        rejected=((41, "bad_signature"),))
    r = checker(fleet, tmp_path).check(data, 5.0)
    assert (r.now, r.epoch, r.settled, r.time_ms, r.birth, r.signer) == (5.0, 3, 42, 1_700_000_000_000, True, "agg-1")
    assert r.rejected == ((41, "bad_signature"),) and r.data == data
    assert receipt_doc(r) == {"signer": "agg-1", "epoch": 3, "settled": 42, "time": "2023-11-14T22:13:20+00:00"}


def test_forged_receipts_are_refused(fleet: Fleet, tmp_path: Path) -> None:
    c = checker(fleet, tmp_path)
    # a device certificate (a client that may write the ack topic, but is no aggregator)
    assert refused(c, make_receipt(fleet.devices["thief"], DEV, 1, 10**6)) in ("untrusted", "bad_id")
    assert refused(c, make_receipt(fleet.aggregators["agg-1"], "dev-b", 1, 10)) == "wrong_device"
    assert refused(c, make_receipt(fleet.aggregators["agg-1"], DEV, 1, 10, agg="agg-2")) == "wrong_aggregator"
    other = make_fleet(tmp_path / "other", aggregators=["agg-1"])
    assert refused(c, make_receipt(other.aggregators["agg-1"], DEV, 1, 10)) == "untrusted"
    assert refused(c, b"\xa1cseq\x18\x2a") in RECEIPT_REASONS  # the round-1 unsigned ack
    assert refused(c, b"x" * 70_000) == "oversize"


def test_a_revoked_aggregator_is_refused_once_the_crl_changes(tmp_path: Path) -> None:
    f = make_fleet(tmp_path / "f", devices=[DEV], aggregators=["agg-1"])
    c = ReceiptChecker(DEV, str(f.ca_cert), str(f.crl), str(tmp_path / "receipt.cose"))
    data = make_receipt(f.aggregators["agg-1"], DEV, 1, 5)
    assert c.check(data, 1.0).settled == 5
    f.revoke("agg-1")
    import os

    os.utime(f.crl, (os.stat(f.crl).st_atime, os.stat(f.crl).st_mtime + 5))  # a new mtime even within 1 s
    assert refused(c, data) == "revoked"


def test_without_a_trust_anchor_nothing_verifies(fleet: Fleet, tmp_path: Path) -> None:
    c = ReceiptChecker(DEV, None, None, str(tmp_path / "r.cose"))
    assert not c.enabled
    assert refused(c, make_receipt(fleet.aggregators["agg-1"], DEV, 1, 5)) == "no_trust_anchor"


def test_the_kept_receipt_is_written_atomically_and_reverified(fleet: Fleet, tmp_path: Path) -> None:
    c = checker(fleet, tmp_path)
    assert c.load_kept(0.0) is None
    r = c.check(make_receipt(fleet.aggregators["agg-1"], DEV, 2, 9), 1.0)
    c.keep(r)
    again = checker(fleet, tmp_path).load_kept(7.0)
    assert again is not None and (again.epoch, again.settled, again.data) == (2, 9, r.data)
    (tmp_path / "receipt.cose").write_bytes(b"garbage")
    assert checker(fleet, tmp_path).load_kept(7.0) is None


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.data())
def test_mutated_receipts_never_raise_anything_but_refused(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory,
                                                           data: st.DataObject) -> None:
    if not _GOOD:
        _GOOD.append((make_receipt(fleet.aggregators["agg-1"], DEV, 1, 5),
                      checker(fleet, tmp_path_factory.mktemp("m"))))
    good, c = _GOOD[0]
    raw = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        r = c.check(bytes(raw[:cut] if data.draw(st.booleans()) else raw), 1.0)
    except ReceiptRefused as e:
        assert e.reason in RECEIPT_REASONS or e.reason in ("oversize", "internal_error")
        assert e.reason != "internal_error"
    else:
        assert r.signer == "agg-1" and r.epoch == 1  # a mutation that kept it valid (e.g. in a signature pad)


_GOOD: list[tuple[bytes, ReceiptChecker]] = []

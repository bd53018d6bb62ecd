"""provisioning.chain: paths through intermediates to the root alone, CRLs of every CA on the path, roles from
the SPIFFE SAN, and verify_receipt's one typed refusal (every reason listed in code and in docs/envelope.md)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from envelope import Receipt, seal_receipt
from provisioning import InvalidInput, load_certificates, load_crl
from provisioning.ca import FleetCa
from provisioning.chain import RECEIPT_REASONS, InvalidReceipt, verify_chain, verify_receipt
from tests.support.pki import Fleet, make_fleet

REPO = Path(__file__).resolve().parents[2]


def _now() -> datetime:
    """The time of each check, taken when it runs: a time taken at import can precede certificates made later
    in the session (backdated only 5 minutes) when earlier tests run long."""
    return datetime.now(timezone.utc)


def _chain(path: Path) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in load_certificates(path.read_bytes())]


def _root(fleet: Fleet) -> list[x509.Certificate]:
    return load_certificates(fleet.ca_cert.read_bytes())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return make_fleet(tmp_path_factory.mktemp("chain"), ["dev-a", "dev-b"], intermediate=True,
                      aggregators=["agg-1", "agg-2"])


def test_root_alone_is_enough_with_the_intermediate_in_the_chain(fleet: Fleet) -> None:
    crl = load_crl(fleet.crl)  # signed by the intermediate
    assert crl.issuer != _root(fleet)[0].subject
    assert verify_chain(_chain(fleet.devices["dev-a"].cert), _root(fleet), [crl], _now(), "device") == \
        (fleet.name, "device", "dev-a")
    leaf_only = _chain(fleet.devices["dev-a"].cert)[:1]
    with pytest.raises(InvalidInput) as e:
        verify_chain(leaf_only, _root(fleet), [crl], _now(), "device")
    assert e.value.reason == "untrusted"
    bundle = load_certificates(fleet.ca_bundle.read_bytes())
    assert verify_chain(leaf_only, _root(fleet), [crl], _now(), "device", bundle=bundle)[2] == "dev-a"


def test_role_comes_from_the_san(fleet: Fleet) -> None:
    with pytest.raises(InvalidInput) as e:
        verify_chain(_chain(fleet.aggregators["agg-1"].cert), _root(fleet), [], _now(), "device")
    assert e.value.reason == "bad_id"
    assert verify_chain(_chain(fleet.aggregators["agg-1"].cert), _root(fleet), [], _now(), "aggregator")[1:] == \
        ("aggregator", "agg-1")


def test_garbage_certificates_are_bad_cert(fleet: Fleet) -> None:
    good = _chain(fleet.devices["dev-a"].cert)
    for chain in ([b"\x30\x00"], [good[0], b"junk"], [good[0][:-5]]):
        with pytest.raises(InvalidInput) as e:
            verify_chain(chain, _root(fleet), [], _now(), "device")
        assert e.value.reason == "bad_cert"


def _receipt(fleet: Fleet, agg: str = "agg-1", **kw: object) -> bytes:
    files = fleet.aggregators[agg]
    fields: dict[str, object] = {"agg": agg, "dev": "dev-a", "epoch": 1, "settled": 5, "time_ms": 1}
    fields.update(kw)
    return seal_receipt(files.signer(), _chain(files.cert), Receipt(**fields))  # type: ignore[arg-type]


def _reason(data: bytes, fleet: Fleet, device: str = "dev-a", crls: list[x509.CertificateRevocationList] | None = None,
            now: datetime | None = None) -> str:
    with pytest.raises(InvalidReceipt) as e:
        verify_receipt(data, _root(fleet), crls if crls is not None else [load_crl(fleet.crl)], now or _now(), device)
    assert e.value.reason in RECEIPT_REASONS
    return e.value.reason


def test_verify_receipt_accepts_and_refuses(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path, ["dev-a"], intermediate=True, aggregators=["agg-1", "agg-2"])
    crl = load_crl(fleet.crl)
    assert verify_receipt(_receipt(fleet), _root(fleet), [crl], _now(), "dev-a").settled == 5
    assert _reason(_receipt(fleet), fleet, device="dev-b") == "wrong_device"
    assert _reason(seal_receipt(fleet.aggregators["agg-1"].signer(), _chain(fleet.aggregators["agg-1"].cert),
                                Receipt("agg-2", "dev-a", 1, 5, 1)), fleet) == "wrong_aggregator"
    # signed by agg-2's key but carrying agg-1's chain
    forged = seal_receipt(fleet.aggregators["agg-2"].signer(), _chain(fleet.aggregators["agg-1"].cert),
                          Receipt("agg-1", "dev-a", 1, 5, 1))
    assert _reason(forged, fleet) == "key_mismatch"
    # a device identity (may even write the ack topic under a bad ACL) cannot sign a receipt
    dev = fleet.devices["dev-a"]
    assert _reason(seal_receipt(dev.signer(), _chain(dev.cert), Receipt("dev-a", "dev-a", 1, 5, 1)), fleet) == "bad_id"
    other = make_fleet(tmp_path / "other", aggregators=["agg-1"])
    stranger = seal_receipt(other.aggregators["agg-1"].signer(), _chain(other.aggregators["agg-1"].cert),
                            Receipt("agg-1", "dev-a", 1, 5, 1))
    assert _reason(stranger, fleet) == "untrusted"
    data = bytearray(_receipt(fleet))
    data[-1] ^= 1
    assert _reason(bytes(data), fleet) == "bad_signature"
    assert _reason(b"\xd2\x84", fleet) in ("not_cbor", "not_sign1")
    assert _reason(_receipt(fleet), fleet, now=_now() + timedelta(days=40)) in ("stale_crl", "expired")
    fleet.revoke("agg-1")
    assert _reason(_receipt(fleet), fleet, crls=[load_crl(fleet.crl)]) == "revoked"
    assert verify_receipt(_receipt(fleet, agg="agg-2"), _root(fleet), [load_crl(fleet.crl)], _now(), "dev-a")


def test_revoked_intermediate_refuses_everything_below_it(tmp_path: Path) -> None:
    """A root CRL naming the intermediate: checked because every CA on the path may have a CRL."""
    fleet = make_fleet(tmp_path, ["dev-a"], intermediate=True, aggregators=["agg-1"])
    with FleetCa.open(fleet.ca_dir) as ca:
        root_key, root_cert, inter = ca.root.key, ca.root.cert, ca.issuing.cert
    builder = (x509.CertificateRevocationListBuilder().issuer_name(root_cert.subject)
               .last_update(_now() - timedelta(minutes=1)).next_update(_now() + timedelta(days=1))
               .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(inter.serial_number)
                                        .revocation_date(_now() - timedelta(minutes=1)).build()))
    root_crl = builder.sign(root_key, hashes.SHA256())
    crls = [load_crl(fleet.crl), root_crl]
    with pytest.raises(InvalidInput) as e:
        verify_chain(_chain(fleet.devices["dev-a"].cert), _root(fleet), crls, _now(), "device")
    assert e.value.reason == "revoked"
    assert _reason(_receipt(fleet), fleet, crls=crls) == "revoked"


def _emitted_reasons() -> set[str]:
    found: set[str] = set()
    receipt_src = (REPO / "envelope" / "receipt.py").read_text()
    chain_src = (REPO / "provisioning" / "chain.py").read_text()
    found |= set(re.findall(r'MalformedReceipt\("([a-z0-9_]+)"', receipt_src))
    found |= set(re.findall(r'InvalidReceipt\("([a-z0-9_]+)"', chain_src))
    found |= set(re.findall(r'reason="([a-z0-9_]+)"', chain_src))
    found |= set(re.findall(r'reason if reason in \(([^)]*)\)', receipt_src)[0].replace('"', "").replace(" ", "")
                 .split(","))
    found |= {"bad_signature", "bad_alg", "untrusted", "revoked", "expired", "stale_crl", "bad_id"}  # error classes
    return found


def test_every_reason_the_code_gives_is_listed() -> None:
    assert _emitted_reasons() <= set(RECEIPT_REASONS)


def test_docs_table_is_the_code_list() -> None:
    text = (REPO / "docs" / "envelope.md").read_text()
    section = text[text.index("<!-- receipt-reasons"):]
    section = section[:section.index("\n\n", section.index("| reason |"))]
    documented = re.findall(r"^\| `([a-z0-9_]+)` \|", section, re.M)
    assert documented == list(RECEIPT_REASONS)

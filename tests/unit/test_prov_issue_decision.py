"""The second-certificate rule (``provisioning.ca.issue_decision``), every case (issue 12 item 8)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from provisioning.ca import IssuedCert, issue_decision

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def row(serial: int, kid: str, *, identity: str = "dev-1", role: str = "device", status: str = "active",
        days_left: float = 100) -> IssuedCert:
    return IssuedCert(serial=serial, identity=identity, role=role, kid=kid, alg=-9, public_key="", not_before="",
                      not_after=(NOW + timedelta(days=days_left)).isoformat(), claim_code="", status=status)


CASES = [
    # name, index, kid asked, reissue, action, serials counted as previous
    ("first certificate", [], "k1", False, "issue", []),
    ("first, --reissue changes nothing", [], "k1", True, "issue", []),
    ("re-run for the same key", [row(1, "k1")], "k1", False, "existing", [1]),
    ("same key, --reissue: still the one it has", [row(1, "k1")], "k1", True, "existing", [1]),
    ("another key: refused", [row(1, "k1")], "k2", False, "refuse", [1]),
    ("another key, --reissue (rotation)", [row(1, "k1")], "k2", True, "issue", [1]),
    ("revoked one does not count", [row(1, "k1", status="revoked")], "k2", False, "issue", []),
    ("expired one does not count", [row(1, "k1", days_left=-1)], "k2", False, "issue", []),
    ("another device's certificate", [row(1, "k1", identity="dev-2")], "k2", False, "issue", []),
    ("an aggregator identity of the same name", [row(1, "k1", role="aggregator")], "k2", False, "issue", []),
    ("mid-rotation: both keys valid, asking the new", [row(1, "k1"), row(2, "k2")], "k2", False, "existing", [1, 2]),
    ("mid-rotation, a third key", [row(1, "k1"), row(2, "k2")], "k3", False, "refuse", [1, 2]),
]


@pytest.mark.parametrize(("name", "index", "kid", "reissue", "action", "previous"), CASES, ids=[c[0] for c in CASES])
def test_issue_decision(name: str, index: list[IssuedCert], kid: str, reissue: bool, action: str,
                        previous: list[int]) -> None:
    d = issue_decision(index, "dev-1", kid, "device", NOW, reissue=reissue)
    assert d.action == action
    assert [r.serial for r in d.previous] == previous
    if action == "refuse":
        err = d.refusal("x.csr", "dev-1")
        assert err.reason == "already_certified" and "--reissue" in str(err) and "serial 1" in str(err)

"""Refused connects: every cause classified, counted, logged once per change, degraded after the configured
time without a connection."""

from __future__ import annotations

import socket
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.link_health import CAUSES, ConnectHealth, classify


def _ssl_error(reason: str) -> ssl.SSLError:
    e = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    e.reason = reason
    return e


@pytest.mark.parametrize(("exc", "connack", "cause"), [
    (socket.gaierror(-2, "Name or service not known"), None, "dns"),
    (ConnectionRefusedError(111, "Connection refused"), None, "tcp_refused"),
    (TimeoutError("timed out"), None, "tcp_timeout"),
    (OSError(113, "No route to host"), None, "tcp_error"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), None, "tls_verify"),
    (_ssl_error("SSLV3_ALERT_CERTIFICATE_REVOKED"), None, "tls_alert"),
    (_ssl_error("TLSV1_ALERT_UNKNOWN_CA"), None, "tls_alert"),
    (_ssl_error("WRONG_VERSION_NUMBER"), None, "tls_error"),
    (ConnectionResetError(104, "reset"), None, "closed_before_connack"),
    (None, None, "closed_before_connack"),
    (None, "Not authorized", "connack_refused"),
])
def test_every_cause_is_classified(exc: BaseException | None, connack: str | None, cause: str) -> None:
    got, detail = classify(exc, connack=connack)
    assert got == cause and got in CAUSES and detail


def test_every_documented_cause_is_reachable() -> None:
    reached = {classify(e)[0] for e in (socket.gaierror(), ConnectionRefusedError(), TimeoutError(), OSError(),
                                        ssl.SSLCertVerificationError(), _ssl_error("X_ALERT_Y"), _ssl_error("Z"),
                                        ConnectionResetError(), None)}
    reached.add(classify(None, connack="Bad")[0])
    assert reached == set(CAUSES)


def test_logged_once_per_change_counted_every_time_degraded_after_the_limit() -> None:
    h = ConnectHealth(degraded_after_s=60.0, started=0.0)
    assert h.refused("tls_alert", "certificate revoked", 1.0, 1000.0) is True
    assert h.refused("tls_alert", "certificate revoked", 2.0, 1001.0) is False
    assert h.refused("tls_alert", "certificate revoked", 3.0, 1002.0) is False
    assert h.refused("tcp_refused", "refused", 4.0, 1003.0) is True
    assert h.failures == {"tls_alert": 3, "tcp_refused": 1}
    assert not h.degraded(60.0) and h.degraded(60.5)
    doc = h.doc(61.0)
    assert doc["state"] == "degraded" and doc["refused_cause"] == "tcp_refused" and doc["refused_since"] == 1003.0
    assert h.connected(70.0) is True
    assert h.doc(71.0)["state"] == "connected" and not h.degraded(1000.0)
    h.disconnected(100.0)
    assert not h.degraded(160.0) and h.degraded(160.5)
    assert h.connected(200.0) is False  # dropped, not refused: no "recovered" line


@given(st.lists(st.booleans(), min_size=1, max_size=40))
def test_a_refusal_that_races_with_the_close_logs_once(closes: list[bool]) -> None:
    """TLS 1.3: the broker's revocation alert or only its close reaches the client, at random; one refusal."""
    h = ConnectHealth(degraded_after_s=60.0, started=0.0)
    logged = [h.refused("tls_alert", "sslv3_alert_certificate_revoked", 0.0, 0.0)]
    for i, closed in enumerate(closes):
        cause = ("closed_before_connack", "connection closed by the broker") if closed else \
            ("tls_alert", "sslv3_alert_certificate_revoked")
        logged.append(h.refused(*cause, float(i), float(i)))
    assert logged.count(True) == 1 and h.cause == "tls_alert"
    assert sum(h.failures.values()) == len(closes) + 1  # every attempt is counted, as what it was


def test_a_close_alone_is_its_own_cause_and_a_new_cause_still_logs() -> None:
    h = ConnectHealth(degraded_after_s=60.0, started=0.0)
    assert h.refused("closed_before_connack", "connection closed by the broker", 0.0, 0.0)
    assert h.refused("tls_alert", "sslv3_alert_certificate_revoked", 1.0, 1.0)
    assert h.refused("tcp_refused", "refused", 2.0, 2.0)  # the broker went away: a new cause
    assert h.refused("closed_before_connack", "connection closed by the broker", 3.0, 3.0)

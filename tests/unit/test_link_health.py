"""Refused connects: every cause classified, counted, logged once per change, degraded after the configured
time without a connection."""

from __future__ import annotations

import socket
import ssl

import pytest

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

"""Why the agent cannot reach its broker: refused connects classified, counted and timed (pure).

A revoked device used to log nothing after "agent started" and call itself healthy while its outbox grew.
Every refused connect now has a cause (DNS, TCP, TLS verification of the broker, a TLS alert from the broker,
a CONNACK refusal, a connection closed before CONNACK), is counted by cause, is logged once per *change* of
cause (the shell logs when ``refused`` returns True, not at every retry), and after ``degraded_after_s``
without a connection the link reports ``degraded`` (``edge-agent status`` exits non-zero).

``classify`` maps what the shell saw (an exception, a CONNACK reason, an EOF) to a cause; ``ConnectHealth``
keeps the state. Time comes in as arguments: ``now`` monotonic, ``wall`` Unix seconds for display.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CAUSES", "ConnectHealth", "classify"]

# Every cause ``classify`` returns, with what it usually means (docs/broker.md lists them from here).
CAUSES: dict[str, str] = {
    "dns": "the broker's host name does not resolve",
    "tcp_refused": "nothing listens on the broker's port (connection refused)",
    "tcp_timeout": "the broker's address does not answer (timeout)",
    "tcp_error": "another network error while connecting",
    "tls_verify": "the broker's certificate does not verify against mqtt.ca_file (wrong CA, wrong host name)",
    "tls_alert": "the broker refused the TLS handshake (revoked, expired or unknown device certificate)",
    "tls_error": "another TLS failure",
    "connack_refused": "the broker refused the MQTT session (CONNACK reason: not authorized, bad credentials)",
    "closed_before_connack": "the broker closed the connection before accepting the session",
}


# Causes that a later "closed_before_connack" is only a vaguer sighting of (see ``ConnectHealth.refused``).
VAGUER_SYMPTOM_OF = frozenset({"tls_alert", "connack_refused"})


def classify(exc: BaseException | None = None, *, connack: str | None = None) -> tuple[str, str]:
    """(cause, detail) for one refused connect; ``detail`` is short and safe to log."""
    if connack is not None:
        return "connack_refused", connack
    if exc is None:
        return "closed_before_connack", "connection closed by the broker"
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls_verify", getattr(exc, "verify_message", None) or detail
    if isinstance(exc, ssl.SSLError):
        reason = str(getattr(exc, "reason", "") or "")
        if "ALERT" in reason.upper():
            return "tls_alert", reason.lower()
        return "tls_error", reason.lower() or detail
    if isinstance(exc, socket.gaierror):
        return "dns", detail
    if isinstance(exc, ConnectionRefusedError):
        return "tcp_refused", detail
    if isinstance(exc, (TimeoutError, socket.timeout)) or getattr(exc, "errno", None) == errno.ETIMEDOUT:
        return "tcp_timeout", detail
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "closed_before_connack", detail
    return "tcp_error", detail


@dataclass
class ConnectHealth:
    """Connection state for status and telemetry; see the module docstring."""

    degraded_after_s: float
    started: float  # monotonic time the link started (the clock runs from here before any connection)
    up: bool = False
    cause: str | None = None
    detail: str | None = None
    since_wall: float | None = None  # when the current cause was first seen (Unix seconds)
    down_since: float | None = None  # monotonic: last time a connection ended (or start)
    failures: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.down_since = self.started

    def refused(self, cause: str, detail: str, now: float, wall: float) -> bool:
        """Count one refused connect; True when the cause (or its detail) changed: log it then, not before.

        A connection closed before CONNACK while the known cause is a broker refusal (TLS alert, CONNACK
        refusal) is the same refusal seen less precisely: under TLS 1.3 the broker rejects the client
        certificate after the handshake, and whether its alert or only the close reaches the client is a race.
        It is counted as what it is, but does not replace the precise cause (nor log again)."""
        self.failures[cause] = self.failures.get(cause, 0) + 1
        if cause == "closed_before_connack" and self.cause in VAGUER_SYMPTOM_OF:
            return False
        changed = (cause, detail) != (self.cause, self.detail)
        if changed:
            self.cause, self.detail, self.since_wall = cause, detail, wall
        return changed

    def connected(self, now: float) -> bool:
        """The session is up; True when this ends a run of refused connects (log the recovery)."""
        recovered = self.cause is not None
        self.up = True
        self.cause = self.detail = self.since_wall = None
        self.down_since = None
        return recovered

    def disconnected(self, now: float) -> None:
        if self.up:
            self.down_since = now
        self.up = False

    def unconnected_s(self, now: float) -> float:
        return 0.0 if self.up or self.down_since is None else max(0.0, now - self.down_since)

    def degraded(self, now: float) -> bool:
        return self.unconnected_s(now) > self.degraded_after_s

    def doc(self, now: float) -> dict[str, Any]:
        """What status and telemetry show."""
        return {
            "state": "connected" if self.up else ("degraded" if self.degraded(now) else "connecting"),
            "refused_cause": self.cause,
            "refused_detail": self.detail,
            "refused_since": None if self.since_wall is None else round(self.since_wall, 3),
            "unconnected_s": round(self.unconnected_s(now), 1),
            "connect_failures_by_cause": dict(sorted(self.failures.items())),
        }

"""sd_notify(3) without libsystemd: one datagram per state change to ``$NOTIFY_SOCKET``.

One implementation for both services (``edge-agent`` and ``edge-aggregator`` run as ``Type=notify``); it lives in
``provisioning`` because that is the one package of ours both import. The agent runs as ``Type=notify`` with
``WatchdogSec=``: systemd waits for ``READY=1`` (model loaded, outbox open) before it counts the unit as started,
restarts it when ``WATCHDOG=1`` stops arriving, and shows ``STATUS=`` in ``systemctl status``. The protocol is
small enough to speak directly: an AF_UNIX datagram socket whose address is a path, or an abstract name when it
starts with ``@``. Outside systemd (no ``NOTIFY_SOCKET``) every call is a cheap no-op, so the agent runs the same
from a shell or a test.

The pure parts (``socket_address``, ``watchdog_interval_s``) take the environment as an argument.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)

READY = "READY=1"
STOPPING = "STOPPING=1"
WATCHDOG = "WATCHDOG=1"


def socket_address(env: Mapping[str, str]) -> str | None:
    """The address to send to: a filesystem path, or ``"\\0name"`` for an abstract ``@name``; None if unset.

    Raises ``ValueError`` for a value that is neither (systemd only ever sets absolute paths or ``@``).
    """
    value = env.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        if len(value) < 2:
            raise ValueError("NOTIFY_SOCKET: expected '@name' for an abstract socket, got '@'")
        return "\0" + value[1:]
    if not value.startswith("/"):
        raise ValueError(f"NOTIFY_SOCKET: expected an absolute path or '@name', got {value!r}")
    return value


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """The watchdog timeout in seconds from ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``), or None if disabled.

    Like ``sd_watchdog_enabled``: a ``WATCHDOG_PID`` naming another process means the watchdog is not ours.
    Malformed values count as disabled (systemd never sets them; a hand-set bad value must not crash us).
    """
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    wpid = env.get("WATCHDOG_PID", "")
    if wpid:
        try:
            if int(wpid) != pid:
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


def status_line(text: str) -> str:
    """A ``STATUS=`` assignment: one line (newlines would start a new assignment)."""
    return "STATUS=" + " ".join(text.split())


class Notifier:
    """Sends notifications to the service manager; thread-safe; never raises on send failure."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        try:
            self.address = socket_address(env)
        except ValueError as e:
            log.warning("%s; not notifying the service manager", e)
            self.address = None
        self.watchdog_s = watchdog_interval_s(env, os.getpid())
        self.sent = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        """True when a service manager is listening (``NOTIFY_SOCKET`` was set)."""
        return self._sock is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``assignments`` (e.g. ``READY=1``, ``STATUS=...``) in one datagram. False if not sent."""
        if self._sock is None or self.address is None or not assignments:
            return False
        data = "\n".join(assignments).encode("utf-8", "replace")
        with self._lock:
            try:
                self._sock.sendto(data, self.address)
            except OSError as e:
                self.failures += 1
                if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                    log.warning("sd_notify to %r failed (%d so far): %s", self.address.replace("\0", "@"),
                                self.failures, e)
                return False
            self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up is complete (optionally with a first ``STATUS=``)."""
        return self.notify(READY, *(status_line(status),) if status else ())

    def watchdog(self, status: str | None = None) -> bool:
        """``WATCHDOG=1``: every stage is alive (optionally with a fresh ``STATUS=``, in the same datagram)."""
        return self.notify(WATCHDOG, *(status_line(status),) if status else ())

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status``."""
        return self.notify(status_line(text))

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun (systemd stops expecting watchdog pings)."""
        return self.notify(STOPPING)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

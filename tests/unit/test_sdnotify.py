"""sd_notify over a real AF_UNIX datagram socket (path and abstract), and the pure environment parsing."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioning.sdnotify import Notifier, socket_address, status_line, watchdog_interval_s


class Listener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5)

    def receive(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_listener(tmp_path: Path) -> Iterator[tuple[str, Listener]]:
    path = str(tmp_path / "notify.sock")
    listener = Listener(path)
    try:
        yield path, listener
    finally:
        listener.close()


def test_ready_status_watchdog_stopping_arrive_as_datagrams(path_listener: tuple[str, Listener]) -> None:
    path, listener = path_listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("outbox open, model loaded")
    assert listener.receive() == ["READY=1", "STATUS=outbox open, model loaded"]
    assert n.watchdog()
    assert listener.receive() == ["WATCHDOG=1"]
    assert n.status("committed 5\nmqtt up")
    assert listener.receive() == ["STATUS=committed 5 mqtt up"], "a newline would start a new assignment"
    assert n.watchdog("healthy\ncommitted 6")
    assert listener.receive() == ["WATCHDOG=1", "STATUS=healthy committed 6"], "ping and status in one datagram"
    assert n.stopping()
    assert listener.receive() == ["STOPPING=1"]
    assert n.sent == 5
    n.close()


def test_abstract_socket_is_reached_with_at_sign() -> None:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    listener = Listener("\0" + name)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.watchdog()
        assert listener.receive() == ["WATCHDOG=1"]
        n.close()
    finally:
        listener.close()


def test_without_notify_socket_every_call_is_a_noop() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.stopping()
    assert n.watchdog_s is None


def test_a_vanished_socket_is_counted_not_raised(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert not n.watchdog()
    assert n.failures == 1


def test_socket_address_forms() -> None:
    assert socket_address({}) is None
    assert socket_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert socket_address({"NOTIFY_SOCKET": "@abc"}) == "\0abc"
    with pytest.raises(ValueError, match="absolute path or '@name'"):
        socket_address({"NOTIFY_SOCKET": "relative/notify"})
    with pytest.raises(ValueError, match="abstract socket"):
        socket_address({"NOTIFY_SOCKET": "@"})


def test_a_bad_notify_socket_disables_notifications_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": "nope"})
    assert not n.enabled
    assert "absolute path" in caplog.text


def test_watchdog_interval_follows_sd_watchdog_enabled_rules() -> None:
    pid = os.getpid()
    assert watchdog_interval_s({}, pid) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, pid) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(pid)}, pid) == 2.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(pid + 1)}, pid) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}, pid) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}, pid) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "5", "WATCHDOG_PID": "x"}, pid) is None


@given(st.text())
def test_status_line_is_always_one_assignment(text: str) -> None:
    line = status_line(text)
    assert line.startswith("STATUS=")
    assert "\n" not in line and "\r" not in line

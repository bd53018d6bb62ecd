"""The real agent process against a real AF_UNIX datagram socket as NOTIFY_SOCKET (systemd's side, played
by the test): READY=1 after start-up, WATCHDOG=1 at least twice per WatchdogSec while healthy, no pings
within one WatchdogSec after a stage is stalled on purpose (EDGE_AGENT_STALL_FILE), pings again once it
is released, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.watchdog import STALL_ENV
from tests.support.agent_proc import AgentProcess, agent_config, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

WATCHDOG_S = 2.0


@dataclass
class NotifySocket:
    """systemd's end of the notify protocol: records (monotonic time, assignment) for every datagram."""

    path: str
    events: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            with self._lock:
                self.events += [(now, line) for line in data.decode().split("\n")]

    def times(self, assignment: str, after: float = 0.0) -> list[float]:
        with self._lock:
            return [t for t, a in self.events if a == assignment and t >= after]

    def statuses(self) -> list[str]:
        with self._lock:
            return [a for _, a in self.events if a.startswith("STATUS=")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(str(tmp_path / "notify.sock"))
    try:
        yield ns
    finally:
        ns.close()


def start_agent(tmp_path: Path, broker: Mosquitto, device: str, notify: NotifySocket,
                monkeypatch: pytest.MonkeyPatch) -> tuple[AgentProcess, Path]:
    stall_file = tmp_path / "stall"
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_S * 1e6)))
    monkeypatch.setenv(STALL_ENV, str(stall_file))
    cfg = agent_config(tmp_path, device, broker.url, source={"type": "simulated", "realtime": True,
                                                               "rate_hz": 4000.0})
    agent = AgentProcess(write_config(tmp_path / "agent.toml", cfg)).start()
    return agent, stall_file


@pytest.mark.parametrize("stage", ["pipeline", "committer"])
def test_pings_while_healthy_stop_when_a_stage_stalls_and_resume(tmp_path: Path, mosquitto: Mosquitto,
                                                                 unique_id: str, notify: NotifySocket, stage: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    agent, stall_file = start_agent(tmp_path, mosquitto, f"dev-{unique_id}", notify, monkeypatch)
    try:
        wait_for(lambda: notify.times("READY=1"), timeout=30, what="READY=1")
        ready = notify.times("READY=1")[0]
        assert not notify.times("WATCHDOG=1", after=0) or notify.times("WATCHDOG=1")[0] >= ready, \
            "no watchdog ping before READY=1"

        # Healthy: at least two pings per WatchdogSec over three WatchdogSecs.
        window_start = ready + 0.1
        wait_for(lambda: time.monotonic() > window_start + 3 * WATCHDOG_S, timeout=10, what="observation window")
        pings = [t for t in notify.times("WATCHDOG=1") if window_start <= t <= window_start + 3 * WATCHDOG_S]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        print(f"healthy: {len(pings)} pings in {3 * WATCHDOG_S:.0f}s, largest gap {max(gaps):.2f}s")
        assert len(pings) >= 5, pings
        assert max(gaps) < WATCHDOG_S, "systemd would have fired between two pings"

        # Stall the stage on purpose: pings stop within one WatchdogSec.
        stall_file.write_text(stage)
        stalled_at = time.monotonic()
        wait_for(lambda: any("unhealthy" in s and "stalled" in s for s in notify.statuses()), timeout=10,
                 what="STATUS naming the stalled stage")
        wait_for(lambda: time.monotonic() > stalled_at + 2 * WATCHDOG_S, timeout=10, what="two WatchdogSecs")
        after = notify.times("WATCHDOG=1", after=stalled_at)
        last = max(after) - stalled_at if after else 0.0
        print(f"stalled {stage}: last ping {last:.2f}s after the stall (limit {WATCHDOG_S}s)")
        assert last <= WATCHDOG_S, f"pings went on {last:.2f}s after the stall"
        assert not notify.times("WATCHDOG=1", after=stalled_at + WATCHDOG_S)
        assert agent.alive(), "the agent itself does not exit: systemd decides"
        assert f"stage {stage}" in agent.log() and "withholding watchdog pings" in agent.log()

        # Released: pings resume without a restart.
        stall_file.unlink()
        released = time.monotonic()
        wait_for(lambda: len(notify.times("WATCHDOG=1", after=released)) >= 2, timeout=10,
                 what="pings after the stage is released")
        assert "healthy again" in agent.log()

        assert agent.terminate() == 0, agent.log()
        assert notify.times("STOPPING=1"), "STOPPING=1 on SIGTERM"
        stopping = notify.times("STOPPING=1")[0]
        assert not notify.times("WATCHDOG=1", after=stopping + 0.01)
    finally:
        agent.stop()


def test_status_line_carries_live_counts(tmp_path: Path, mosquitto: Mosquitto, unique_id: str,
                                         notify: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    agent, _ = start_agent(tmp_path, mosquitto, f"dev-{unique_id}", notify, monkeypatch)
    try:
        def counts() -> list[int]:
            return [int(s.split("committed ")[1].split(",")[0]) for s in notify.statuses() if "committed " in s]

        # Results are committed in groups (up to outbox.commit_linger_s apart): wait for a line that moved.
        wait_for(lambda: len(counts()) >= 3 and counts()[-1] > counts()[0], timeout=30,
                 what="STATUS lines whose committed count grows")
        assert counts()[0] >= 0, notify.statuses()
        assert "mqtt up" in notify.statuses()[-1]
    finally:
        agent.stop()

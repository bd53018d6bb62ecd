"""Issue 12 item 17: ``Agent.start()`` that fails part way leaves no thread running; ``stop()`` joins every
thread and never closes the outbox (or the link's wake-up pipe and reader) under a thread whose join timed
out. Failures are injected at each start stage, and a commit (and a link turn) that hangs during stop."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.service import Agent
from agent.settings import AgentConfig
from tests.support.agent_proc import agent_config
from tests.support.mosquitto import Mosquitto
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration

AGENT_THREADS = ("committer", "mqtt", "telemetry", "status", "watchdog")


def agent_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate()
                  if t.is_alive() and (t.name in AGENT_THREADS or t.name.startswith("pipeline-")))


def config(tmp_path: Path, url: str, device: str) -> AgentConfig:
    cfg = agent_config(tmp_path, device, url, source={"type": "simulated", "fault": "normal", "realtime": True},
                       status={"interval_s": 0.2})
    return parse_config(cfg, str(tmp_path / "agent.toml"))


@pytest.mark.parametrize("stage", ["committer", "link", "pipelines", "watchdog"])
def test_a_start_that_fails_part_way_leaves_no_thread(tmp_path: Path, mosquitto: Mosquitto, unique_id: str,
                                                      stage: str) -> None:
    assert agent_threads() == []
    agent = Agent(config(tmp_path, mosquitto.url, f"dev-{unique_id}"))
    agent._fail_start_at = stage
    with pytest.raises(RuntimeError, match="injected"):
        agent.start()
    assert agent_threads() == [], f"threads left after a failed start at {stage}"
    with pytest.raises(Exception, match="closed"):
        agent.outbox._db.execute("SELECT 1")  # type: ignore[union-attr]
    again = Agent(config(tmp_path, mosquitto.url, f"dev-{unique_id}"))  # the outbox is free for the next try
    again.start()
    again.stop()
    assert agent_threads() == []


def test_stop_never_closes_what_a_hung_thread_uses(tmp_path: Path, mosquitto: Mosquitto, unique_id: str) -> None:
    agent = Agent(config(tmp_path, mosquitto.url, f"dev-{unique_id}"))
    agent.start()
    committer, link, outbox = agent.committer, agent.link, agent.outbox
    assert committer is not None and link is not None and outbox is not None
    wait_for(lambda: committer.stats.committed > 5, timeout=20, what="records committed")
    release = threading.Event()
    hung = threading.Event()

    def hang(stage: str) -> None:
        hung.set()
        release.wait(60)

    committer.stall_hook = hang  # the next commit turn hangs (a dead disk, a stuck fsync)
    real_step = link._step

    def hung_step() -> None:
        if hung.is_set():
            release.wait(60)
        real_step()

    link._step = hung_step  # type: ignore[method-assign]
    wait_for(hung.is_set, timeout=10, what="the committer hung")
    agent.committer_stop_timeout_s = 0.3
    agent.link_drain_timeout_s = 0.1
    try:
        agent.stop()
        assert committer.alive and link.alive, "the injected hangs hold both threads"
        outbox._db.execute("SELECT 1")  # still open: the hung committer owns it
        assert link._pipe_open, "the wake-up pipe stays open for the hung link thread"
        assert link._reader._db.execute("SELECT 1")
    finally:
        release.set()
    wait_for(lambda: not committer.alive and not link.alive, timeout=20, what="threads end once released")
    assert agent_threads() == []
    link._close_pipe()
    outbox.close()

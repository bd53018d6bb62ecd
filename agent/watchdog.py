"""The systemd watchdog: ``WATCHDOG=1`` every WatchdogSec/2, but only while every stage is healthy.

A process that is alive is not necessarily working: an inference thread stuck in native code or an outbox
that refuses every write leaves the PID up while nothing gets through. The watchdog thread asks
``Agent.health()`` before each ping and stays silent while any stage is stalled or failing, so systemd
(``WatchdogSec=``, ``Restart=on-failure``) kills and restarts the agent. ``STATUS=`` carries live counts
either way, and the reasons when unhealthy.

Fault injection for tests (and for a technician checking that the watchdog really bites): when the
environment variable ``EDGE_AGENT_STALL_FILE`` names a path, a stage stalls while that file exists. Its
content names the stage: ``pipeline`` (every pipeline, the default when empty), ``pipeline:<stream>`` or
``committer``. Without the variable the hook is not installed at all and costs nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from agent.sources.base import SampleBlock, Source
from provisioning.sdnotify import Notifier

__all__ = ["STALL_ENV", "StallSwitch", "StallingSource", "Watchdog", "stall_s_for"]

log = logging.getLogger(__name__)

STALL_ENV = "EDGE_AGENT_STALL_FILE"
DEFAULT_STALL_S = 30.0
STATUS_ONLY_INTERVAL_S = 5.0  # STATUS= refresh when systemd runs us without a watchdog


class HealthLike(Protocol):
    healthy: bool
    reasons: list[str]


def stall_s_for(configured: float | None, watchdog_s: float | None) -> float:
    """How long a stage may go without progress: the config, else half of WatchdogSec, else 30 s.

    Half of WatchdogSec means a stall stops the pings within one WatchdogSec (stall + one ping interval).
    """
    if configured is not None:
        return configured
    if watchdog_s:
        return max(0.5, watchdog_s / 2)
    return DEFAULT_STALL_S


class StallSwitch:
    """Test hook: ``wait(stage)`` blocks while the stall file exists and names ``stage``."""

    def __init__(self, path: str, poll_s: float = 0.05) -> None:
        self.path = path
        self.poll_s = poll_s
        self._closed = threading.Event()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StallSwitch | None:
        env = os.environ if env is None else env
        path = env.get(STALL_ENV, "")
        if not path:
            return None
        log.warning("fault injection enabled: stages stall while %s exists (%s)", path, STALL_ENV)
        return cls(path)

    def stalled(self, stage: str) -> bool:
        try:
            with open(self.path, encoding="utf-8") as f:
                wanted = f.read().strip() or "pipeline"
        except OSError:
            return False
        return any(stage == w or stage.startswith(w + ":") for w in wanted.split())

    def wait(self, stage: str) -> None:
        if not self.stalled(stage):
            return
        log.warning("stage %s stalled on purpose (%s exists)", stage, self.path)
        while self.stalled(stage) and not self._closed.wait(self.poll_s):
            pass
        log.warning("stage %s released", stage)

    def close(self) -> None:
        self._closed.set()


class StallingSource(Source):
    """Wraps a pipeline's source so the pipeline thread stalls between blocks on demand."""

    def __init__(self, inner: Source, switch: StallSwitch, stage: str) -> None:
        self.inner = inner
        self.switch = switch
        self.stage = stage
        self.name = inner.name
        self.idle_ok = inner.idle_ok

    def blocks(self) -> Iterator[SampleBlock]:
        for block in self.inner.blocks():
            self.switch.wait(self.stage)
            yield block

    def close(self) -> None:
        self.switch.close()
        self.inner.close()

    def counters(self) -> dict[str, int]:
        return self.inner.counters()


class Watchdog:
    """The thread that pings systemd while ``health()`` says every stage is healthy."""

    def __init__(self, notifier: Notifier, health: Callable[[], HealthLike], status_text: Callable[[], str],
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.health = health
        self.status_text = status_text
        self.clock = clock
        self.interval_s = notifier.watchdog_s / 2 if notifier.watchdog_s else STATUS_ONLY_INTERVAL_S
        self.pings = 0
        self.withheld = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._was_healthy = True

    @property
    def enabled(self) -> bool:
        return self.notifier.enabled

    def start(self) -> None:
        if self.notifier.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def tick(self) -> bool:
        """One check: ping if healthy, always refresh STATUS. Returns whether it pinged."""
        try:
            h = self.health()
            text = self.status_text()
        except Exception:  # a bug in a health probe must not read as "healthy"
            log.exception("health check failed; withholding the watchdog ping")
            self.withheld += 1
            return False
        if h.healthy:
            if not self._was_healthy:
                log.warning("every stage is healthy again; resuming watchdog pings")
            self._was_healthy = True
            pinged = self.notifier.watchdog(text) if self.notifier.watchdog_s else self.notifier.status(text)
            if pinged and self.notifier.watchdog_s:
                self.pings += 1
            return pinged and bool(self.notifier.watchdog_s)
        if self._was_healthy:
            log.error("unhealthy, withholding watchdog pings (systemd will restart the agent): %s",
                      "; ".join(h.reasons))
        self._was_healthy = False
        self.withheld += 1
        self.notifier.status("unhealthy: " + "; ".join(h.reasons))
        return False

    def _run(self) -> None:
        deadline = self.clock()
        while not self._stop.is_set():
            self.tick()
            deadline += self.interval_s
            delay = deadline - self.clock()
            if delay < 0:  # we fell behind (suspend, CPU starvation): do not burst
                deadline = self.clock()
                delay = 0
            if self._stop.wait(delay):
                return

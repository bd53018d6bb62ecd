"""Live updates: the fleet tracker says which devices changed; each open page hears about the ones it shows.

The tracker calls ``notify(device_ids)`` from the store thread after each write; the hub collects them and,
at most every ``interval_s`` (the first change after a quiet spell goes out at once), renders each changed
row once, however many pages show it, and queues to every page the rows it shows (a fleet page subscribes
with the ids of its rows, a device page with its device). Rendering reads the store, so it runs in a
worker thread; the event loop only moves strings. A page whose queue is full (a stalled browser) is closed
rather than buffered without bound: its EventSource reconnects and starts from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# An event for one page: (SSE event name, data). ``None`` closes the page's stream.
Event = tuple[str, str]


@dataclass(eq=False)
class Client:
    """One open page's stream."""

    kind: str  # "fleet" or "device"
    ids: frozenset[str]
    queue: asyncio.Queue[Event | None]
    closed: bool = False

    def put(self, event: Event) -> bool:
        if self.closed:
            return False
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            self.close()
            return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


@dataclass
class Renderers:
    """How the hub turns changed devices into events (blocking: called in a worker thread)."""

    fleet_rows: Callable[[list[str]], dict[str, str]]  # device ids -> {device id: row HTML}
    summary: Callable[[], str]  # the fleet summary HTML
    device: Callable[[str], list[Event]]  # one device's page events (panel HTML, plot JSON)


@dataclass
class HubStats:
    flushes: int = 0
    events: int = 0
    dropped_clients: int = 0
    last_flush_s: float = 0.0
    errors: int = 0


class Hub:
    """Fan-out of changes to open pages. ``start()`` in the event loop; ``notify()`` from any thread."""

    def __init__(self, renderers: Renderers, interval_s: float = 0.5, queue_size: int = 32) -> None:
        self.renderers = renderers
        self.interval_s = interval_s
        self.queue_size = queue_size
        self.stats = HubStats()
        self._clients: set[Client] = set()
        self._dirty: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_flush = 0.0
        self._stopping = False

    # ---- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="web-hub")

    async def stop(self) -> None:
        self._stopping = True
        for c in list(self._clients):
            c.close()
        self._clients.clear()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # ---- inputs --------------------------------------------------------------------------------------

    def notify(self, device_ids: Iterable[str]) -> None:
        """Devices changed (thread-safe; the tracker's listener)."""
        loop = self._loop
        if loop is None or self._stopping:
            return
        ids = set(device_ids)
        try:
            loop.call_soon_threadsafe(self._mark, ids)
        except RuntimeError:  # the loop closed while the store thread was still writing
            pass

    def _mark(self, ids: set[str]) -> None:
        self._dirty |= ids
        if self._wake is not None:
            self._wake.set()

    def subscribe(self, kind: str, ids: Iterable[str]) -> Client:
        client = Client(kind, frozenset(ids), asyncio.Queue(self.queue_size))
        if self._stopping:
            client.close()
        else:
            self._clients.add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        self._clients.discard(client)

    def clients(self, kind: str | None = None) -> int:
        return sum(1 for c in self._clients if kind is None or c.kind == kind)

    # ---- the loop ------------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            wait = self._last_flush + self.interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            dirty, self._dirty = self._dirty, set()
            self._last_flush = time.monotonic()
            try:
                await self.flush(dirty)
            except Exception:
                self.stats.errors += 1
                log.exception("live update failed")

    async def flush(self, dirty: set[str]) -> None:
        """Render what changed once and queue it to every page that shows it."""
        t0 = time.perf_counter()
        clients = [c for c in self._clients if not c.closed]
        fleet = [c for c in clients if c.kind == "fleet"]
        wanted = sorted(dirty & {i for c in fleet for i in c.ids})
        if wanted:  # the changed rows first: they are what the pages wait for
            rows = await asyncio.to_thread(self.renderers.fleet_rows, wanted)
            for c in fleet:
                html = "".join(rows[i] for i in sorted(c.ids & rows.keys()))
                if html:
                    self._send(c, ("rows", html))
        if fleet and dirty:
            summary = await asyncio.to_thread(self.renderers.summary)
            for c in fleet:
                self._send(c, ("summary", summary))
        devices = sorted(dirty & {i for c in clients if c.kind == "device" for i in c.ids})
        for device_id in devices:
            events = await asyncio.to_thread(self.renderers.device, device_id)
            for c in clients:
                if c.kind == "device" and device_id in c.ids:
                    for ev in events:
                        self._send(c, ev)
        self._clients = {c for c in self._clients if not c.closed}
        self.stats.flushes += 1
        self.stats.last_flush_s = time.perf_counter() - t0

    def _send(self, c: Client, ev: Event) -> None:
        was_closed = c.closed
        if c.put(ev):
            self.stats.events += 1
        elif not was_closed:
            self.stats.dropped_clients += 1

"""The committer thread: signs drafts with their seq and group-commits them to the outbox.

It is the only writer of the outbox (SQLite wants one) and the only user of the signing key on the hot
path. Each turn takes every draft waiting (up to ``commit_batch``), seals them with consecutive seqs inside
one transaction, commits with synchronous=FULL, and only then hands the rows to the MQTT link. Acks and
PUBACKs arrive as deletions on a small control queue. When the disk refuses a commit, the drafts are kept
and retried with backoff; the pipelines then block on the bounded queue instead of losing data silently.
"""

from __future__ import annotations

import collections
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.backoff import backoff_delay
from agent.errors import OutboxError
from agent.outbox import CommitResult, Draft, Outbox, Row
from agent.retention import EvictionPlan
from agent.topics import Topics
from envelope import RecordHeader, Signer, seal

log = logging.getLogger(__name__)

# A batch of results smaller than commit_batch waits up to this long for more before it is committed: at 50
# records/s, 2 fsync'd commits a second instead of 50, each writing the meta, interior and freelist pages once
# for 25 records instead of once per record (docs/benchmarks.md, B7). At high rates batches fill first; the
# price is up to 0.5 s more latency at low rates.
COMMIT_LINGER_S = 0.5
URGENT_MAX = 16  # agent-made records (telemetry) waiting beside the pipelines' queue; oldest dropped beyond
# An idle committer wakes this often (B4: idle CPU). Work that is not a draft (deletes, receipts, telemetry,
# stop) wakes it at once with _WAKE, so this only bounds how stale ``stats.last_progress`` gets.
IDLE_POLL_S = 1.0
_WAKE = Draft(kind="wake", stream="", topic="", payload=b"", capture_ms=0)  # never sealed: see _take


@dataclass
class CommitterStats:
    """Counters of the committer, for telemetry."""

    committed: int = 0
    commits: int = 0
    refused_oversize: int = 0
    gap_records: int = 0
    outbox_errors: int = 0
    last_error: str | None = None
    last_progress: float = 0.0
    healthy: bool = True
    unhealthy_since: float | None = None  # monotonic time of the first failed commit of the current streak
    urgent_dropped: int = 0
    receipt_write_errors: int = 0
    waiting: bool = False  # blocked on an empty draft queue with nothing to do: idle, not stalled


class Committer:
    """Drains drafts, seals and commits them, and forwards committed rows to ``forward``."""

    def __init__(self, outbox: Outbox, signer: Signer, device_id: str, topics: Topics, drafts: queue.Queue[Draft],
                 forward: Callable[[list[Row]], None], *, commit_batch: int, max_record_bytes: int,
                 clock: Callable[[], float] = time.time, linger_s: float = COMMIT_LINGER_S) -> None:
        self.outbox = outbox
        self.signer = signer
        self.device_id = device_id
        self.topics = topics
        self.drafts = drafts
        self.forward = forward
        self.commit_batch = commit_batch
        self.linger_s = linger_s
        self.max_record_bytes = max_record_bytes
        self.clock = clock
        self.stats = CommitterStats(last_progress=time.monotonic())
        self._control: collections.deque[tuple[str, object]] = collections.deque()
        self._pending: list[Draft] = []
        self._deferred_deletes: list[int] = []  # PUBACKed seqs, dropped with the next commit
        self._stop = threading.Event()
        self._rng = random.Random()
        self.on_commit: Callable[[CommitResult], None] | None = None
        self.stall_hook: Callable[[str], None] | None = None  # fault injection (agent.watchdog.StallSwitch)
        self.persist_receipt: Callable[[object], None] | None = None  # agent.receipts.ReceiptChecker.keep
        # Aggregator delivery: every seq between the last ack and the oldest row was evicted, so a gap record
        # can name the whole range (see gap_draft). Broker delivery deletes rows one by one, so it cannot.
        self.gap_from_ack = False
        self._urgent: collections.deque[Draft] = collections.deque()
        self._thread = threading.Thread(target=self._run, name="committer", daemon=True)

    # ----- called from other threads ---------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _wake(self) -> None:
        """Wake the committer if it is blocked on the empty draft queue (called after queueing other work).

        The committer sets ``stats.waiting`` before its last look at that work, and this reads it after
        queueing: either the committer sees the work, or this sees it waiting and wakes it.
        """
        if self.stats.waiting:
            try:
                self.drafts.put_nowait(_WAKE)
            except queue.Full:  # a full queue wakes it anyway
                pass

    def ack(self, seq: int) -> None:
        """A verified receipt settled everything up to ``seq``: delete it."""
        self._control.append(("ack", seq))
        self._wake()

    def keep_receipt(self, receipt: object) -> None:
        """Persist the latest valid receipt (with ``persist_receipt``) before the delete queued after it."""
        self._control.append(("receipt", receipt))
        self._wake()

    def put_urgent(self, draft: Draft) -> None:
        """Queue an agent-made record (telemetry) beside the pipelines' queue, so it is committed even while
        that queue is full (e.g. during a disk-full outage, when it reports the error). At most
        ``URGENT_MAX`` wait; the oldest is dropped beyond that."""
        if len(self._urgent) >= URGENT_MAX:
            self._urgent.popleft()
            self.stats.urgent_dropped += 1
        self._urgent.append(draft)
        self._wake()

    def pubacked(self, seqs: list[int]) -> None:
        """Broker mode: these seqs were PUBACKed."""
        self._control.append(("puback", seqs))
        self._wake()

    def stop(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop. Pipelines must have stopped first."""
        self._stop.set()
        self._wake()
        if self._thread.ident is not None:  # started (an aborted Agent.start may not have started it)
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ----- sealing ---------------------------------------------------------------------------------
    def seal_draft(self, draft: Draft, epoch: int, seq: int) -> bytes:
        """Sign one draft as record ``seq`` of boot ``epoch``."""
        header = RecordHeader(
            kind=draft.kind, device_id=self.device_id, stream=draft.stream, epoch=epoch, seq=seq,
            iat=int(self.clock()), capture_ms=draft.capture_ms, clock_state=draft.clock_state,
            model_sha256=draft.model_sha256, input_sha256=draft.input_sha256, x5chain=draft.x5chain,
        )
        return seal(self.signer, header, draft.payload)

    def gap_draft(self, plan: EvictionPlan) -> Draft:
        """The signed gap record that names an eviction (loss by policy, not in transit).

        Gap records live in the outbox too and are evicted like any row when the outage goes on, so a gap
        record naming only this eviction would leave the ranges of the evicted earlier gap records unknown to
        the aggregator, whose contiguous point (and so its acks) would then never move again. In aggregator
        delivery every seq after the last ack that is no longer stored was evicted, so the range starts at
        ``acked_seq + 1``: the newest gap record alone accounts for everything lost so far. ``count`` is the
        size of that range (every seq in it was evicted); ``bytes`` is what this eviction freed.
        """
        self.stats.gap_records += 1
        first = plan.first
        if self.gap_from_ack:
            first = min(first, self.outbox.acked_seq + 1)
        return Draft(kind="gap", stream="gap", topic=self.topics.gap, capture_ms=int(self.clock() * 1000),
                     payload={"first": first, "last": plan.last, "count": plan.last - first + 1,
                              "bytes": plan.freed_bytes, "reason": "outbox_full"})

    # ----- the loop --------------------------------------------------------------------------------
    def _take(self) -> None:
        while self._urgent and len(self._pending) < self.commit_batch + URGENT_MAX:
            self._pending.append(self._urgent.popleft())
        room = self.commit_batch - len(self._pending)
        if room <= 0:
            return
        linger = 0.0
        if not self._pending:
            self.stats.waiting = True
            try:
                if self._control or self._stop.is_set():  # work waiting: do not block
                    first = self.drafts.get_nowait()
                else:
                    first = self.drafts.get(timeout=IDLE_POLL_S)
            except queue.Empty:
                return
            finally:
                self.stats.waiting = False
            if first is _WAKE:
                return
            self._pending.append(first)
            room -= 1
            # A fresh batch of results may wait for company; a retried batch or a birth/gap record may not.
            linger = self.linger_s if self._pending[0].kind == "result" else 0.0
        deadline = time.monotonic() + linger
        while room > 0:
            try:
                draft = self.drafts.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return
                self.stats.waiting = True  # lingering for company (up to linger_s) is not a stall
                try:
                    draft = self.drafts.get(timeout=left)
                except queue.Empty:
                    return
                finally:
                    self.stats.waiting = False
            if draft is _WAKE:
                continue
            self._pending.append(draft)
            room -= 1

    def _apply_control(self) -> None:
        while self._control:
            kind, value = self._control.popleft()
            try:
                if kind == "receipt":
                    if self.persist_receipt is not None:
                        try:
                            self.persist_receipt(value)
                        except OSError as e:
                            self.stats.receipt_write_errors += 1
                            log.error("cannot keep the latest receipt on disk: %s", e)
                elif kind == "ack":
                    assert isinstance(value, int)
                    if value > self.outbox.last_seq:
                        log.warning("aggregator acked seq %d beyond the last committed seq %d: was the outbox "
                                    "replaced? moving the seq counter forward so no seq is reused",
                                    value, self.outbox.last_seq)
                        self.outbox.advance_seq(value)
                    self.outbox.delete_through(value)
                else:  # deleted with the next group commit (one transaction, pages written once)
                    assert isinstance(value, list)
                    self._deferred_deletes.extend(value)
            except OutboxError as e:
                log.error("%s", e)
                self.stats.outbox_errors += 1
                return

    def _delete_deferred(self) -> None:
        """PUBACKed rows when no commit is coming to carry them (idle link, stopping)."""
        if not self._deferred_deletes:
            return
        try:
            self.outbox.delete_seqs(self._deferred_deletes)
        except OutboxError as e:
            log.error("%s", e)
            self.stats.outbox_errors += 1
            return
        self._deferred_deletes = []

    def _run(self) -> None:
        attempt = 0
        while True:
            stopping = self._stop.is_set()
            if self.stall_hook is not None:
                self.stall_hook("committer")
            self._apply_control()
            self._take()
            if not self._pending:
                self._delete_deferred()
                self.stats.last_progress = time.monotonic()
                if stopping and self.drafts.empty():
                    return
                continue
            try:
                result = self.outbox.commit(self._pending, self.seal_draft, self.max_record_bytes,
                                            self.gap_draft, int(self.clock() * 1000),
                                            delete_seqs=self._deferred_deletes)
            except OutboxError as e:
                self.stats.outbox_errors += 1
                self.stats.healthy = False
                self.stats.last_error = str(e)
                self.stats.last_progress = time.monotonic()  # retrying is progress; a hung commit is not
                if self.stats.unhealthy_since is None:
                    self.stats.unhealthy_since = time.monotonic()
                delay = backoff_delay(attempt, 0.2, 5.0, self._rng)
                attempt += 1
                log.error("%s; keeping %d records in memory, retrying in %.1fs", e, len(self._pending), delay)
                if stopping and attempt > 3:
                    log.error("stopping with %d uncommitted records: the outbox cannot be written", len(self._pending))
                    return
                if stopping:
                    time.sleep(delay)
                else:
                    self._stop.wait(delay)
                continue
            if attempt:
                log.info("outbox writable again after %d failed commits", attempt)
            attempt = 0
            self._pending = []
            self._deferred_deletes = []
            self.stats.healthy = True
            self.stats.unhealthy_since = None
            self.stats.last_error = None
            self.stats.commits += 1
            self.stats.committed += len(result.rows)
            self.stats.last_progress = time.monotonic()
            for draft, size in result.refused:
                self.stats.refused_oversize += 1
                log.error("refused a %s record of %d bytes on %s: larger than the %d-byte packet budget",
                          draft.kind, size, draft.topic, self.max_record_bytes)
            if self.on_commit is not None:
                self.on_commit(result)
            if result.rows:
                self.forward(result.rows)

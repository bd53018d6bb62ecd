"""``AggregatorService``: broker → bounded queue → store thread (verify, commit, ack). Runs in-process too.

The paho network thread only enqueues. One store thread owns the database connection: it takes whatever
has queued up (up to ``batch_max``), verifies each record, commits the batch in one transaction (group
commit), then PUBACKs the deliveries to the broker and, every ``ack_interval_ms``, publishes each device's
durable ack. Nothing is acknowledged, to the broker or to the device, before the commit that made it
durable. Counters are kept in memory for ``stats()`` (the demo, logs) and in the store for the CLI.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from aggregator.config import AggregatorConfig
from aggregator.errors import ConfigError, Rejected, StoreError, TrustError
from aggregator.hold import Hold, HoldLimits
from aggregator.identity import Identity, load_identity
from aggregator.model_registry import ModelRegistry
from aggregator.mqtt_link import Inbound, MqttLink
from aggregator.presence import PresenceEvent
from aggregator.receipts import ReceiptBatcher
from aggregator.schema import DEVICE_COUNTERS
from aggregator.store import BatchResult, RejectEvent, Store, open_store
from aggregator.tlog import LogIntegrator, ReceiptLog, load_log_signer
from aggregator.topics import OFFLINE_PAYLOAD, ack_topic, parse_topic, subscriptions
from aggregator.trust import TrustStore, load_crl, load_registry, load_trust_store
from aggregator.verifier import VerifiedRecord, Verifier
from envelope import DEFAULT_LIMITS, Receipt, labels, seal_receipt

log = logging.getLogger(__name__)

_STOP = object()
MAX_TRACKED_DIGESTS = 10_000  # distinct model digests counted one by one; more are counted as "other"


@dataclass(frozen=True)
class AggregatorStats:
    """A snapshot of the in-memory counters since ``start()``."""

    received: int = 0
    verified: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    reorders: int = 0
    gaps_opened: int = 0
    gap_seqs: int = 0
    policy_gap_seqs: int = 0
    skew_flagged: int = 0  # stored records signed too far from our clock (max_skew_s)
    clock_states: dict[str, int] = field(default_factory=dict)  # stored records by declared clock state
    offline_events: int = 0
    acks_published: int = 0  # signed receipts published
    held: int = 0  # records whose key was unknown, held for the birth record
    released: int = 0  # held records verified again after the birth record arrived
    equivocations: int = 0
    batches: int = 0
    store_errors: int = 0
    queue_depth: int = 0
    devices: int = 0
    unlisted_model_results: int = 0  # verified results whose model digest is not a signed target ([models])
    unlisted_models: dict[str, int] = field(default_factory=dict)  # digest hex -> such results

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["rejected_total"] = self.rejected_total
        return d


@dataclass(frozen=True)
class CommittedBatch:
    """What one batch did, handed to observers after its commit (in the store thread)."""

    verified: Sequence[VerifiedRecord]
    rejects: Sequence[RejectEvent]
    offline: Sequence[tuple[str, int]]
    result: BatchResult
    commit_s: float  # how long the store's commit_batch took (the successful attempt)


class BatchObserver(Protocol):
    """Something that follows the store thread's work (the fleet view, metrics). Called in the store thread
    after each commit: keep it short, and never raise (a failure is logged and the observer kept)."""

    def batch_committed(self, batch: CommittedBatch) -> None: ...

    def receipts_published(self, receipts: Sequence[Receipt]) -> None: ...


class AggregatorService:
    """One aggregator worker: ``start()``, ``stats()``, ``stop()``. ``edge-aggregator run`` wraps it."""

    def __init__(self, config: AggregatorConfig, *, trust: TrustStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._trust_given = trust
        self.trust = trust or TrustStore()
        max_bytes = min(config.max_record_bytes, 65_535) if config.log.key_file else config.max_record_bytes
        limits = dataclasses.replace(DEFAULT_LIMITS, max_record_bytes=max_bytes,
                                     max_skew_ms=int(config.max_skew_s * 1000))
        self.verifier = Verifier(self.trust, config.mqtt.topic_prefix, limits)
        self._queue: queue.Queue[Any] = queue.Queue(config.queue_size)
        self.identity: Identity | None = None
        self._receipts: ReceiptBatcher | None = None
        self._hold: Hold[Inbound] = Hold(HoldLimits(config.hold.max_records, config.hold.max_bytes,
                                                    config.hold.max_age_s))
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._clock_states: Counter[str] = Counter()
        self._devices: set[str] = set()
        self._by_digest: Counter[str] = Counter()  # results per model digest (with [models])
        self.models: ModelRegistry | None = ModelRegistry(config.models, config.store.url) \
            if config.models.repository_url else None
        self._touched: dict[str, float] = {}
        self._accepting = False
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._link: MqttLink | None = None
        self._failure: BaseException | None = None
        self.heartbeat = time.monotonic()
        self.log_integrator: LogIntegrator | None = None  # when [log] is configured
        self._receipt_log: ReceiptLog | None = None
        self._observers: list[BatchObserver] = []
        self._observer_failures: Counter[str] = Counter()
        self._last_commit_s = 0.0
        self._web: Any = None  # aggregator.web.server.WebServer when [web] is enabled
        self._web_routes: list[Any] = []
        self._web_nav: list[tuple[str, str]] = []
        self._log_store: Store | None = None  # the web thread's own connection for the log routes
        self.fleet: Any = None  # aggregator.web.tracker.FleetTracker when [web] tracks the fleet

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Open the store, load trust, connect and subscribe. Raises an ``AggregatorError`` on failure."""
        cfg = self.config
        if self._trust_given is None and (cfg.trust.ca_files or cfg.trust.registry_files):
            self.trust = load_trust_store(cfg.trust.ca_files, cfg.trust.crl_files, cfg.trust.registry_files,
                                          cfg.trust.bundle_files)
            self.verifier.trust = self.trust
        self._start_identity()
        self._start_log()
        self._store = open_store(cfg.store.url, schema=cfg.store.schema)
        self._restore_keys(self._store)
        if self.models is not None:
            self.models.start()  # a failed first refresh is logged; results are not flagged until one succeeds
        try:
            self._start_web()
        except Exception:
            self._stop_web()
            self._store.close()
            raise
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name="aggregator-store", daemon=True)
        self._thread.start()
        subs = subscriptions(cfg.mqtt.topic_prefix, cfg.mqtt.shared_group or None)
        self._link = MqttLink(cfg.mqtt, subs, self._enqueue, self._clock)
        try:
            self._link.start(timeout)
        except Exception:
            self._accepting = False
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._stop_web()
            self._store.close()
            raise
        log.info("aggregator started: store %s, %d subscriptions, group %r", self._store.where, len(subs),
                 cfg.mqtt.shared_group or None)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop taking deliveries, commit and acknowledge what is queued, disconnect. Idempotent."""
        if self._thread is None:
            return
        self._accepting = False
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("store thread did not finish within %.0fs; un-acknowledged deliveries will be redelivered",
                      timeout)
        if self._link is not None:
            self._link.stop()
        if self.models is not None:
            self.models.stop()
        self._stop_web()
        if self._store is not None:
            self._store.close()
        self._thread = None
        log.info("aggregator stopped: %s", self.stats().as_dict())

    def __enter__(self) -> AggregatorService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        """True while the store thread runs (the CLI's watchdog pings only then)."""
        return self._thread is not None and self._thread.is_alive() and self._failure is None

    def stats(self) -> AggregatorStats:
        """Counters since start (in memory; ``edge-aggregator stats`` reads the durable ones)."""
        with self._lock:
            c = dict(self._counts)
            rejected = dict(self._rejected)
            clocks = dict(self._clock_states)
            devices = len(self._devices)
        unlisted = self.unlisted_models()
        c["unlisted_model_results"] = sum(unlisted.values())
        return AggregatorStats(rejected=rejected, clock_states=clocks, queue_depth=self._queue.qsize(),
                               devices=devices, unlisted_models=unlisted,
                               **{k: c.get(k, 0) for k in AggregatorStats.__dataclass_fields__
                                  if k not in ("rejected", "clock_states", "queue_depth", "devices",
                                               "unlisted_models")})

    # ---- observers and the web page (aggregator.web, DESIGN §12) ---------------------------------------

    def add_observer(self, observer: BatchObserver) -> None:
        """Follow every committed batch and published receipt (add before ``start()`` to see the retained
        birth records delivered at subscribe time)."""
        self._observers.append(observer)

    def add_web_routes(self, routes: Sequence[Any], nav: Sequence[tuple[str, str]] = ()) -> None:
        """Mount more routes on the web app (Starlette ``Route``/``Mount``), with optional navigation links
        (label, path); call before ``start()``."""
        self._web_routes.extend(routes)
        self._web_nav.extend(nav)

    @property
    def web_url(self) -> str | None:
        """Where the web app listens (``http(s)://host:port``), when it runs."""
        return self._web.url if self._web is not None else None

    def link_state(self) -> dict[str, Any]:
        """The broker connection as the web page and /metrics show it."""
        link = self._link
        if link is None:
            return {"connected": False, "last_error": ""}
        return {"connected": link.connected, "last_error": link.last_error}

    def _start_web(self) -> None:
        web = self.config.web
        if not web.tracking:
            return
        from aggregator.web.tracker import FleetTracker  # noqa: PLC0415 - only when [web] is on

        self.fleet = FleetTracker(self.config.store.url, self.config.store.schema, trust=self.trust,
                                  clock=self._clock, keep_s=web.device_window_s).open()
        self.add_observer(self.fleet)
        if not web.enabled:
            return
        try:
            from aggregator.web.server import WebServer  # noqa: PLC0415 - optional extra "web"
        except ImportError as e:
            raise ConfigError(self.config.source_file or "<config>", [(
                "web.enabled", f"the web page needs the optional extra: pip install 'depin-edge-agent[web]' ({e})")]
            ) from e
        routes, nav = list(self._web_routes), list(self._web_nav)
        if self.config.log.key_file:  # the transparency log, read-only, in C2SP tlog-tiles layout under /log
            from starlette.routing import Mount  # noqa: PLC0415 - optional extra "web"

            from aggregator.tlog.http import routes as log_routes  # noqa: PLC0415

            self._log_store = open_store(self.config.store.url, schema=self.config.store.schema, create=False)
            routes.append(Mount("/log", routes=log_routes(self._log_store)))
            nav.append(("log checkpoint", "/log/checkpoint"))
        self._web = WebServer(self, self.fleet, web, extra_routes=routes, nav=nav)
        self._web.start()
        log.info("web page at %s", self._web.url)

    def _stop_web(self) -> None:
        if self._web is not None:
            self._web.stop()
            self._web = None
        if self._log_store is not None:
            self._log_store.close()
            self._log_store = None
        if self.fleet is not None:
            if self.fleet in self._observers:
                self._observers.remove(self.fleet)
            self.fleet.close()
            self.fleet = None

    def _observe(self, what: str, *args: Any) -> None:
        for obs in list(self._observers):
            try:
                getattr(obs, what)(*args)
            except Exception:
                name = type(obs).__name__
                self._observer_failures[name] += 1
                if self._observer_failures[name] in (1, 10, 100) or self._observer_failures[name] % 1000 == 0:
                    log.exception("observer %s failed (%d times)", name, self._observer_failures[name])

    # ---- network thread ------------------------------------------------------------------------------------

    def _enqueue(self, item: Inbound) -> None:
        if not self._accepting:
            return  # not acknowledged: the broker redelivers it to our session next time
        if self.config.mqtt.broker_ack == "on_receive" and self._link is not None:
            self._link.ack(item.mid, item.qos)
        self._queue.put(item)  # blocks when full: back-pressure on the broker connection

    # ---- store thread --------------------------------------------------------------------------------------

    def _start_identity(self) -> None:
        """Receipts need [identity]. Without it this worker stores and verifies but acknowledges nothing: an
        unsigned ack would let anyone who can write the ack topic make devices delete unstored records."""
        self.identity = load_identity(self.config.identity, self.trust.cas, datetime.now(timezone.utc),
                                      self.trust.bundle)
        if self.identity is None:
            log.warning("no [identity] configured: publishing NO receipts, so devices in delivery = aggregator keep "
                        "every record (edge-provision aggregator init, then set identity.key and identity.cert_file)")
            return
        self._receipts = ReceiptBatcher(self.identity.aggregator_id, self.config.ack_interval_ms)
        log.info("signing receipts as %s", self.identity.subject)

    def _start_log(self) -> None:
        """[log]: the transparency log (DESIGN §9); receipts then carry log positions."""
        lg = self.config.log
        if not lg.key_file:
            return
        signer = load_log_signer(lg.key_file, lg.origin)
        self.log_integrator = LogIntegrator(signer, lg, self.config.mqtt.client_id, self._publish_checkpoint)
        self._receipt_log = ReceiptLog()
        log.info("transparency log %s, verifier key %s", lg.origin, signer.vkey)

    def _publish_checkpoint(self, note: bytes) -> None:
        if self._link is not None:
            self._link.publish(f"{self.config.mqtt.topic_prefix}/_log/checkpoint", note, retain=True)

    def _tick_log(self) -> None:
        """Integrate and checkpoint (when this worker leads); hand waiting devices back to the batcher."""
        assert self._store is not None and self.log_integrator is not None and self._receipt_log is not None
        self.log_integrator.tick(self._store, self._now_ms())
        if self._receipts is None:
            return
        try:
            for device_id, (seq, epoch) in self._receipt_log.poll(self._store).items():
                self._receipts.note(device_id, seq, epoch, force=True)
        except StoreError as e:
            log.warning("cannot read the latest checkpoint: %s", e)

    def _restore_keys(self, store: Store) -> None:
        now = datetime.now(timezone.utc)
        for device_id, kid, chain in store.learned_keys():
            try:
                self.trust.add(self.trust.learn_chain(device_id, chain, kid, now))
            except Rejected as e:
                log.warning("not restoring the key of %s learned earlier: %s (%s)", device_id, e, e.reason)

    def _run(self) -> None:
        assert self._store is not None
        refresh_at = time.monotonic()
        reload_at = refresh_at + self.config.trust.reload_s
        stopping = False
        try:
            while True:
                self.heartbeat = time.monotonic()
                batch, stopping = self._take(stopping)
                if batch:
                    self._process(batch)
                self._expire_held()
                if self.log_integrator is not None:
                    self._tick_log()
                now = time.monotonic()
                if self.config.mqtt.shared_group and now >= refresh_at:
                    self._refresh_acks(now)
                    refresh_at = now + self.config.ack_refresh_s
                if self.config.trust.reload_s and now >= reload_at:
                    self._reload_trust()
                    reload_at = now + self.config.trust.reload_s
                self._publish_acks(final=stopping and self._queue.empty())
                if stopping and self._queue.empty():
                    return
        except BaseException as e:  # a bug: record it so the watchdog and the CLI notice
            self._failure = e
            log.exception("store thread failed")

    def _take(self, stopping: bool) -> tuple[list[Inbound], bool]:
        due = self._receipts.next_due_ms() if self._receipts is not None else None
        wait = 0.05 if due is None else max(0.0, (due - self._now_ms()) / 1000)
        batch: list[Inbound] = []
        try:
            item = self._queue.get(timeout=wait) if not stopping else self._queue.get_nowait()
        except queue.Empty:
            return batch, stopping
        while True:
            if item is _STOP:
                stopping = True
            else:
                batch.append(item)
            if len(batch) >= self.config.batch_max:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return batch, stopping

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _process(self, batch: list[Inbound]) -> None:
        verified: list[VerifiedRecord] = []
        rejects: list[RejectEvent] = []
        presence: list[PresenceEvent] = []  # status-topic events in arrival order, whatever dedup says
        birth: set[str] = set()  # devices whose key is unknown: the receipt asks for the birth record
        held = 0
        for item in batch:
            try:
                if item.payload == OFFLINE_PAYLOAD and item.topic.endswith("/status"):
                    info = parse_topic(item.topic, self.config.mqtt.topic_prefix)
                    presence.append(PresenceEvent(info.device_id, False, item.received_ms))
                    continue
                vr = self.verifier.verify(item.topic, item.payload, item.received_ms)
                verified.append(vr)
                if vr.record.kind == labels.KIND_STATUS:
                    presence.append(PresenceEvent(vr.device_id, True, vr.received_ms))
            except Rejected as e:
                if e.reason == "unknown_kid" and e.device_id:
                    birth.add(e.device_id)
                    if self._hold.add(e.device_id, item, len(item.payload), time.monotonic()):
                        held += 1
                        continue
                    e.reason = "hold_full"
                rejects.append(RejectEvent(e.device_id, e.reason, item.received_ms, str(e), e.seq, e.epoch))
                log.debug("rejected %s on %s: %s", e.reason, item.topic[:120], e)
            except Exception as e:  # never let one record stop the loop
                log.exception("unexpected error verifying a record on %s", item.topic[:120])
                rejects.append(RejectEvent("", "internal_error", item.received_ms, repr(e)[:200]))
        result = self._commit(verified, rejects, presence)
        if result is None:
            return  # stopping while the store is down: nothing acked, the broker redelivers
        if self._observers:
            offline = [(e.device_id, e.received_ms) for e in presence if not e.online]
            self._observe("batch_committed", CommittedBatch(verified, rejects, offline, result, self._last_commit_s))
        assert self._link is not None
        if self.config.mqtt.broker_ack == "after_commit":
            for item in batch:
                self._link.ack(item.mid, item.qos)
        self._note_settled(result, birth)
        now = time.monotonic()
        with self._lock:
            c = self._counts
            c["received"] += len(batch)
            c["verified"] += len(verified)
            c["batches"] += 1
            c["offline_events"] += sum(1 for e in presence if not e.online)
            c["held"] += held
            c["equivocations"] += result.equivocations
            for name in DEVICE_COUNTERS:
                c[name] += getattr(result, name)
            self._rejected.update(result.rejected)
            self._clock_states.update(result.clock_states)
            for vr in verified:
                self._devices.add(vr.device_id)
                self._touched[vr.device_id] = now
        if self.models is not None:
            self._flag_unlisted(verified)
        for reason in ("epoch_regression",):
            if result.rejected.get(reason):
                log.debug("%d record(s) rejected by the store: %s", result.rejected[reason], reason)
        released = [r for d in sorted({vr.device_id for vr in verified if vr.learned}) for r in self._hold.release(d)]
        if released:  # the birth record taught us their key: verify them again (already PUBACKed: qos 0 here)
            with self._lock:
                self._counts["released"] += len(released)
            self._process([Inbound(r.topic, r.payload, 0, 0, r.retain, r.received_ms) for r in released])

    def _flag_unlisted(self, verified: list[VerifiedRecord]) -> None:
        """Count results per model digest; a digest the registry does not list wakes it for a refresh.

        Whether a digest is flagged is decided against the latest verified list when asked (``stats()``), so
        a release the devices saw a moment before the aggregator did is not flagged for good, and a revoked
        version's results become unlisted."""
        assert self.models is not None
        new = []
        with self._lock:
            for vr in verified:
                digest = vr.record.model_sha256
                if vr.record.kind != "result" or digest is None:
                    continue
                h = bytes(digest).hex()
                if h not in self._by_digest:
                    if len(self._by_digest) >= MAX_TRACKED_DIGESTS:
                        h = "other"
                    else:
                        new.append((vr.device_id, bytes(digest)))
                self._by_digest[h] += 1
        for device_id, digest in new:
            if self.models.listed(digest) is False:
                log.warning("results from model digest %s (first from device %s) are not a signed model target "
                            "as of the last refresh; refreshing", digest.hex(), device_id)
                self.models.wake()

    def unlisted_models(self) -> dict[str, int]:
        """Results per model digest that the latest verified list of signed targets does not hold."""
        if self.models is None:
            return {}
        with self._lock:
            counts = dict(self._by_digest)
        return {h: n for h, n in counts.items()
                if h == "other" or self.models.listed(bytes.fromhex(h)) is False}

    def _note_settled(self, result: BatchResult, birth: set[str]) -> None:
        """Feed the committed settled points to the receipt batcher."""
        if self._receipts is None:
            return
        waiting = self._hold.devices() | birth
        points = dict(result.acks)
        missing = [d for d in waiting if d not in points]
        if missing:
            try:
                assert self._store is not None
                points.update(self._store.acks_for(missing))
            except Exception as e:
                log.warning("cannot read settled points for a birth request: %s", e)
        for device_id, (seq, epoch) in points.items():
            self._receipts.note(device_id, seq, epoch, rejected=result.settled_rejects.get(device_id),
                                birth=device_id in waiting, force=device_id in result.force_ack)
        for device_id in missing:
            if device_id not in points:
                self._receipts.note(device_id, 0, 0, birth=True)

    def _expire_held(self) -> None:
        """Held records that waited too long: counted (transient), never settled; the device re-sends."""
        expired = self._hold.expire(time.monotonic())
        if not expired:
            return
        events = [RejectEvent(d, "hold_expired", item.received_ms, "no birth record arrived for its key")
                  for d, item in expired]
        try:
            assert self._store is not None
            self._store.count_rejects(events)
        except StoreError as e:
            log.warning("cannot count expired held records: %s", e)
        with self._lock:
            self._rejected.update(e.reason for e in events)

    def _commit(self, verified: list[VerifiedRecord], rejects: list[RejectEvent],
                presence: list[PresenceEvent]) -> BatchResult | None:
        assert self._store is not None
        delay = 0.1
        while True:
            try:
                t0 = time.perf_counter()
                result = self._store.commit_batch(verified, rejects, presence)
                self._last_commit_s = time.perf_counter() - t0
                return result
            except StoreError as e:
                with self._lock:
                    self._counts["store_errors"] += 1
                log.error("%s; retrying in %.1fs", e, delay)
                if not self._accepting and self._thread is not None and delay > 5:
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                self._reconnect_store()

    def _reconnect_store(self) -> None:
        try:
            assert self._store is not None
            if self._store.dialect == "postgresql":
                self._store.close()
                self._store = open_store(self.config.store.url, schema=self.config.store.schema)
        except StoreError as e:
            log.error("store still unavailable: %s", e)

    def _publish_receipts(self, final: bool) -> None:
        assert self._receipts is not None and self.identity is not None and self._link is not None
        now_ms = self._now_ms()
        due = self._receipts.flush(now_ms) if final else self._receipts.due(now_ms)
        if not due:
            return
        if self._receipt_log is not None:
            due = self._with_log(due)
        prefix, ident = self.config.mqtt.topic_prefix, self.identity
        infos = [self._link.publish(ack_topic(prefix, r.dev), seal_receipt(ident.signer, ident.chain_der, r))
                 for r in due]
        if self._receipt_log is not None and due:
            try:
                assert self._store is not None
                self._receipt_log.published(self._store, due)
            except StoreError as e:
                log.warning("cannot record the checkpoint sizes sent: %s", e)
        with self._lock:
            self._counts["acks_published"] += len(due)
        if self._observers:
            self._observe("receipts_published", due)
        if final:
            for info in infos:
                try:
                    info.wait_for_publish(2.0)
                except (RuntimeError, ValueError):
                    log.warning("final receipt not confirmed by the broker before shutdown")

    def _with_log(self, due: list[Receipt]) -> list[Receipt]:
        """Receipts with their log positions; on a store failure none now (the batcher tries again)."""
        assert self._store is not None and self._receipt_log is not None
        try:
            return self._receipt_log.attach(self._store, due)
        except StoreError as e:
            log.warning("receipts held back: cannot build their log positions: %s", e)
            for r in due:
                self._receipt_log.waiting[r.dev] = (r.settled, r.epoch)
            return []

    def _publish_acks(self, *, final: bool = False) -> None:
        if self._receipts is not None:
            self._publish_receipts(final)

    def _refresh_acks(self, now: float) -> None:
        """Shared subscription: another worker may have advanced a device; ack what the store now holds."""
        assert self._store is not None
        recent = [d for d, t in self._touched.items() if now - t < 30.0]
        if not recent or self._receipts is None:
            return
        try:
            for device_id, (seq, epoch) in self._store.acks_for(recent).items():
                self._receipts.note(device_id, seq, epoch)
        except Exception as e:
            log.warning("cannot refresh acks from the store: %s", e)
            self._reconnect_store()

    def _reload_trust(self) -> None:
        cfg = self.config.trust
        if self._trust_given is not None:
            return
        try:
            self.trust.set_crls([load_crl(f) for f in cfg.crl_files])
            for f in cfg.registry_files:
                for key in load_registry(f):
                    self.trust.add(key)
        except TrustError as e:
            log.error("trust reload failed, keeping the previous CRLs and registry: %s", e)

"""Wires the agent together and runs it: outbox, signer, pipelines, committer, MQTT link, telemetry.

Start order makes the birth record the first record of every boot: open the outbox and bump the epoch,
open the key, load the models (a bad model fails before anything is published), start the committer and
the link, commit the birth record, then start the pipelines. Stop order is the reverse, so every window
already inferred is committed before the process exits.
"""

from __future__ import annotations

import logging
import os
import platform
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from agent import __version__
from agent.clock import ClockState
from agent.committer import Committer
from agent.delivery import ReceiptVerified
from agent.errors import InferenceError
from agent.inference import Model, runtime_name
from agent.metrics import MetricsExporter, registry_for
from agent.model_meta import ModelMeta, load_model_meta
from agent.outbox import Draft, Outbox, OutboxReader
from agent.pipeline import PipelineRunner
from agent.publisher import MqttLink, record_budget
from agent.receipts import ReceiptChecker, receipt_doc
from agent.sdnotify import Notifier
from agent.settings import AgentConfig, PipelineConfig
from agent.sources import Source, make_source
from agent.status import FORMAT as STATUS_FORMAT
from agent.status import StatusWriter
from agent.telemetry import TelemetryBuilder
from agent.topics import Topics
from agent.updates.state import UpdateState
from agent.updates.updater import ModelUpdater, startup_model
from agent.watchdog import StallingSource, StallSwitch, Watchdog, stall_s_for
from envelope import Signer
from provisioning import FileKeyUri, open_signer, parse_key_uri

log = logging.getLogger(__name__)


COMMIT_RETRY_MAX_S = 5.0  # the committer's longest backoff between failed commits


def load_chain(path: str) -> tuple[bytes, ...]:
    """DER certificates from a PEM file (device certificate first)."""
    # Imported here: cryptography.x509 (and its verification stack) costs RSS in every agent, and only an
    # agent with a certificate chain (mTLS, x5chain in birth records) ever loads one.
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    with open(path, "rb") as f:
        certs = x509.load_pem_x509_certificates(f.read())
    return tuple(c.public_bytes(serialization.Encoding.DER) for c in certs)


@dataclass
class Health:
    """What the watchdog needs: is every stage making progress?"""

    healthy: bool
    reasons: list[str]
    degraded: list[str] = field(default_factory=list)  # working around a fault (e.g. disk full): keep pinging


class Agent:
    """The running agent. ``start()``/``stop()`` for embedding (tests, demo); ``run()`` for the CLI."""

    def __init__(self, cfg: AgentConfig, *, signer: Signer | None = None) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.mqtt.topic_prefix, cfg.device_id)
        self._signer = signer
        self.drafts: queue.Queue[Draft] = queue.Queue(maxsize=max(p.queue_windows for p in cfg.pipelines) * 4)
        self.clock_state = ClockState()
        self.pipelines: list[PipelineRunner] = []
        self.started_at = 0.0
        self._stop = threading.Event()
        self._telemetry_thread: threading.Thread | None = None
        self.outbox: Outbox | None = None
        self.committer: Committer | None = None
        self.link: MqttLink | None = None
        self.epoch = 0
        self.notifier = Notifier()
        self.stall_s = stall_s_for(cfg.watchdog.stall_s, self.notifier.watchdog_s)
        self.watchdog = Watchdog(self.notifier, lambda: self.health(self.stall_s), self.status_text)
        self._stall = StallSwitch.from_env()
        self._status_builder = TelemetryBuilder()
        self._status_writer = StatusWriter(cfg.status.path, cfg.status.interval_s, self.status_doc) \
            if cfg.status.path else None
        self.metrics: MetricsExporter | None = None
        self.receipts: ReceiptChecker | None = None
        self._reader: OutboxReader | None = None
        self._low_water_reader: OutboxReader | None = None
        self._low_water_lock = threading.Lock()
        self.committer_stop_timeout_s = 10.0
        self.link_drain_timeout_s = 2.0
        self.updater: ModelUpdater | None = None
        self.update_state: UpdateState | None = None
        self._shipped_ids: dict[str, str] = {}
        self._signer_obj: Signer | None = None
        self._fail_start_at: str | None = None  # fault injection for tests: "committer", "link", "pipelines"...

    # ----- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every stage; on any failure, stop what already started (no thread left) and re-raise."""
        try:
            self._start()
        except BaseException:
            log.error("agent start failed; stopping what had started")
            self.stop()
            raise

    def _start(self) -> None:
        cfg = self.cfg
        self.started_at = time.monotonic()
        self.outbox = Outbox(cfg.outbox.path, cfg.outbox.max_bytes)
        self.epoch = self.outbox.begin_epoch()
        signer = self._signer or open_signer(cfg.key_uri)
        models = []
        if cfg.updates is not None:
            os.makedirs(cfg.updates.dir, exist_ok=True)
            self.update_state = UpdateState.load(os.path.join(cfg.updates.dir, "state.json"))
        for pc in cfg.pipelines:
            meta, model = self._startup_model(pc)
            models.append((pc, meta, model))
        longest_topic = max([self.topics.result(pc.stream) for pc in cfg.pipelines]
                            + [self.topics.telemetry, self.topics.status, self.topics.gap], key=len)
        budget = record_budget(cfg.mqtt.max_packet_bytes, longest_topic)
        self._reader = reader = OutboxReader(cfg.outbox.path)
        self._low_water_reader = OutboxReader(cfg.outbox.path)
        aggregator = cfg.outbox.delivery == "aggregator"
        kept = None
        if aggregator:
            self.receipts = ReceiptChecker(cfg.device_id, cfg.receipts.ca_file, cfg.receipts.crl_file,
                                           cfg.receipts.path, log_vkey=cfg.receipts.log_vkey)
            if not self.receipts.enabled:
                log.error("delivery = aggregator but no fleet CA for receipts ([receipts] ca_file or mqtt.ca_file):"
                          " no receipt can be verified, so nothing will be deleted from the outbox")
            kept = self.receipts.load_kept(time.monotonic())
        settled = self.outbox.acked_seq if aggregator else 0
        self.link = MqttLink(cfg.mqtt, cfg.device_id, cfg.outbox.delivery, reader, epoch=self.epoch,
                             settled=settled, last_seq=self.outbox.last_seq, on_receipt=self._on_receipt,
                             on_settled=self._on_settled, on_puback=self._on_puback,
                             resend_after_s=cfg.outbox.resend_after_s, inflight_max=cfg.outbox.inflight_max,
                             receipts=self.receipts, kept_receipt=kept,
                             degraded_after_s=cfg.mqtt.degraded_after_s)
        self.committer = Committer(self.outbox, signer, cfg.device_id, self.topics, self.drafts, self.link.notify,
                                   commit_batch=cfg.outbox.commit_batch, max_record_bytes=budget,
                                   linger_s=cfg.outbox.commit_linger_s)
        self.committer.on_commit = self._on_commit
        self.committer.gap_from_ack = aggregator
        if self.receipts is not None:
            self.committer.persist_receipt = self._persist_receipt
        if kept is not None and kept.settled > settled:  # stopped between keeping a receipt and deleting
            self.committer.ack(kept.settled)
        if self._stall is not None:
            self.committer.stall_hook = self._stall.wait
        if self._fail_start_at == "committer":
            raise RuntimeError("injected start failure (committer)")
        self.committer.start()
        if self._fail_start_at == "link":
            raise RuntimeError("injected start failure (link)")
        self.link.start()
        self._signer_obj = signer
        for pc, meta, model in models:
            source: Source = make_source(pc.stream, pc.source)
            if self._stall is not None:
                source = StallingSource(source, self._stall, f"pipeline:{pc.stream}")
            runner = PipelineRunner(pc, meta, model, source, self.topics.result(pc.stream),
                                    self.drafts, self.clock_state.get)
            runner.model_id = self._shipped_ids.get(pc.stream, meta.name)
            self.pipelines.append(runner)
        if cfg.updates is not None and self.update_state is not None:
            self.updater = ModelUpdater(cfg.updates, cfg.device_id, self.pipelines, self.update_state,
                                        load=self._load_update, receipt_time_s=self._receipt_time,
                                        on_change=self._models_changed, before_switch=self._before_switch)
        self.drafts.put(self._birth_draft(signer))
        for runner in self.pipelines:
            runner.start()
        if self.updater is not None:
            self.updater.start()
        if self._fail_start_at == "pipelines":
            raise RuntimeError("injected start failure (pipelines)")
        self._telemetry_thread = threading.Thread(target=self._telemetry_loop, name="telemetry", daemon=True)
        self._telemetry_thread.start()
        if self._status_writer is not None:
            self._status_writer.start()
        if cfg.metrics.mode != "off":
            self.metrics = MetricsExporter(cfg.metrics, registry_for(self, __version__, self.clock_state.get))
            self.metrics.start()
        if self._fail_start_at == "watchdog":
            raise RuntimeError("injected start failure (watchdog)")
        self.notifier.ready(self.status_text())
        self.watchdog.start()
        log.info("agent %s started: device %s, epoch %d, %d pipeline(s), delivery %s", __version__,
                 cfg.device_id, self.epoch, len(self.pipelines), cfg.outbox.delivery)

    def stop(self) -> None:
        """Stop sources, commit what was inferred, let in-flight publishes finish, disconnect.

        Every thread is joined; what a thread uses (outbox, reader, wake-up pipe) is closed only once that
        thread has ended. A thread whose join timed out keeps its resources (logged): closing the outbox
        under a hung commit would turn a stall into a crash, or worse, a write to a reused descriptor.
        """
        self.notifier.stopping()
        self._stop.set()
        self.watchdog.stop()
        if self._stall is not None:
            self._stall.close()
        if self.updater is not None:
            self.updater.stop()
        for runner in self.pipelines:
            runner.stop()
        for runner in self.pipelines:
            runner.join(5.0)
        committer_done = True
        if self.committer:
            self.committer.stop(self.committer_stop_timeout_s)
            committer_done = not self.committer.alive
            if not committer_done:
                log.error("committer did not stop within %.0fs (a hung commit?); leaving the outbox open",
                          self.committer_stop_timeout_s)
        link_done = True
        if self.link:
            link_done = self.link.stop(self.link_drain_timeout_s)
        if self._telemetry_thread is not None and self._telemetry_thread.is_alive():
            self._telemetry_thread.join(5.0)
        if self._status_writer is not None:
            self._status_writer.stop()
            self._status_writer.write_once()  # the final counts, with a PID that is about to be gone
        if self.metrics is not None:
            self.metrics.stop()
        if link_done and self._reader is not None:
            self._reader.close()
        if self._low_water_reader is not None:
            with self._low_water_lock:
                self._low_water_reader.close()
                self._low_water_reader = None
        if self.outbox and committer_done:
            self.outbox.close()
        self.notifier.close()
        log.info("agent stopped")

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or every source has ended). Returns the exit code."""
        def _signal(signum: int, _frame: Any) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        self.start()
        try:
            while not self._stop.wait(0.5):
                if self.pipelines and all(r.done.is_set() for r in self.pipelines):
                    failed = [r for r in self.pipelines if r.failed]
                    if failed:
                        log.error("pipeline(s) %s failed; exiting so the service manager restarts the agent",
                                  ", ".join(r.cfg.stream for r in failed))
                        self.stop()
                        return 1
                    log.info("every source has ended")
                    break
        finally:
            if not self._stop.is_set() or (self.committer and self.committer.alive):
                self.stop()
        return 0

    # ----- records the agent makes itself -------------------------------------------------------------
    def _birth_draft(self, signer: Signer) -> Draft:
        chain = load_chain(self.cfg.certificate) if self.cfg.certificate else ()
        key_tier = "file" if isinstance(parse_key_uri(self.cfg.key_uri), FileKeyUri) else "pkcs11"
        payload = {
            "status": "online",
            "agent": __version__,
            "python": platform.python_version(),
            "runtime": runtime_name(),
            "machine": platform.machine(),
            "key_tier": key_tier,
            "alg": signer.alg,
            "epoch": self.epoch,
            "delivery": self.cfg.outbox.delivery,
            "low_water": self.low_water(),
            "log_size": self.log_size(),
            "models": self.models_info(),
            "updates": self.updater.status_doc() if self.updater is not None else {"enabled": False},
        }
        return Draft(kind="status", stream="status", topic=self.topics.status, payload=payload,
                     capture_ms=int(time.time() * 1000), clock_state=self.clock_state.get(), retain=True,
                     x5chain=chain)

    # ----- models and their updates --------------------------------------------------------------------
    def _startup_model(self, pc: PipelineConfig) -> tuple[ModelMeta, Model]:
        """The committed update of a pipeline's model when there is a usable one, else the shipped model."""
        shipped = load_model_meta(pc.metadata)
        self._shipped_ids[pc.stream] = shipped.name
        sm = startup_model(pc, shipped, self.cfg.updates, self.update_state)
        if sm.note:
            log.error("pipeline %s: %s; running the shipped model %s", pc.stream, sm.note, pc.model)
        if sm.source == "update":
            try:
                model = Model.load(sm.path, sm.meta, num_threads=pc.num_threads, delegate=pc.delegate)
                log.info("pipeline %s: running model %s version %s from a signed update", pc.stream, sm.meta.name,
                         sm.meta.version)
                return sm.meta, model
            except InferenceError as e:
                log.error("pipeline %s: the committed update does not load (%s); running the shipped model %s",
                          pc.stream, e, pc.model)
        return shipped, Model.load(pc.model, shipped, num_threads=pc.num_threads, delegate=pc.delegate)

    def _load_update(self, path: str, meta: ModelMeta, runner: PipelineRunner) -> Model:
        return Model.load(path, meta, num_threads=runner.cfg.num_threads, delegate=runner.cfg.delegate)

    def _receipt_time(self) -> float | None:
        r = self.link.core.last_receipt if self.link is not None else None
        return r.time_ms / 1000.0 if r is not None else None

    def _before_switch(self) -> None:
        if self._stall is not None:
            self._stall.wait("update:switch")

    def _models_changed(self) -> None:
        """A switch, commit or refusal: a new birth record says which models run now."""
        if self.committer is not None and self._signer_obj is not None:
            self.committer.put_urgent(self._birth_draft(self._signer_obj))

    def models_info(self) -> list[dict[str, Any]]:
        """Per pipeline: the model that runs (id, version, digest) and its update state."""
        upd = self.updater.status_doc()["models"] if self.updater is not None else {}
        out = []
        for r in self.pipelines:
            u = upd.get(r.model_id, {})
            out.append({"stream": r.cfg.stream, "model": r.meta.name, "version": r.meta.version,
                        "sha256": r.model.model_sha256.hex(), "labels": list(r.labels),
                        "delegate": r.model.delegate_state.doc(),
                        "pending": u.get("pending"), "refused": u.get("refused", {}),
                        "reverted": u.get("reverted", {})})
        return out

    def _on_commit(self, result: Any) -> None:
        assert self.link is not None
        for row in result.rows:
            if row.retain and row.topic == self.topics.status:
                self.link.set_birth(row)

    def _on_receipt(self, receipt: ReceiptVerified) -> None:
        if self.committer:
            self.committer.keep_receipt(receipt)

    def _persist_receipt(self, receipt: object) -> None:
        assert self.receipts is not None and isinstance(receipt, ReceiptVerified)
        self.receipts.keep(receipt)

    def _on_settled(self, seq: int) -> None:
        if self.committer:
            self.committer.ack(seq)

    def log_size(self) -> int | None:
        """Size of the newest log checkpoint this device verified (None: not witnessing the log).

        Carried in birth and telemetry so that the aggregator starts the next consistency proof there.
        """
        w = self.receipts.witness if self.receipts is not None else None
        return None if w is None or w.newest is None else int(w.newest.size)

    def low_water(self) -> int:
        """The oldest seq the outbox still holds (the next seq when empty): carried in birth and telemetry."""
        ob = self.outbox
        nxt = (ob.last_seq + 1) if ob else 1
        with self._low_water_lock:
            reader = self._low_water_reader
            if reader is None:
                return nxt
            try:
                first = reader.first_seq()
            except Exception:  # a busy or broken outbox: the conservative answer
                return (ob.acked_seq + 1) if ob else 1
        return first if first is not None else nxt

    def _on_puback(self, seqs: list[int]) -> None:
        if self.committer:
            self.committer.pubacked(seqs)

    def _telemetry_loop(self) -> None:
        builder = TelemetryBuilder()
        interval = self.cfg.telemetry.interval_s
        while not self._stop.wait(interval):
            try:
                payload = builder.build(self.snapshot())
            except Exception:
                log.exception("telemetry snapshot failed")
                continue
            draft = Draft(kind="telemetry", stream="telemetry", topic=self.topics.telemetry, payload=payload,
                          capture_ms=int(time.time() * 1000), clock_state=self.clock_state.get())
            if self.committer is not None:
                # Beside the pipelines' queue: telemetry must get through when that queue is full (disk full).
                self.committer.put_urgent(draft)

    # ----- introspection -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Live counters of every stage (for telemetry, `edge-agent status` and the demo)."""
        ob = self.outbox
        cm = self.committer
        ln = self.link
        return {
            "device_id": self.cfg.device_id,
            "epoch": self.epoch,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "pid": os.getpid(),
            "outbox": {
                "path": self.cfg.outbox.path,
                "depth": ob.depth if ob else 0,
                "bytes": ob.stored_bytes if ob else 0,
                "max_bytes": self.cfg.outbox.max_bytes,
                "last_seq": ob.last_seq if ob else 0,
                "acked_seq": ob.acked_seq if ob else 0,
                "evicted_records": ob.evicted_records if ob else 0,
                "evicted_bytes": ob.evicted_bytes if ob else 0,
                "refused_oversize": cm.stats.refused_oversize if cm else 0,
                "errors": cm.stats.outbox_errors if cm else 0,
                "healthy": cm.stats.healthy if cm else True,
                "last_error": cm.stats.last_error if cm else None,
                "committed": cm.stats.committed if cm else 0,
                "delivered": ob.delivered if ob else 0,
            },
            "low_water": self.low_water(),
            "mqtt": {
                "connected": ln.connected if ln else False,
                **(ln.counters_doc() if ln else {}),
                "last_error": ln.last_error if ln else None,
            },
            "receipt": {"delivery": self.cfg.outbox.delivery,
                        **receipt_doc(ln.core.last_receipt if ln else None),
                        "log": self.receipts.witness.doc() if self.receipts and self.receipts.witness else None},
            "pipelines": {
                r.cfg.stream: {
                    "windows": r.stats.windows,
                    "results": r.stats.results,
                    "errors": r.stats.errors,
                    "latencies_us": list(r.stats.latencies_us[-1024:]),
                    "latency_histogram": r.stats.latency_histogram.snapshot(),
                    "windowing": r.windower.counters(),
                    "source": r.source.counters(),
                    "model": {"id": r.model_id, "name": r.meta.name, "version": r.meta.version,
                              "sha256": r.model.model_sha256.hex(),
                              "trial": r.trial is not None and not r.trial.reverted,
                              "delegate": r.model.delegate_state.doc()},
                }
                for r in self.pipelines
            },
            "updates": self.updater.status_doc() if self.updater is not None else {"enabled": False},
            "queue_depth": self.drafts.qsize(),
        }

    def health(self, stall_s: float) -> Health:
        """Every stage alive and making progress within ``stall_s`` seconds (for the watchdog)."""
        now = time.monotonic()
        reasons: list[str] = []
        degraded: list[str] = []
        cm = self.committer
        if cm is None or not cm.alive:
            reasons.append("committer thread is not running")
        elif not cm.stats.waiting and now - cm.stats.last_progress > stall_s + (0.0 if cm.stats.healthy
                                                                                 else COMMIT_RETRY_MAX_S):
            reasons.append(f"committer stalled for {now - cm.stats.last_progress:.0f}s")
        elif not cm.stats.healthy:
            # Retrying with backoff is the right thing on a full disk, and a restart would not free space
            # (it would become a restart loop): report it, keep pinging. A commit that hangs is a stall.
            degraded.append(f"outbox not writable: {cm.stats.last_error}")
        for r in self.pipelines:
            if r.done.is_set() and r.failed:
                reasons.append(f"pipeline {r.cfg.stream} failed: {r.failed}")
            elif not r.done.is_set() and (stuck := r.stalled_for(now)) > stall_s:
                reasons.append(f"pipeline {r.cfg.stream} stalled for {stuck:.0f}s")
        if self.link is not None and not self.link.alive:
            reasons.append("MQTT link thread is not running")
        for r in self.pipelines:
            ds = r.model.delegate_state
            if ds.state == "cpu_fallback":
                degraded.append(f"pipeline {r.cfg.stream}: delegate {ds.library} not in use, running on the CPU "
                                f"({ds.error})")
        if self.updater is not None and self.updater.started and not self.updater.alive:
            degraded.append("model updater thread is not running (signed updates stopped)")
        if self.link is not None and self.link.health.degraded(now):
            lh = self.link.health
            why = f": {lh.detail} ({lh.cause})" if lh.cause else ""
            degraded.append(f"no broker connection for {lh.unconnected_s(now):.0f}s{why}")
        w = self.receipts.witness if self.receipts is not None else None
        if w is not None and w.evidence():
            degraded.append(f"log inconsistent: a receipt's log proof failed; nothing it settles is deleted "
                            f"(evidence {w.evidence()[-1]})")
        return Health(not reasons, reasons, degraded)

    def status_text(self) -> str:
        """One line for systemd's STATUS=: what a technician wants from `systemctl status`."""
        ob, cm, ln = self.outbox, self.committer, self.link
        text = (f"committed {cm.stats.committed if cm else 0}, outbox {ob.depth if ob else 0} rows "
                f"{(ob.stored_bytes if ob else 0) // 1024} KiB, acked {ob.acked_seq if ob else 0}, "
                f"mqtt {'up' if ln and ln.connected else 'down'}")
        if cm is not None and not cm.stats.healthy:
            text = f"DEGRADED: outbox not writable ({cm.stats.last_error}); " + text
        return text

    def status_doc(self) -> dict[str, Any]:
        """The document `edge-agent status` reads: the telemetry payload plus the watchdog's verdict."""
        h = self.health(self.stall_s)
        return {
            "format": STATUS_FORMAT,
            "written_at": round(time.time(), 3),
            "interval_s": self.cfg.status.interval_s,
            "pid": os.getpid(),
            "device_id": self.cfg.device_id,
            "agent": __version__,
            "healthy": h.healthy,
            "state": "unhealthy" if not h.healthy else ("degraded" if h.degraded else "healthy"),
            "reasons": h.reasons,
            "degraded": h.degraded,
            "watchdog": {"enabled": bool(self.notifier.watchdog_s), "interval_s": self.watchdog.interval_s,
                         "pings": self.watchdog.pings, "withheld": self.watchdog.withheld,
                         "stall_s": self.stall_s},
            "telemetry": self._status_builder.build(self.snapshot()),
        }

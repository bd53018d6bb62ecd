"""Prometheus metrics of the agent: a loopback HTTP port or a file for node-exporter's textfile collector.

A fleet operator already runs Prometheus; a device should show up there without a new agent on the box.
``[metrics] mode`` picks the way out (docs/metrics.md):

- ``http``: ``/metrics`` on a loopback address only (``127.0.0.1:9464`` by default). Nothing on the device
  is exposed to the network; a node-exporter or a Prometheus agent on the device scrapes it, or an SSH tunnel.
- ``textfile``: the same text rewritten atomically every ``interval_s`` into node-exporter's textfile
  directory (temp file in that directory, then ``os.replace``: the collector reads ``*.prom`` only, and never
  sees half a file). No port at all.

Values are read from ``Agent.snapshot()`` when they are collected (a scrape, a textfile write), so there is
no second set of counters to drift from telemetry and ``edge-agent status``. Inference latency is the one
exception: a histogram needs every observation, so each pipeline counts into a ``LatencyHistogram`` (pure,
below) as it infers. Names follow the Prometheus conventions: prefix ``edge_agent_``, base units in the name
(``_seconds``, ``_bytes``), ``_total`` on counters; ``families`` is pure (a snapshot in, metric families out)
and the tests parse its output with prometheus-client's own parser.

prometheus-client is imported only by the functions that need it.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import CollectorRegistry

    from agent.settings import MetricsConfig

__all__ = ["LATENCY_BUCKETS_S", "PREFIX", "LatencyHistogram", "MetricsExporter", "families", "render"]

log = logging.getLogger(__name__)

PREFIX = "edge_agent_"
# Inference latency buckets (seconds): the 1D-CNN runs in ~5-15 µs, MobileNet-class models in ~0.4-4 ms.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
)
RECEIPT_RESULTS = ("valid", "stale", "duplicate", "invalid")


class LatencyHistogram:
    """Cumulative latency counts per bucket (pure). Written by one pipeline thread, read by collections.

    The reader copies plain ints and floats; a collection that races one ``observe`` may see that one
    observation in ``count`` but not yet in its bucket, which Prometheus tolerates (the next scrape agrees).
    """

    def __init__(self, bounds_s: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        if list(bounds_s) != sorted(set(bounds_s)) or not bounds_s:
            raise ValueError(f"bucket bounds must be strictly increasing, got {list(bounds_s)}")
        self.bounds_s = tuple(float(b) for b in bounds_s)
        self._counts = [0] * (len(self.bounds_s) + 1)  # last: above the largest bound (+Inf only)
        self.count = 0
        self.sum_s = 0.0

    def observe_us(self, us: float) -> None:
        s = max(0.0, us) / 1e6
        self._counts[bisect.bisect_left(self.bounds_s, s)] += 1
        self.sum_s += s
        self.count += 1

    def snapshot(self) -> dict[str, Any]:
        """``{"buckets": [(le, cumulative count), ..., ("+Inf", count)], "sum_s": ..., "count": ...}``."""
        counts = list(self._counts)
        out: list[tuple[str, int]] = []
        acc = 0
        for bound, n in zip(self.bounds_s, counts, strict=False):
            acc += n
            out.append((_le(bound), acc))
        acc += counts[-1]
        out.append(("+Inf", acc))
        return {"buckets": out, "sum_s": self.sum_s, "count": acc}


def _le(bound: float) -> str:
    return repr(float(bound))


def _num(doc: Mapping[str, Any], key: str) -> float:
    v = doc.get(key, 0)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


def families(snap: Mapping[str, Any], *, version: str, clock_synced: bool | None = None,
             healthy: bool | None = None, now: float | None = None) -> list[Metric]:
    """Every agent metric family from an ``Agent.snapshot()`` (pure: the caller passes time and health)."""
    from prometheus_client.core import (  # noqa: PLC0415
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
    )

    from agent.link_health import CAUSES  # noqa: PLC0415

    now = time.time() if now is None else now
    ob: Mapping[str, Any] = snap.get("outbox", {})
    mq: Mapping[str, Any] = snap.get("mqtt", {})
    rc: Mapping[str, Any] = snap.get("receipt", {})
    out: list[Metric] = []

    def gauge(name: str, doc: str, value: float) -> None:
        out.append(GaugeMetricFamily(PREFIX + name, doc, value=value))

    def counter(name: str, doc: str, value: float) -> None:
        out.append(CounterMetricFamily(PREFIX + name, doc, value=value))

    def labelled(name: str, doc: str, label: str, values: Mapping[str, float], *, kind: str = "counter") -> None:
        fam: Any = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(PREFIX + name, doc,
                                                                                       labels=[label])
        for k in sorted(values):
            fam.add_metric([k], float(values[k]))
        out.append(fam)

    out.append(InfoMetricFamily(PREFIX.rstrip("_"), "The agent's version, device id and delivery mode.",
                                value={"version": version, "device_id": str(snap.get("device_id", "")),
                                       "delivery": str(rc.get("delivery") or "")}))
    gauge("start_time_seconds", "Unix time the agent started.", round(now - _num(snap, "uptime_s"), 3))
    gauge("epoch", "Boot counter of this agent (the epoch in every record's header).", _num(snap, "epoch"))
    if healthy is not None:
        gauge("healthy", "1 when every stage makes progress (what the systemd watchdog is told).", float(healthy))
    if clock_synced is not None:
        gauge("clock_synchronized", "1 when the kernel says the system clock is synchronised (NTP or better).",
              float(clock_synced))

    # outbox
    gauge("outbox_rows", "Records in the outbox, not yet delivered.", _num(ob, "depth"))
    gauge("outbox_bytes", "Bytes of the records in the outbox.", _num(ob, "bytes"))
    gauge("outbox_limit_bytes", "The outbox cap ([outbox] max_bytes): beyond it the oldest records are evicted.",
          _num(ob, "max_bytes"))
    gauge("outbox_file_bytes", "Size on disk of the outbox database with its WAL.", _num(ob, "file_bytes"))
    gauge("outbox_disk_free_bytes", "Free bytes on the file system holding the outbox.", _num(ob, "disk_free_bytes"))
    gauge("outbox_last_seq", "Highest seq committed.", _num(ob, "last_seq"))
    gauge("outbox_acked_seq", "Highest seq the outbox deleted through on an acknowledgement.", _num(ob, "acked_seq"))
    gauge("outbox_writable", "1 while commits succeed; 0 while the outbox cannot be written (disk full).",
          float(bool(ob.get("healthy", True))))
    counter("records_committed", "Records signed and committed to the outbox.", _num(ob, "committed"))
    counter("records_delivered", "Records deleted from the outbox because they were delivered (verified receipt "
            "in aggregator mode, PUBACK in broker mode).", _num(ob, "delivered"))
    counter("records_evicted", "Records evicted unsent because the outbox was full (reported in gap records).",
            _num(ob, "evicted_records"))
    counter("records_refused_oversize", "Records refused before the outbox: larger than the broker accepts.",
            _num(ob, "refused_oversize"))
    counter("outbox_commit_errors", "Failed outbox commits (retried with backoff).", _num(ob, "errors"))
    gauge("commit_queue_drafts", "Results waiting for the committer.", _num(snap, "queue_depth"))

    # MQTT link
    gauge("mqtt_connected", "1 while the MQTT session is up.", float(bool(mq.get("connected"))))
    gauge("mqtt_unconnected_seconds", "Seconds since the MQTT session was last up (0 while connected).",
          _num(mq, "unconnected_s"))
    counter("mqtt_connects", "MQTT sessions established.", _num(mq, "connects"))
    counter("mqtt_disconnects", "MQTT sessions lost.", _num(mq, "disconnects"))
    counter("mqtt_dead_links", "Sessions closed because the broker stopped answering (dead link).",
            _num(mq, "dead_link_detected"))
    by_cause = {c: 0.0 for c in CAUSES}
    by_cause.update({str(k): float(v) for k, v in dict(mq.get("connect_failures_by_cause", {})).items()})
    labelled("mqtt_connect_failures", "Refused connects to the broker, by cause (docs/broker.md).", "cause", by_cause)
    counter("mqtt_published", "Records published (PUBLISH sent, resends included).", _num(mq, "published"))
    counter("mqtt_pubacks", "PUBACKs received for records (the broker has them; not yet durable).",
            _num(mq, "pubacks"))
    counter("mqtt_resends", "Records published again after no acknowledgement.", _num(mq, "resends"))
    rejected = {str(k): float(v) for k, v in dict(mq.get("rejected_reasons", {})).items()}
    labelled("mqtt_publish_rejected", "PUBLISHes the broker refused (PUBACK reason), by reason.", "reason", rejected)

    # receipts
    invalid = {str(k): float(v) for k, v in dict(mq.get("receipts_invalid", {})).items()}
    labelled("receipts", "Receipts from the aggregator, by result: valid (acted on), stale, duplicate, invalid.",
             "result", {"valid": _num(mq, "receipts"), "stale": _num(mq, "receipts_stale"),
                        "duplicate": _num(mq, "receipts_duplicate"), "invalid": sum(invalid.values())})
    labelled("receipts_invalid", "Receipts that failed verification, by reason.", "reason", invalid)
    labelled("records_rejected", "Records the aggregator's receipts report as rejected, by reason.", "reason",
             {str(k): float(v) for k, v in dict(mq.get("records_rejected", {})).items()})

    # pipelines
    pipes: Mapping[str, Mapping[str, Any]] = snap.get("pipelines", {})
    hist = HistogramMetricFamily(PREFIX + "inference_latency_seconds", "Model invoke latency per stream.",
                                 labels=["stream"])
    per: dict[str, dict[str, float]] = {k: {} for k in ("windows", "results", "errors", "frame_errors", "lost_frames")}
    for stream in sorted(pipes):
        p = pipes[stream]
        h = p.get("latency_histogram")
        if h:
            hist.add_metric([stream], [(le, float(n)) for le, n in h["buckets"]], float(h["sum_s"]))
        src: Mapping[str, Any] = p.get("source", {})
        per["windows"][stream] = _num(p, "windows")
        per["results"][stream] = _num(p, "results")
        per["errors"][stream] = _num(p, "errors")
        per["frame_errors"][stream] = float(src["frame_errors"]) if "frame_errors" in src else float(
            sum(v for k, v in src.items() if k.startswith("frame_errors_")))
        per["lost_frames"][stream] = _num(src, "lost_frames")
    out.append(hist)
    labelled("pipeline_windows", "Windows inferred, per stream.", "stream", per["windows"])
    labelled("pipeline_results", "Results handed to the committer, per stream.", "stream", per["results"])
    labelled("pipeline_errors", "Inference errors, per stream.", "stream", per["errors"])
    labelled("serial_frame_errors", "Corrupt serial frames (CRC, COBS, length), per stream.", "stream",
             per["frame_errors"])
    labelled("serial_lost_frames", "Serial frames lost (counter gaps), per stream.", "stream", per["lost_frames"])
    return out


class _AgentLike(Protocol):
    """What the collector reads (``agent.service.Agent``)."""

    stall_s: float

    def snapshot(self) -> dict[str, Any]: ...

    def health(self, stall_s: float) -> Any: ...


class _Collector:
    """A prometheus-client collector over a live agent: every collection reads a fresh snapshot."""

    def __init__(self, agent: _AgentLike, version: str, clock_synced: Any = None) -> None:
        self.agent = agent
        self.version = version
        self.clock_synced = clock_synced

    def collect(self) -> Iterator[Metric]:
        snap = self.agent.snapshot()
        ob = snap.get("outbox")
        if isinstance(ob, dict) and ob.get("path"):
            ob["file_bytes"] = outbox_file_bytes(str(ob["path"]))
            ob["disk_free_bytes"] = disk_free_bytes(os.path.dirname(os.path.abspath(str(ob["path"]))))
        healthy = bool(self.agent.health(self.agent.stall_s).healthy)
        synced = bool(self.clock_synced()) if self.clock_synced is not None else None
        yield from families(snap, version=self.version, clock_synced=synced, healthy=healthy)


def outbox_file_bytes(path: str) -> int:
    """Bytes on disk of the outbox database, its WAL and shared-memory file."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(path + suffix).st_size
        except OSError:
            pass
    return total


def disk_free_bytes(directory: str) -> int:
    """Bytes an unprivileged process may still write on the file system of ``directory`` (0 if unknown)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0
    return int(st.f_bavail * st.f_frsize)


def registry_for(agent: _AgentLike, version: str, clock_synced: Any = None) -> CollectorRegistry:
    """A registry with the agent's families and the standard ``process_*`` ones (CPU, memory, fds)."""
    from prometheus_client import CollectorRegistry, ProcessCollector  # noqa: PLC0415

    reg = CollectorRegistry(auto_describe=False)
    reg.register(_Collector(agent, version, clock_synced))
    ProcessCollector(registry=reg)
    return reg


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format (what ``/metrics`` serves and the textfile holds)."""
    from prometheus_client import generate_latest  # noqa: PLC0415

    return bytes(generate_latest(registry))


class MetricsExporter:
    """Serves or writes the registry as ``[metrics]`` says; ``start``/``stop`` follow the agent's.

    A metrics failure never stops the agent: a port in use or an unwritable textfile is logged (once per
    change) and counted, and delivery goes on.
    """

    def __init__(self, cfg: MetricsConfig, registry: CollectorRegistry) -> None:
        self.cfg = cfg
        self.registry = registry
        self.writes = 0
        self.failures = 0
        self.address: tuple[str, int] | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_error: str | None = None

    def start(self) -> None:
        if self.cfg.mode == "http":
            from prometheus_client import start_http_server  # noqa: PLC0415

            try:
                self._server, self._thread = start_http_server(self.cfg.port, addr=self.cfg.bind,
                                                               registry=self.registry)
            except OSError as e:
                self.failures += 1
                log.error("metrics: cannot listen on %s:%d (%s); the agent runs without /metrics",
                          self.cfg.bind, self.cfg.port, e.strerror or e)
                return
            host, port = self._server.server_address[:2]
            self.address = (str(host), int(port))
            log.info("metrics on http://%s:%d/metrics", host, port)
        elif self.cfg.mode == "textfile":
            self._thread = threading.Thread(target=self._write_loop, name="metrics", daemon=True)
            self._thread.start()

    def write_once(self) -> bool:
        """Rewrite the textfile atomically; False (logged once per new error) when it cannot be written."""
        from provisioning import atomic_write  # noqa: PLC0415

        try:
            atomic_write(self.cfg.textfile_path, render(self.registry), mode=0o644, durable=False)
        except OSError as e:
            self.failures += 1
            msg = f"{e.strerror or e}"
            if msg != self._last_error:
                log.error("metrics: cannot write %s: %s", self.cfg.textfile_path, msg)
            self._last_error = msg
            return False
        except Exception:
            self.failures += 1
            log.exception("metrics: collecting failed")
            return False
        if self._last_error is not None:
            log.info("metrics: %s written again", self.cfg.textfile_path)
            self._last_error = None
        self.writes += 1
        return True

    def _write_loop(self) -> None:
        while True:
            self.write_once()
            if self._stop.wait(self.cfg.interval_s):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(5.0)
        if self.cfg.mode == "textfile" and self._thread is not None:
            self.write_once()  # the final counts

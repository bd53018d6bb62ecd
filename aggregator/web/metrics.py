"""Prometheus metrics of an aggregator worker, served on the web app's ``/metrics`` (prometheus-client).

Names follow the Prometheus conventions: prefix ``edge_aggregator_``, base units in the name (``_seconds``),
counters end in ``_total``, no unit-less ``_count`` counters, labels for the dimension that varies (result,
reason, cause). Counters come from the worker's in-memory counters (``AggregatorService.stats()``): they
start at 0 with the process, which is what Prometheus' ``rate()`` expects. Gauges are read at scrape time.
The commit-time histogram is fed by the service's observer hook. Other parts of the aggregator (the
transparency log) add their own collectors to ``AggregatorMetrics.registry``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# stats() field -> result label of edge_aggregator_records_total
_RESULTS = {"stored": "stored", "duplicates": "duplicate", "held": "held", "released": "released"}


class _StatsCollector(Collector):
    def __init__(self, stats: Callable[[], Any], devices: Callable[[], tuple[int, int]] | None,
                 link: Callable[[], dict[str, Any]] | None, clients: Callable[[], dict[str, int]] | None) -> None:
        self._stats, self._devices, self._link, self._clients = stats, devices, link, clients

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        received = CounterMetricFamily("edge_aggregator_records_received", "Records delivered by the broker "
                                       "(every kind, before verification).")
        received.add_metric([], s.received)
        yield received
        records = CounterMetricFamily("edge_aggregator_records", "Records by what became of them.",
                                      labels=["result"])
        for field_name, result in _RESULTS.items():
            records.add_metric([result], getattr(s, field_name))
        records.add_metric(["rejected"], s.rejected_total)
        yield records
        rejected = CounterMetricFamily("edge_aggregator_records_rejected", "Rejected records by reason "
                                       "(docs/aggregator.md lists the reasons).", labels=["reason"])
        for reason, n in sorted(s.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        gaps = CounterMetricFamily("edge_aggregator_gap_seqs", "Seqs found missing: skipped in transit when a gap "
                                   "opened, or evicted by the device's outbox policy (gap records).", labels=["cause"])
        gaps.add_metric(["transit"], s.gap_seqs)
        gaps.add_metric(["policy"], s.policy_gap_seqs)
        yield gaps
        for name, attr, doc in (
            ("edge_aggregator_reorders", "reorders", "Records that arrived below the highest seq seen."),
            ("edge_aggregator_equivocations", "equivocations", "Seqs signed twice with different bytes."),
            ("edge_aggregator_offline_events", "offline_events", "Will messages (device went offline)."),
            ("edge_aggregator_receipts_published", "acks_published", "Receipts (or unsigned acks) published."),
            ("edge_aggregator_batches", "batches", "Store transactions committed."),
            ("edge_aggregator_store_errors", "store_errors", "Store commits that failed and were retried."),
        ):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], getattr(s, attr))
            yield c
        queue = GaugeMetricFamily("edge_aggregator_queue_depth", "Deliveries waiting for the store thread.")
        queue.add_metric([], s.queue_depth)
        yield queue
        if self._devices is not None:
            known, online = self._devices()
            g = GaugeMetricFamily("edge_aggregator_devices_online", "Devices whose last status was a birth record "
                                  "(not the will).")
            g.add_metric([], online)
            yield g
            g = GaugeMetricFamily("edge_aggregator_devices_known", "Devices the store has seen.")
            g.add_metric([], known)
            yield g
        if self._link is not None:
            g = GaugeMetricFamily("edge_aggregator_broker_connected", "1 while connected to the MQTT broker.")
            g.add_metric([], 1.0 if self._link().get("connected") else 0.0)
            yield g
        if self._clients is not None:
            g = GaugeMetricFamily("edge_aggregator_web_clients", "Open live-update streams by page.", labels=["page"])
            for page, n in sorted(self._clients().items()):
                g.add_metric([page], n)
            yield g


class _Histogram(Collector):
    """A histogram without the ``_created`` series prometheus-client's own adds to the text format."""

    def __init__(self, name: str, doc: str, buckets: Sequence[float]) -> None:
        self.name, self.doc, self.buckets = name, doc, tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, v: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, v)] += 1
            self._sum += v

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, acc = [], 0
        for le, n in zip((*(repr(float(b)) for b in self.buckets), "+Inf"), counts, strict=True):
            acc += n
            cumulative.append((le, acc))
        yield HistogramMetricFamily(self.name, self.doc, buckets=cumulative, sum_value=total)


class AggregatorMetrics:
    """The registry behind ``/metrics``; also a service observer (it times the store's commits)."""

    def __init__(self, stats: Callable[[], Any], *, devices: Callable[[], tuple[int, int]] | None = None,
                 link: Callable[[], dict[str, Any]] | None = None,
                 clients: Callable[[], dict[str, int]] | None = None, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.commit_seconds = _Histogram("edge_aggregator_store_commit_seconds",
                                         "Time of one store transaction (a batch of records).", COMMIT_BUCKETS)
        self.registry.register(self.commit_seconds)
        self.registry.register(_StatsCollector(stats, devices, link, clients))
        if process:
            ProcessCollector(registry=self.registry)

    def batch_committed(self, batch: Any) -> None:
        self.commit_seconds.observe(batch.commit_s)

    def receipts_published(self, receipts: Sequence[Any]) -> None:
        """Counted from the service's counters; nothing to do here."""

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)

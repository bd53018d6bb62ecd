"""The aggregator's web page and metrics (DESIGN §12, docs/web.md): the fleet, each device, live updates.

Two halves. Without the optional ``web`` extra: the fleet view the store thread keeps current
(``FleetTracker``, tables ``web_*`` in the record store), the read-only queries behind the pages
(``FleetReader``) and the Prometheus metrics (``AggregatorMetrics``). With the extra (Starlette, uvicorn,
sse-starlette, Jinja2): ``aggregator.web.app.build_app`` and ``aggregator.web.server.WebServer``, imported
only when ``[web] enabled`` is set, so a worker without the extra still tracks the fleet for the others.
"""

from aggregator.web.metrics import AggregatorMetrics
from aggregator.web.query import FleetQuery, Thresholds, attention, missing_ranges
from aggregator.web.reader import FleetPage, FleetReader, Summary
from aggregator.web.tracker import DeviceUpdate, FleetTracker, plan

__all__ = [
    "AggregatorMetrics",
    "DeviceUpdate",
    "FleetPage",
    "FleetQuery",
    "FleetReader",
    "FleetTracker",
    "Summary",
    "Thresholds",
    "attention",
    "missing_ranges",
    "plan",
]

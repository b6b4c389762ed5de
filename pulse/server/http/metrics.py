"""Prometheus metrics, in an app-owned registry (no process-global state)."""

import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily

from pulse.server.ingest.stream import UNDECODABLE

EVENT_TYPE = re.compile(r"(task|worker)-[a-z-]{1,24}")


class Metrics:
    """Counters the server bumps, plus gauges read from the registry and the monitor on scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("pulse_events_received", "Celery events received by the monitor, by type",
                              ["type"], registry=self.registry)
        self.pushes = Counter("pulse_pushes_sent", "Socket.IO pushes sent, by event name", ["event"],
                              registry=self.registry)
        self.clients = Gauge("pulse_connected_clients", "Socket.IO clients connected",
                             registry=self.registry)
        self.stalled = Counter("pulse_stalled_clients", "Socket.IO clients disconnected for not reading",
                               registry=self.registry)
        self.lapsed = Counter("pulse_lapsed_token_clients",
                              "Socket.IO clients disconnected as their per-task token or session lapsed",
                              registry=self.registry)
        self.credentials = Counter("pulse_credential_refusals",
                                   "Credential checks that failed, and checks refused past "
                                   "PULSE_AUTH_ATTEMPTS (429), by outcome", ["outcome"],
                                   registry=self.registry)
        self.refused = Counter("pulse_connections_refused",
                               "Connections (or, behind proxies, requests) refused with 503 by the "
                               "connection bounds, by the limit reached", ["limit"], registry=self.registry)
        self.open_connections = Gauge("pulse_open_connections", "HTTP connections open (eventlet server)",
                                      registry=self.registry)

    def events_seen(self, kinds: Mapping[str, int]) -> None:
        """Count a batch of events, by type."""
        for kind, count in kinds.items():
            # Bound the label's values: a stray publisher must not create unlimited series.
            known = kind == UNDECODABLE or EVENT_TYPE.fullmatch(kind)
            self.events.labels(kind if known else "other").inc(count)

    def connection_refused(self, limit: str) -> None:
        self.refused.labels(limit).inc()

    def push(self, event: str, count: int = 1) -> None:
        self.pushes.labels(event).inc(count)

    def watch(self, read: Callable[[], dict[str, Any]]) -> None:
        """Publish gauges computed by ``read`` at scrape time."""
        self.registry.register(_Snapshot(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Snapshot:
    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        data = self.read()
        tasks = GaugeMetricFamily("pulse_tasks", "Tasks in the registry, by status", labels=["status"])
        for status, count in data["by_status"].items():
            tasks.add_metric([status], count)
        yield tasks
        yield GaugeMetricFamily("pulse_registry_records", "Records in the registry", value=data["total"])
        yield GaugeMetricFamily("pulse_workers_online", "Workers with a recent heartbeat",
                                value=data["workers_online"])
        lag = data["newest_event_at"]
        yield GaugeMetricFamily("pulse_monitor_lag_seconds", "Now minus the newest event's timestamp",
                                value=time.time() - lag if lag else float("nan"))
        yield GaugeMetricFamily("pulse_monitor_connected", "1 when the event stream is up",
                                value=1.0 if data["connected"] else 0.0)

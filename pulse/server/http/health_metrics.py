"""The gauges of ``/metrics`` that the alert conditions also judge, read at scrape time through the
same ``Readings``, so a Prometheus rule and a Pulse rule see the same figures."""

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily

from pulse.record.registry import as_text
from pulse.server.alerts.readings import Readings
from pulse.server.model.queues import queue_names

SERIES_MOST = 200  # label values per gauge: queues, task names, periodic entries


class HealthGauges:
    """A prometheus_client collector over ``read(now)``; ``default_queue`` is the app's own."""

    def __init__(self, read: Callable[[float], Readings], default_queue: str,
                 firing: Callable[[], int]) -> None:
        self.read = read
        self.default_queue = default_queue
        self.firing = firing

    def collect(self) -> Iterator[GaugeMetricFamily]:
        readings = self.read(time.time())
        consumers = readings.consumers
        queues = queue_names(readings.registry, self.default_queue, consumers)[:SERIES_MOST]
        count = GaugeMetricFamily("pulse_queue_consumers", "Workers consuming each queue, as they last "
                                  "answered (absent until one answers)", labels=["queue"])
        if consumers is not None:
            for queue in queues:
                count.add_metric([queue], len(consumers.get(queue, [])))
        yield count
        age = GaugeMetricFamily("pulse_queue_oldest_message_age_seconds", "How long each queue's oldest "
                                "message has waited (0 when empty; absent when the broker cannot tell)",
                                labels=["queue"])
        for queue, seconds in readings.queue_ages(queues).items():
            if seconds is not None:
                age.add_metric([queue], seconds)
        yield age
        running = GaugeMetricFamily("pulse_task_longest_running_seconds", "Age of the longest-running "
                                    "task of each name (0 when none runs)", labels=["name"])
        for name, seconds in self._names(readings).items():
            running.add_metric([name], seconds)
        yield running
        late = GaugeMetricFamily("pulse_periodic_overdue_seconds", "How late each periodic entry's expected "
                                 "run is (0 when on time)", labels=["entry"])
        for entry, seconds in sorted((readings.periodic or {}).items())[:SERIES_MOST]:
            late.add_metric([entry], seconds)
        yield late
        yield GaugeMetricFamily("pulse_alerts_firing", "Pulse alert rules firing now", value=self.firing())

    def _names(self, readings: Readings) -> dict[str, float]:
        """The running names first, then the other known names at 0, up to the bound."""
        shown = {name: age for name, (age, _) in sorted(readings.running.items())[:SERIES_MOST]}
        for raw in readings.registry.client.sscan_iter(readings.registry.keys.names, count=500):
            if len(shown) >= SERIES_MOST:
                break
            shown.setdefault(as_text(raw), 0.0)
        return shown

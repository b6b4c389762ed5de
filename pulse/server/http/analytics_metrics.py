"""The analytics in /metrics: outcome counters and runtime and queue wait histograms per task name
and queue, read from the registry's totals at each scrape (so every server exports the same numbers,
and they survive a restart)."""

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from pulse.record.analytics import BOUNDS
from pulse.record.statuses import OUTCOMES
from pulse.server.model.analytics import Analytics

LE = [floatToGoString(bound) for bound in BOUNDS] + ["+Inf"]


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    cumulative, out = 0, []
    for le, count in zip(LE, counts, strict=True):
        cumulative += count
        out.append((le, float(cumulative)))
    return out


class AnalyticsCollector:
    """A Prometheus collector over ``Analytics.totals``."""

    def __init__(self, analytics: Analytics) -> None:
        self.analytics = analytics

    def collect(self) -> Iterator[Metric]:
        totals = self.analytics.totals()
        outcomes = CounterMetricFamily(
            "pulse_task_outcomes", "Tasks that ended, by name, queue and the status they ended in "
            "(names past the cap count as name=\"other\")", labels=["name", "queue", "status"])
        runtime = HistogramMetricFamily(
            "pulse_task_runtime_seconds", "Runtime (started to ended) of the tasks that finished or failed",
            labels=["name", "queue"])
        wait = HistogramMetricFamily(
            "pulse_task_queue_wait_seconds", "Queue wait (sent to started) of the tasks that finished or "
            "failed, first attempts without an ETA", labels=["name", "queue"])
        for (name, queue), figures in sorted(totals.items()):
            # Every outcome, 0 included: a counter must exist before its first increase, or
            # Prometheus's increase() misses it (the lost-task rule watches lost from 0 to 1).
            for status in OUTCOMES:
                outcomes.add_metric([name, queue, status], figures.outcomes.get(status, 0))
            if any(figures.runtime):
                runtime.add_metric([name, queue], _buckets(figures.runtime), figures.runtime_sum)
            if any(figures.wait):
                wait.add_metric([name, queue], _buckets(figures.wait), figures.wait_sum)
        yield outcomes
        yield runtime
        yield wait

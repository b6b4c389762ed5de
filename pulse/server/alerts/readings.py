"""What the alert conditions (and the health gauges of ``/metrics``) read from the running system.

One ``Readings`` per evaluation: each figure is read on first use and kept for the rest of it,
so twenty rules on one queue ask the broker once, and a figure no rule needs is never read.
"""

from collections.abc import Callable
from functools import cached_property
from typing import Any

from pulse.record.registry import Registry, as_text
from pulse.server.model.bulk import worker_tasks
from pulse.server.model.queues import queues


class Readings:
    """The live figures, read lazily from the server's objects at time ``now``."""

    def __init__(self, now: float, registry: Registry, monitor: Any, consumers: Callable[[], Any],
                 broker: Any, outcomes: Callable[[str | None, int, float], dict[str, int] | None],
                 schedule: Callable[[float], dict[str, Any]] | None) -> None:
        self.now = now
        self.registry = registry
        self.monitor = monitor
        self._consumers = consumers
        self.broker = broker
        self._outcomes = outcomes
        self._schedule = schedule
        self._ages: dict[str, float | None] = {}

    @property
    def monitor_connected(self) -> bool:
        return bool(self.monitor.connected)

    @property
    def workers_online(self) -> int:
        return sum(1 for worker in list(self.monitor.state.workers.values()) if worker.alive)

    @cached_property
    def consumers(self) -> dict[str, list[str]] | None:
        """Queue -> the workers consuming it, as they last answered; None before any answer."""
        return self._consumers()

    def outcomes(self, name: str | None, window: int) -> dict[str, int] | None:
        """Tasks of ``name`` (None: of every name) that ended in the last ``window`` seconds, by status."""
        return self._outcomes(name, window, self.now)

    def queue_age(self, queue: str) -> float | None:
        """Seconds the oldest message of ``queue`` has waited: 0 for an empty queue, None when the
        broker cannot tell (RabbitMQ, or a message without a record)."""
        if queue not in self._ages:
            self._ages.update(self.queue_ages([queue]))
        return self._ages[queue]

    def queue_ages(self, names: list[str]) -> dict[str, float | None]:
        if self.broker is None:
            return dict.fromkeys(names)
        rows = queues(self.broker, self.registry, names, self.now, None)
        return {row["name"]: 0.0 if row["depth"] == 0 else row["oldest_age"] for row in rows}

    @cached_property
    def running(self) -> dict[str, tuple[float, str]]:
        """Task name -> (age, id) of its longest-running task, from the registry's running index."""
        longest: dict[str, tuple[float, str]] = {}
        for task_id, (name, started) in worker_tasks(self.registry, "name", "started_at").items():
            if not started:
                continue
            age = max(0.0, self.now - float(started))
            key = as_text(name) if name else "?"
            if age > longest.get(key, (-1.0, ""))[0]:
                longest[key] = (round(age, 1), task_id)
        return longest

    def longest_running(self, name: str | None) -> tuple[float, str | None]:
        """(age, id) of the longest-running task of ``name`` (None: of any name); (0, None) if none runs."""
        if name is not None:
            return self.running.get(name, (0.0, None))
        return max(self.running.values(), default=(0.0, None))

    @cached_property
    def periodic(self) -> dict[str, float] | None:
        """Periodic entry -> seconds its expected run is late (0 when on time); None when unreadable.

        An entry's next run is reckoned from its last recorded run; one never seen run is not late
        (Pulse cannot know when beat started)."""
        if self._schedule is None:
            return None
        return {entry["name"]: entry["overdue"] for entry in self._schedule(self.now)["entries"]}

    def periodic_late(self, entry: str | None) -> tuple[float, str | None] | None:
        """(seconds late, entry) of ``entry`` (None: the latest of all); None if it is unknown."""
        late = self.periodic
        if late is None or (entry is not None and entry not in late):
            return None
        if entry is not None:
            return late[entry], entry
        return max(((seconds, name) for name, seconds in late.items()), default=(0.0, None))

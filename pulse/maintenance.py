"""What only the web server's monitor can know, applied to the registry in the background.

Every tick: tasks running on a worker that went offline or stopped heartbeating become
``lost``. Every few ticks: which workers consume which queue (for the overview's warnings).
After each (re)connection of the event stream: active records are re-read against the result
backend (reconcile). Now and then: records whose result Celery dropped become ``expired``, and
the registry is pruned to its retention and cap.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

from tasks.registry import as_text

from .monitor import Monitor
from .store import TaskStore

log = logging.getLogger(__name__)


class Maintenance:
    """Periodic registry upkeep driven by the monitor's view of the workers."""

    def __init__(
        self,
        store: TaskStore,
        monitor: Monitor,
        on_task: Callable[[dict[str, Any]], None] = lambda data: None,
        lost_after: float = 30.0,
        interval: float = 2.0,
        prune_every: float = 60.0,
        sweep_batch: int = 500,
        sweep_every: float = 10.0,
        consumers_every: float = 10.0,
    ) -> None:
        self.store = store
        self.registry = store.registry
        self.monitor = monitor
        self.on_task = on_task
        self.lost_after = lost_after
        self.interval = interval
        self.prune_every = prune_every
        self.sweep_batch = sweep_batch
        # The expiry sweep walks ended records in slices; describe() also notices an expired
        # result at once, so the sweep only keeps lists and counts honest and need not be fast.
        self.sweep_every = sweep_every
        self._next_sweep = 0.0
        self.consumers: dict[str, list[str]] | None = None  # queue -> workers, None until known
        self.consumers_every = consumers_every
        self._next_consumers = 0.0
        self._reconciled_for: float | None = None
        self._next_prune = 0.0
        self._sweep_offset = 0
        self._stopping = False

    def _ids(self, index: str, limit: int = 10_000) -> list[str]:
        return self._ids_at(index, 0, limit)

    def worker_gone(self, hostname: str | None, now: float) -> bool:
        """No heartbeat from ``hostname`` for ``lost_after`` seconds, or it said it went offline."""
        worker = self.monitor.state.workers.get(hostname) if hostname else None
        if worker is None or not worker.heartbeats:  # never heard while listening, or offline
            return True
        return now - worker.heartbeats[-1] > self.lost_after

    def mark_lost(self, now: float) -> list[dict[str, Any]]:
        """Running tasks whose worker is gone become ``lost``; returns them."""
        since = self.monitor.connected_since
        if not self.monitor.connected or since is None or now - since < self.lost_after:
            return []  # not listening long enough to tell a dead worker from a silent stream
        ids = self._ids("status:running")
        pipe = self.registry.client.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(self.registry.key(task_id), "worker")
        lost = []
        for task_id, worker in zip(ids, pipe.execute(), strict=True):
            hostname = as_text(worker) if worker else None
            if self.worker_gone(hostname, now):
                code, _ = self.registry.write(task_id, "lost", fields={"lost_at": now}, expect=["running"])
                if code == 1:
                    lost.append(self.store.get_json(task_id))
        return lost

    def tick(self, now: float | None = None) -> list[dict[str, Any]]:
        """One round of upkeep; returns the tasks it changed (also handed to ``on_task``)."""
        now = time.time() if now is None else now
        changed = self.mark_lost(now)
        since = self.monitor.connected_since
        if since is not None and since != self._reconciled_for:
            self._reconciled_for = since
            active = [i for s in ("scheduled", "running", "retrying") for i in self._ids(f"status:{s}")]
            changed += self.store.reconcile(active)
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_every
            ended = self._ids_at("ended", self._sweep_offset, self.sweep_batch)
            self._sweep_offset = 0 if len(ended) < self.sweep_batch else self._sweep_offset + len(ended)
            changed += self.store.expire_gone(ended)
        if now >= self._next_prune:
            self._next_prune = now + self.prune_every
            self.registry.prune(now)
        for data in changed:
            self.on_task(data)
        return changed

    def read_consumers(self) -> dict[str, list[str]] | None:
        """Which workers consume which queue, as the workers answer (None if none answered)."""
        replies = self.monitor.celery.control.inspect(timeout=1.0).active_queues()
        if replies is None:
            # No worker answered: with workers online that is "unknown", with none it is "nobody".
            return {} if not any(w.alive for w in self.monitor.state.workers.values()) else self.consumers
        consumers: dict[str, list[str]] = {}
        for worker, queues in replies.items():
            for queue in queues or []:
                consumers.setdefault(queue.get("name"), []).append(worker)
        return consumers

    def _ids_at(self, index: str, offset: int, count: int) -> list[str]:
        key = f"{self.registry.prefix}i:{index}"
        return [as_text(i) for i in self.registry.client.zrange(key, offset, offset + count - 1)]

    def run(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Tick every ``interval`` seconds until ``stop()``; errors are logged, never fatal."""
        while not self._stopping:
            sleep(self.interval)
            try:
                self.tick()
                if time.time() >= self._next_consumers:  # a broadcast that waits 1 s for replies
                    self._next_consumers = time.time() + self.consumers_every
                    self.consumers = self.read_consumers()
            except Exception as exc:  # Redis down: the next tick tries again
                log.warning("pulse: registry upkeep failed: %r", exc)

    def stop(self) -> None:
        self._stopping = True

"""What only the web server's monitor can know, applied to the registry in the background.

Every tick: tasks running on a worker that went offline or stopped heartbeating become
``lost``. Every few ticks the workers are asked which queues they consume (for the overview's
warnings) and which tasks they run: a task recorded as running that its worker, alive and
answering, no longer runs in two rounds in a row, and whose end the result backend does not
have either, ended unseen (its end could not be written, e.g. Redis was down) and becomes
``lost`` too.
After each (re)connection of the event stream: active records are re-read against the result
backend (reconcile). Now and then: records whose result Celery dropped become ``expired``, and
the registry is pruned to its retention and cap.
"""

import time
from collections.abc import Callable
from typing import Any

from pulse.record.registry import as_text
from pulse.record.statuses import LOST, QUEUED_OR_RUNNING, RUNNING
from pulse.server.ingest.monitor import Monitor
from pulse.server.model.bulk import worker_tasks
from pulse.server.model.store import TaskStore
from pulse.server.upkeep.periodic import Periodic

ENDED_UNSEEN = "its worker no longer runs it and its end was never recorded"
WORKER_GONE = "its worker went offline or stopped heartbeating"


class Maintenance(Periodic):
    """Periodic registry upkeep driven by the monitor's view of the workers."""

    failure = "registry upkeep failed"

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
        unseen_rounds: int = 2,
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
        self.unseen_rounds = unseen_rounds
        self._unseen: dict[str, int] = {}  # running task -> rounds in a row its worker did not list it
        self._reconciled_for: float | None = None
        self._next_prune = 0.0
        self._sweep_offset = 0

    def _ids(self, key: str, limit: int = 10_000) -> list[str]:
        return self._ids_at(key, 0, limit)

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
        gone = [task_id for task_id, hostname in self.running_on().items() if self.worker_gone(hostname, now)]
        return self._lose(gone, now, WORKER_GONE)

    def _lose(self, task_ids: list[str], now: float, reason: str) -> list[dict[str, Any]]:
        """Mark still-running tasks ``lost`` for ``reason``; returns the ones it changed."""
        lost = []
        for task_id in task_ids:
            code, _ = self.registry.write(task_id, LOST, fields={"lost_at": now, "lost_reason": reason},
                                          expect=[RUNNING])
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
            active = [i for s in QUEUED_OR_RUNNING for i in self._ids(self.registry.keys.index("status", s))]
            changed += self.store.reconcile(active)
        if now >= self._next_sweep:
            self._next_sweep = now + self.sweep_every
            ended = self._ids_at(self.registry.keys.ended, self._sweep_offset, self.sweep_batch)
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

    def running_on(self) -> dict[str, str | None]:
        """Every running task's worker, as recorded (None if none is): task id -> hostname.
        Bulk actions' own records are left out (``worker_tasks``)."""
        return {task_id: as_text(worker) if worker else None
                for task_id, (worker,) in worker_tasks(self.registry, "worker").items()}

    def read_active(self) -> dict[str, set[str]]:
        """The ids of the tasks each answering worker runs now (workers that did not answer: absent)."""
        replies = self.monitor.celery.control.inspect(timeout=1.0).active() or {}
        return {worker: {task.get("id") for task in tasks or [] if isinstance(task, dict)}
                for worker, tasks in replies.items()}

    def mark_ended_unseen(self, now: float) -> list[dict[str, Any]]:
        """Running tasks that their worker, answering, did not list ``unseen_rounds`` times in a row
        end as the result backend says, or else become ``lost``; returns the tasks that changed."""
        recorded = self.running_on()  # before asking: a task started since is not judged this round
        active = self.read_active()
        self._unseen = {task_id: self._unseen.get(task_id, 0) + 1 for task_id, worker in recorded.items()
                        if worker in active and task_id not in active[worker]}
        due = [task_id for task_id, rounds in self._unseen.items() if rounds >= self.unseen_rounds]
        if not due:
            return []
        changed = self.store.reconcile(due)  # its end may be in the backend after all
        changed += self._lose(sorted(set(due) - {data["id"] for data in changed}), now, ENDED_UNSEEN)
        for task_id in due:
            self._unseen.pop(task_id, None)
        return changed

    def _ids_at(self, key: str, offset: int, count: int) -> list[str]:
        return [as_text(i) for i in self.registry.client.zrange(key, offset, offset + count - 1)]

    def step(self) -> None:
        """A tick, and every ``consumers_every`` the questions to the workers."""
        self.tick()
        if time.time() >= self._next_consumers:  # broadcasts that wait 1 s for replies
            self._next_consumers = time.time() + self.consumers_every
            self.consumers = self.read_consumers()
            for data in self.mark_ended_unseen(time.time()):
                self.on_task(data)

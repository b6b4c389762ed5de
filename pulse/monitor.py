"""The event monitor: consumes every Celery task and worker event into a ``State``.

It runs as a background task of the web server, reconnects with backoff when the broker goes
away, and hands every changed task to a listener (the live push).
"""

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, states
from celery.events.state import TASK_EVENT_TO_STATE, State, Task

from .results import read_meta
from .taskjson import task_json

log = logging.getLogger(__name__)

FINAL_EVENTS = frozenset({"task-succeeded", "task-failed", "task-revoked", "task-rejected"})


class PulseTask(Task):
    """A task record that a late event never moves out of a finished state."""

    def event(self, type_, timestamp=None, local_received=None, fields=None, **kwargs):
        if self.state in states.READY_STATES and TASK_EVENT_TO_STATE.get(type_) not in states.READY_STATES:
            # Events from different processes arrive in any order: a progress or started
            # event after the finish keeps only its metadata (name, args, ...) and timestamp.
            keep = self.merge_rules[states.RECEIVED]
            if type_ in TASK_EVENT_TO_STATE:
                setattr(self, type_, timestamp)
            self.__dict__.update({k: v for k, v in (fields or {}).items() if k in keep})
            return
        super().event(type_, timestamp, local_received, fields, **kwargs)


class PulseState(State):
    """Celery's cluster state, with ``PulseTask`` records."""

    Task = PulseTask


class Monitor:
    """Keeps a ``PulseState`` from the live event stream and reports task changes."""

    def __init__(
        self,
        celery_app: Celery,
        on_task: Callable[[dict[str, Any]], None] = lambda data: None,
        on_status: Callable[[bool], None] = lambda connected: None,
        max_tasks: int = 10_000,
        idle_timeout: float = 10.0,
    ) -> None:
        self.celery = celery_app
        self.state = PulseState(max_tasks_in_memory=max_tasks)
        self.on_task = on_task
        self.on_status = on_status
        self.idle_timeout = idle_timeout
        self.connected = False
        self.last_event_at: float | None = None
        self._receiver = None
        self._stopping = False

    def handle(self, event: dict[str, Any]) -> None:
        """Apply one event to the state and report the task it changed; never raises."""
        try:
            self._handle(event)
        except Exception:  # one malformed event must not stop the monitor
            log.exception("pulse: could not handle event %.200r", event)

    def _handle(self, event: dict[str, Any]) -> None:
        self.last_event_at = time.time()
        event.setdefault("local_received", self.last_event_at)
        kind = event.get("type", "")
        if not kind.startswith("task-"):
            self.state.event(event)
            return
        (task, _created), _subject = self.state.event(event)
        if kind in FINAL_EVENTS:
            # The event carries only a repr of the result: keep the backend's real value.
            task.pulse_meta = self.fetch_meta(task.uuid)
        self.on_task(self.task_data(task))

    def task_data(self, task: Task) -> dict[str, Any]:
        """The task JSON of a record, with the backend entry read at its finish."""
        return task_json(task.uuid, task, getattr(task, "pulse_meta", None))

    def describe(self, task_id: str) -> dict[str, Any]:
        """The task JSON from this monitor's record and a fresh read of the result backend."""
        return task_json(task_id, self.state.tasks.data.get(task_id), self.fetch_meta(task_id))

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The most recently active tasks, newest first."""
        out = []
        # The time heap holds several entries per task, so read past ``limit`` entries.
        for _uuid, task in self.state.tasks_by_time(limit=limit * 8):
            out.append(self.task_data(task))
            if len(out) >= limit:
                break
        return out

    def fetch_meta(self, task_id: str) -> dict | None:
        """The raw result-backend entry of a task, or None when absent or unreadable."""
        try:
            return read_meta(self.celery, task_id)
        except Exception as exc:  # backend down: the event's own fields still describe it
            log.warning("pulse: result of task %s not read: %r", task_id, exc)
            return None

    def record_sent(self, task_id: str, name: str) -> None:
        """Record a task this server just launched, before its task-sent event comes round."""
        now = time.time()
        self.handle({
            "type": "task-sent", "uuid": task_id, "name": name, "hostname": "pulse",
            "timestamp": now, "local_received": now, "clock": 0,
        })

    def run(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Capture events forever, reconnecting with backoff; returns after ``stop()``."""
        delay = 0.5
        while not self._stopping:
            try:
                with self.celery.connection_for_read() as conn:
                    conn.ensure_connection(max_retries=1)
                    self._set_connected(True)
                    delay = 0.5
                    self._capture(conn)
            except TimeoutError:
                # Nothing for idle_timeout seconds: workers heartbeat every ~2 s, so the
                # broker may be frozen. Reconnect rather than wait on a dead socket.
                log.info("pulse: no events for %.0fs, reconnecting", self.idle_timeout)
                continue
            except Exception as exc:  # broker gone or a decode error: back off and retry
                self._set_connected(False)
                if self._stopping:
                    break
                log.warning("pulse: event stream lost (%r); retrying in %.1fs", exc, delay)
                sleep(delay)
                delay = min(delay * 2, 10.0)
        self._set_connected(False)

    def _capture(self, conn) -> None:
        self._receiver = self.celery.events.Receiver(conn, handlers={"*": self.handle})
        try:
            self._receiver.capture(limit=None, timeout=self.idle_timeout, wakeup=True)
        finally:
            self._receiver = None

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            self.on_status(connected)

    def stop(self) -> None:
        """Ask ``run`` to return after the current wait."""
        self._stopping = True
        if self._receiver is not None:
            self._receiver.should_stop = True

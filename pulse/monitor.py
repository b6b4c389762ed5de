"""The event monitor: consumes every Celery task and worker event.

Worker events keep a ``celery.events.state.State`` (heartbeats, load, online/offline); task
events also go into the registry through the ``TaskStore``, whose answer is handed to a
listener (the live push). It runs as a background task of the web server, reconnects with
backoff when the broker goes away, and reconnects when the stream falls silent.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Celery, states
from celery.events.state import TASK_EVENT_TO_STATE, State, Task

from .store import TaskStore

log = logging.getLogger(__name__)


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
    """Keeps a ``PulseState`` and the registry from the live event stream."""

    def __init__(
        self,
        celery_app: Celery,
        store: TaskStore,
        on_task: Callable[[dict[str, Any]], None] = lambda data: None,
        on_status: Callable[[bool], None] = lambda connected: None,
        on_event: Callable[[str], None] = lambda kind: None,
        on_worker: Callable[[str], None] = lambda hostname: None,
        max_tasks: int = 10_000,
        idle_timeout: float = 10.0,
    ) -> None:
        self.celery = celery_app
        self.store = store
        self.state = PulseState(max_tasks_in_memory=max_tasks)
        self.on_task = on_task
        self.on_status = on_status
        self.on_event = on_event
        self.on_worker = on_worker
        self.idle_timeout = idle_timeout
        self.connected = False
        self.connected_since: float | None = None
        self.last_event_at: float | None = None
        self.newest_event_at: float | None = None
        self._receiver = None
        self._stopping = False

    def handle(self, event: dict[str, Any]) -> None:
        """Apply one event to the state and the registry, then report the task; never raises."""
        try:
            self._handle(event)
        except Exception:  # one malformed event must not stop the monitor
            log.exception("pulse: could not handle event %.200r", event)

    def _handle(self, event: dict[str, Any]) -> None:
        self.last_event_at = time.time()
        event.setdefault("local_received", self.last_event_at)
        kind = event.get("type", "")
        self.on_event(kind)
        stamp = event.get("timestamp")
        if isinstance(stamp, int | float):
            self.newest_event_at = max(stamp, self.newest_event_at or stamp)
        self.state.event(event)
        if kind.startswith("worker-") and event.get("hostname"):
            self.on_worker(event["hostname"])
        if kind.startswith("task-"):
            data = self.store.apply_event(event)
            if data is not None:
                self.on_task(data)

    def restore(self, limit: int) -> int:
        """Seed the in-memory state from the registry's most recently active records."""
        restored = 0
        for data in self.store.recent(limit):
            task, _created = self.state.get_or_create_task(data["id"])
            task.name, task.state = data["name"], data["state"] or states.PENDING
            restored += 1
        return restored

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
            self.connected_since = time.time() if connected else None
            self.on_status(connected)

    def stop(self) -> None:
        """Ask ``run`` to return after the current wait."""
        self._stopping = True
        if self._receiver is not None:
            self._receiver.should_stop = True

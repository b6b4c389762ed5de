"""The event monitor: consumes every Celery task and worker event.

Worker events keep a ``celery.events.state.State`` (heartbeats, load, online/offline); task
events go into the registry through the ``TaskStore``, whose answer is handed to a listener
(the live push). Events come in batches (``stream`` on Redis, ``receiver`` on other brokers):
the registry is written for a whole batch in one round trip, and a task that changed several
times in it is pushed once. It runs as a background task of the web server, reconnects with
backoff when the broker goes away, and reconnects when the stream falls silent.
"""

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.events.state import State

from pulse.agent.wire import UnsupportedBroker
from pulse.server.ingest.notices import changed
from pulse.server.ingest.receiver import ReceiverStream
from pulse.server.ingest.stream import UNDECODABLE, EventStream, StreamSilent
from pulse.server.model.store import TaskStore
from pulse.server.model.taskjson import valid_id

log = logging.getLogger(__name__)

PAUSE_EVERY = 0.1  # seconds of event handling, at most, before the monitor lets others run
# Longest wait between two reconnection attempts: live updates must resume within seconds of
# Redis coming back, however long it was away.
MAX_RETRY_DELAY = 4.0


class _Writing:
    """One batch's registry writes and pushes, run by ``spawn`` (a green thread or a thread)."""

    def __init__(self, spawn: Callable[..., Any], store: Callable[..., None], prepared: tuple) -> None:
        self.error: Exception | None = None
        self.task = spawn(self._run, store, prepared)

    def _run(self, store: Callable[..., None], prepared: tuple) -> None:
        try:
            store(*prepared)
        except Exception as exc:  # handed to whoever joins (the monitor then reconnects)
            log.warning("pulse: a batch of events was not written: %r", exc)
            self.error = exc

    def join(self) -> None:
        self.task.join()
        if self.error is not None:
            raise self.error


class Monitor:
    """Keeps a ``PulseState`` and the registry from the live event stream."""

    def __init__(
        self,
        celery_app: Celery,
        store: TaskStore,
        on_task: Callable[[dict[str, Any]], None] = lambda data: None,
        on_status: Callable[[bool], None] = lambda connected: None,
        on_events: Callable[[Counter], None] = lambda kinds: None,
        on_worker: Callable[[str], None] = lambda hostname: None,
        idle_timeout: float = 10.0,
        max_batch: int = 1000,
        spawn: Callable[..., Any] | None = None,
        pause: Callable[[], None] = lambda: None,
        history_points: Callable[[str], int | None] = lambda task_id: None,
        notice: Callable[[dict[str, Any]], bool] = lambda event: False,
        on_log: Callable[[dict[str, Any]], None] = lambda event: None,
    ) -> None:
        self.celery = celery_app
        self.store = store
        # Celery's cluster state, for the workers (heartbeats, load, online/offline). Tasks live in
        # the registry: a second, in-memory copy of every task would cost more than the writes.
        self.state = State()
        self.on_task = on_task
        self.on_status = on_status
        self.on_events = on_events
        self.on_worker = on_worker
        self.idle_timeout = idle_timeout
        self.max_batch = max_batch
        self.spawn = spawn
        self.pause = pause
        self.history_points = history_points
        # Another server's notice of a change no Celery event carries (``pulse.notices``): its
        # task is read and pushed like one that reported progress.
        self.notice = notice
        # A task's log lines (``pulse.agent.logs``): pushed to its page, no registry write (the
        # worker wrote them).
        self.on_log = on_log
        self.connected = False
        self.connected_since: float | None = None
        self.last_event_at: float | None = None
        self.events_seen = 0
        self.newest_event_at: float | None = None
        self._stream: EventStream | ReceiverStream | None = None
        self._stopping = False

    def handle(self, event: dict[str, Any]) -> None:
        """Apply one event; see ``handle_batch``."""
        self.handle_batch([event])

    def handle_batch(self, events: list[dict[str, Any]]) -> None:
        """Apply events to the state and the registry, then report each changed task once.

        A malformed event is logged and skipped; the registry is written for the whole batch in
        one round trip. Raises only when Redis fails (the caller reconnects).
        """
        self._store(*self._prepare(events))

    def _prepare(self, events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Counter]:
        """Check the events and apply the workers' to the state; returns (task events, kinds)."""
        self.last_event_at = now = time.time()
        kinds: Counter = Counter()
        task_events: list[dict[str, Any]] = []
        for event in events:
            try:
                self._check(event, now)
                if event["type"] == "task-log":
                    self.on_log(event)
                elif event["type"].startswith("task-"):
                    task_events.append(event)
                elif self.notice(event):
                    task_events += changed(event)
                else:
                    self._worker_event(event)
                kinds[event["type"]] += 1
            except Exception:  # one malformed event must not stop the monitor
                log.exception("pulse: could not handle event %.200r", event)
        return task_events, kinds

    def _store(self, task_events: list[dict[str, Any]], kinds: Counter) -> None:
        """Write the task events into the registry, report the changed tasks, count the batch."""
        if task_events:
            for data in self.store.apply_events(task_events, self.history_points):
                self.on_task(data)
        self.events_seen += sum(kinds.values())
        self.on_events(kinds)

    def _check(self, event: dict[str, Any], now: float) -> None:
        """Raise ValueError for an event Pulse cannot use; note its timestamp."""
        if not isinstance(event.get("type"), str):
            raise ValueError("an event without a type")
        if event["type"].startswith("task-") and not valid_id(event.get("uuid")):
            raise ValueError("a task event without a valid uuid")
        event.setdefault("local_received", now)
        stamp = event.get("timestamp")
        if isinstance(stamp, int | float):
            self.newest_event_at = max(stamp, self.newest_event_at or stamp)

    def _worker_event(self, event: dict[str, Any]) -> None:
        self.state.event(event)
        if event["type"].startswith("worker-") and event.get("hostname"):
            self.on_worker(event["hostname"])

    def run(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Capture events forever, reconnecting with backoff; returns after ``stop()``."""
        delay = 0.5
        while not self._stopping:
            try:
                with self.celery.connection_for_read() as conn:
                    conn.ensure_connection(max_retries=1)
                    delay = 0.5
                    self._capture(conn)
            except StreamSilent as exc:
                # Not even a ping answered: Redis is frozen. Say so now (connecting again may
                # hang on it for a socket timeout), then reconnect rather than wait on this socket.
                self._set_connected(False)
                log.warning("pulse: event stream lost (%s); reconnecting", exc)
                continue
            except TimeoutError:
                # Celery's own receiver (another broker) heard nothing for idle_timeout seconds,
                # though workers heartbeat every ~2 s: reconnect rather than wait on a dead socket.
                log.info("pulse: no events for %.0fs, reconnecting", self.idle_timeout)
                continue
            except Exception as exc:  # broker gone: back off and retry
                self._set_connected(False)
                if self._stopping:
                    break
                log.warning("pulse: event stream lost (%r); retrying in %.1fs", exc, delay)
                sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
        self._set_connected(False)

    def _capture(self, conn) -> None:
        try:
            stream = EventStream(self.celery, conn.default_channel, self.idle_timeout, self.max_batch)
        except UnsupportedBroker:  # not Redis: Celery's own receiver, its events taken in batches
            stream = ReceiverStream(self.celery, conn, self.idle_timeout, self.max_batch)
        writing, self._stream = None, stream
        self._set_connected(True)  # subscribed: from now on no event is missed
        paused = time.monotonic()
        try:
            for batch in stream.batches():
                if self._stopping:
                    return
                if stream.undecodable:  # a stray publisher on the channel: counted, not fatal
                    self.on_events({UNDECODABLE: stream.undecodable})
                    stream.undecodable = 0
                prepared = self._prepare(batch)
                self._wait(writing)
                if self.spawn is None:
                    self._store(*prepared)
                else:
                    # While Redis runs this batch's writes, the next batch is read and decoded:
                    # the monitor otherwise sat idle for every round trip. One batch in flight
                    # at a time keeps them in order.
                    writing = _Writing(self.spawn, self._store, prepared)
                # With a backlog the socket always has data, so nothing here would wait: let the
                # web server's other green threads (requests, pushes) run every PAUSE_EVERY.
                if time.monotonic() - paused > PAUSE_EVERY:
                    self.pause()
                    paused = time.monotonic()
        finally:
            self._stream = None
            stream.close()
        self._wait(writing)

    @staticmethod
    def _wait(writing: "_Writing | None") -> None:
        if writing is not None:
            writing.join()  # raises what the write raised (Redis failed): the caller reconnects

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            self.connected_since = time.time() if connected else None
            self.on_status(connected)

    def stop(self) -> None:
        """Ask ``run`` to return after the current wait."""
        self._stopping = True
        if self._stream is not None:
            self._stream.stop()

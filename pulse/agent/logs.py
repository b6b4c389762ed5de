"""Live task logs: the log lines of the task that is running, captured in the worker.

A logging handler on Celery's task logger (``celery.task``, the parent of every
``get_task_logger`` logger) and on the loggers named in ``PULSE_LOG_LOGGERS`` keeps the records
at or above ``PULSE_LOG_LEVEL`` of the task running in the current thread: the handler notes it at the
task's ``task_prerun`` and forgets it at ``task_postrun``, which run in the task's own thread, by
its ``threading.get_ident()`` (per green thread under eventlet and gevent, which patch it; a
prefork child runs one task at a time). They are written a batch at a time, at most
every ``FLUSH_EVERY`` seconds per task and when the task ends, and each batch is announced with a
``task-log`` event for the live pane. Nothing here raises into the task: a write that fails
counts its lines as lost, and for ``OUTAGE_PAUSE`` seconds lines are only counted.

A task opts in to showing its lines to per-task tokens (the embeddable widget) with
``@app.task(pulse_expose_logs=True)``; otherwise only the operator and viewers see them.
"""

import logging
import threading
import time
from collections import deque
from typing import Any

from celery import Celery, signals
from redis.exceptions import MaxConnectionsError

from pulse.record.logs import KEEP, LINE_LIMIT, TaskLogs

from . import wire
from .progress_writer import progress_writer

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.25
OUTAGE_PAUSE = 5.0
EVENT_LIMIT = 64 * 1024  # characters of messages one task-log event carries; above, numbers only
TASK_LOGGER = "celery.task"
_clock = time.monotonic  # one global lookup per call, not two


class _Pending:
    """One running task's lines not written yet, and what its writer let go."""

    __slots__ = ("task", "task_id", "outer", "lines", "dropped", "lost", "due", "next_seq", "exposed_written")

    def __init__(self, task: Any, outer: "_Pending | None") -> None:
        self.task = task
        self.task_id: str = task.request.id
        self.outer = outer  # the task this one was called in (``apply`` inside a task), resumed after
        self.lines: deque = deque(maxlen=KEEP)  # more than KEEP between two writes: the oldest go
        self.dropped = 0
        self.lost = 0
        self.due = 0.0  # monotonic time of the next write: the first line goes out at once
        self.next_seq = 1  # the number the next line written should get (not if the task ran before)
        self.exposed_written = False


class TaskLogHandler(logging.Handler):
    """Buffers the running task's records and writes them to its log in the registry."""

    def __init__(self, app: Celery, logs: TaskLogs, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.app = app
        self.logs = logs
        # The task running in each thread, by ``threading.get_ident()``, looked up at every call:
        # eventlet and gevent patch it to name the green thread, whenever this module was imported
        # (a ``threading.local`` made before the patch would be one for all green threads). And a
        # ``getattr(local, name, default)`` for a name not set raises inside: 0.8 us a call.
        self.running: dict[int, _Pending] = {}
        self.paused_until = 0.0  # after a failed write: count, do not write (see OUTAGE_PAUSE)

    def handle(self, record: logging.LogRecord) -> None:
        """Keep ``record`` if a task runs in this thread. Without logging's per-handler lock and
        filters: this thread touches its own task's buffer only, and a call in a task's tight
        loop must cost little. The level was checked by the logger (``callHandlers``)."""
        pending = self.running.get(threading.get_ident())
        # None also while this thread writes: what redis and kombu log then is not the task's.
        if pending is None or getattr(record, "pulse_kept", None) is self:
            return  # or kept already, through another of the loggers this handler is on
        try:
            record.pulse_kept = self
            try:
                message = record.getMessage()  # now: its arguments may change after the call
            except Exception as exc:  # a bad format string in the user's call: keep what can be kept
                message = f"{record.msg!r} (unformattable: {type(exc).__name__})"
            if record.exc_info or record.exc_text or len(message) > LINE_LIMIT:
                message = full_message(record, message)
            lines = pending.lines
            if len(lines) == KEEP:
                pending.dropped += 1
            lines.append((record.created, record.levelname, record.name, message))
            if _clock() >= pending.due:  # not the record's wall time: a clock step must not hold lines
                self.write(pending)
        except Exception:  # a log call must never fail the task
            pass

    emit = handle

    def write(self, pending: _Pending) -> None:
        """Write ``pending``'s lines and announce them (see ``store``), unless paused."""
        batch = list(pending.lines)
        pending.lines.clear()
        now = _clock()
        pending.due = now + FLUSH_EVERY
        if not batch and not pending.dropped and not pending.lost:
            return
        if now < self.paused_until:
            pending.lost += len(batch)
            return
        ident = threading.get_ident()
        current = self.running.pop(ident, None)  # see handle: our own write's records are not kept
        try:
            self.store(pending, batch)
        finally:
            if current is not None:
                self.running[ident] = current

    def store(self, pending: _Pending, batch: list[tuple[float, str, str, str]]) -> None:
        """Append ``batch`` to the task's lines, with the counts, and announce it. Lines that could
        not be written are counted lost, and writes pause; lines written but not announced are
        not lost: the page reads them when it next loads, or with the next push."""
        task, task_id = pending.task, pending.task_id
        lines = [line_json(line) for line in batch]
        exposed = bool(getattr(task, "pulse_expose_logs", False))
        try:
            publish = self.announcement(pending, lines, exposed) if lines else None
            first = self.logs.append(task_id, lines, pending.dropped, pending.lost, publish=publish)
        except MaxConnectionsError:
            # Every connection of the client's pool is busy (more tasks writing at once than it
            # holds: a gevent pool of hundreds): Redis is there, the lines go with the next write.
            pending.lines.extendleft(reversed(batch))
            return
        except Exception as exc:
            pending.lost += len(lines)
            self.paused_until = _clock() + OUTAGE_PAUSE
            log.warning("pulse: %d log lines of task %s not written: %r", len(lines), task_id, exc)
            return
        pending.dropped = pending.lost = 0
        pending.next_seq = first + len(lines)
        try:
            if exposed and not pending.exposed_written:
                self.logs.registry.write(task_id, fields={"logs_exposed": True})
                pending.exposed_written = True
            if lines and (publish is None or publish[0] != first):
                self.announce(task, first, lines, exposed)
        except Exception as exc:
            if not isinstance(exc, MaxConnectionsError):
                self.paused_until = _clock() + OUTAGE_PAUSE
            log.warning("pulse: log lines %d to %d of task %s written, not announced: %r", first,
                        first + len(lines) - 1, task_id, exc)

    def announcement(self, pending: _Pending, lines: list[dict[str, Any]],
                     exposed: bool) -> tuple[int, str, bytes] | None:
        """The ``task-log`` event as the lines' script publishes it in the same round trip (on the
        channel and in the format of Celery's dispatcher), numbered from the number the task's
        next line should get; None where the broker is not the registry's Redis."""
        writer = progress_writer(self.app)
        if writer is None:
            return None
        first = pending.next_seq
        body = wire.event("task-log", pending.task.request.hostname, self.app.clock.forward(),
                          uuid=pending.task_id, **log_event(first, lines, exposed))
        routing_key, message = wire.encode(body, writer.exchange)
        return first, wire.topic(writer.prefix, writer.patterns, writer.exchange, routing_key), message

    def announce(self, task: Any, first: int, lines: list[dict[str, Any]], exposed: bool) -> None:
        """The ``task-log`` event through Celery's dispatcher: with another broker, or when the
        lines were not numbered as expected (the task ran before, with the same id)."""
        task.send_event("task-log", retry=False, **log_event(first, lines, exposed))

    def started(self, task: Any) -> None:
        """``task`` runs in this thread (or green thread) from now on, until ``finish``."""
        ident = threading.get_ident()
        self.running[ident] = _Pending(task, self.running.get(ident))

    def finish(self, task: Any) -> None:
        """The task ended: write what is left, and go back to the task it was called in, if any."""
        ident = threading.get_ident()
        pending = self.running.get(ident)
        if pending is None or pending.task is not task:
            return
        if pending.outer is None:
            del self.running[ident]
        else:
            self.running[ident] = pending.outer
        try:
            self.write(pending)
        except Exception:
            pass


def full_message(record: logging.LogRecord, message: str) -> str:
    """``message`` with the record's traceback after it, cut at ``LINE_LIMIT`` characters."""
    if record.exc_info and not record.exc_text:
        try:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        except Exception:
            record.exc_text = None
    if record.exc_text:
        message = f"{message}\n{record.exc_text}"
    if len(message) > LINE_LIMIT:
        message = f"{message[:LINE_LIMIT]}… ({len(message) - LINE_LIMIT} more characters cut)"
    return message


def log_event(first: int, lines: list[dict[str, Any]], exposed: bool) -> dict[str, Any]:
    """A ``task-log`` event's fields: the lines themselves when small, else their numbers only
    (the page reads them from the API)."""
    size = sum(len(line["message"]) for line in lines)
    return {"first": first, "last": first + len(lines) - 1, "lines": lines if size <= EVENT_LIMIT else None,
            "exposed": exposed}


def line_json(line: tuple[float, str, str, str]) -> dict[str, Any]:
    """A buffered line as stored (built for the lines written only, not those let go)."""
    at, level, logger, message = line
    return {"at": at, "level": level, "logger": logger[:200], "message": message}


def install(app: Celery, logs: TaskLogs, level: int, loggers: tuple[str, ...]) -> TaskLogHandler:
    """Attach the handler in this worker process, and again whenever Celery sets its loggers up:
    the worker's logging setup empties ``celery.task``'s handlers (``worker_hijack_root_logger``)
    after ``worker_init``, and a prefork child is set up after the fork."""
    handler = TaskLogHandler(app, logs, level)
    names = tuple(dict.fromkeys((TASK_LOGGER, *loggers)))

    def attach(**_: Any) -> None:
        for name in names:
            logger = logging.getLogger(name)
            if handler not in logger.handlers:
                logger.addHandler(handler)

    def on_prerun(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            handler.started(sender)

    def on_postrun(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            handler.finish(sender)

    attach()
    uid = f"pulse.logs.{id(app)}"
    signals.after_setup_task_logger.connect(attach, weak=False, dispatch_uid=f"{uid}.setup")
    signals.worker_process_init.connect(attach, weak=False, dispatch_uid=f"{uid}.child")
    signals.worker_ready.connect(attach, weak=False, dispatch_uid=f"{uid}.ready")
    signals.task_prerun.connect(on_prerun, weak=False, dispatch_uid=f"{uid}.prerun")
    signals.task_postrun.connect(on_postrun, weak=False, dispatch_uid=uid)
    return handler

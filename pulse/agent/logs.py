"""Live task logs: the log lines of the task that is running, captured in the worker.

A logging handler on Celery's task logger (``celery.task``, the parent of every
``get_task_logger`` logger) and on the loggers named in ``PULSE_LOG_LOGGERS`` keeps the records
at or above ``PULSE_LOG_LEVEL`` of the task running in the current thread: the handler notes it at the
task's ``task_prerun`` and forgets it at ``task_postrun``, which run in the task's own thread, in a
``threading.local`` (per green thread under eventlet and gevent, which patch it; a prefork child
runs one task at a time). They are written a batch at a time, at most
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

from pulse.record.logs import KEEP, LINE_LIMIT, TaskLogs

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.25
OUTAGE_PAUSE = 5.0
EVENT_LIMIT = 64 * 1024  # characters of messages one task-log event carries; above, numbers only
TASK_LOGGER = "celery.task"


class _Pending:
    """One task's lines not written yet, and what its writer let go."""

    __slots__ = ("lines", "dropped", "lost", "due", "exposed_written")

    def __init__(self) -> None:
        self.lines: deque = deque(maxlen=KEEP)  # more than KEEP between two writes: the oldest go
        self.dropped = 0
        self.lost = 0
        self.due = 0.0  # monotonic time of the next write
        self.exposed_written = False


class TaskLogHandler(logging.Handler):
    """Buffers the running task's records and writes them to its log in the registry."""

    def __init__(self, app: Celery, logs: TaskLogs, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.app = app
        self.logs = logs
        self.pending: dict[str, _Pending] = {}
        self.paused_until = 0.0  # after a failed write: count, do not write (see OUTAGE_PAUSE)
        self._local = threading.local()

    def handle(self, record: logging.LogRecord) -> bool:
        # Without logging's per-handler lock and filters: emit keeps to what its thread owns
        # (its own task's buffer), and a call in a task's tight loop must cost little.
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False) or getattr(record, "pulse_kept", False):
            return  # logged by our own write (redis, kombu), or kept already by another logger
        record.pulse_kept = True
        task = getattr(self._local, "task", None)  # Celery's get_current_task costs 2 us a call
        if task is None:
            return
        request = task.request
        try:
            pending = self.pending.get(request.id)
            if pending is None:
                pending = self.pending[request.id] = _Pending()
            if record.levelno < self.level:
                return
            if len(pending.lines) == KEEP:
                pending.dropped += 1
            pending.lines.append(record_line(record))
            if time.monotonic() >= pending.due:
                self.write(task, pending)
        except Exception:  # a log call must never fail the task
            pass

    def write(self, task: Any, pending: _Pending) -> None:
        """Write ``pending``'s lines and announce them; on failure count them lost."""
        lines = [line_json(line) for line in pending.lines]
        pending.lines.clear()
        now = time.monotonic()
        pending.due = now + FLUSH_EVERY
        if not lines and not pending.dropped and not pending.lost:
            return
        if now < self.paused_until:
            pending.lost += len(lines)
            return
        task_id = task.request.id
        exposed = bool(getattr(task, "pulse_expose_logs", False))
        self._local.busy = True
        try:
            first = self.logs.append(task_id, lines, pending.dropped, pending.lost)
            pending.dropped = pending.lost = 0
            if exposed and not pending.exposed_written:
                self.logs.registry.write(task_id, fields={"logs_exposed": True})
                pending.exposed_written = True
            if lines:
                self.announce(task, first, lines, exposed)
        except Exception as exc:
            pending.lost += len(lines)
            self.paused_until = time.monotonic() + OUTAGE_PAUSE
            log.warning("pulse: %d log lines of task %s not written: %r", len(lines), task_id, exc)
        finally:
            self._local.busy = False

    def announce(self, task: Any, first: int, lines: list[dict[str, Any]], exposed: bool) -> None:
        """The ``task-log`` event: the lines themselves when small, else their numbers only (the
        page reads them from the API)."""
        size = sum(len(line["message"]) for line in lines)
        task.send_event("task-log", retry=False, first=first, last=first + len(lines) - 1,
                        lines=lines if size <= EVENT_LIMIT else None, exposed=exposed)

    def started(self, task: Any) -> None:
        """``task`` runs in this thread (or green thread) from now on, until ``finish``."""
        self._local.task = task

    def finish(self, task: Any) -> None:
        """The task ended: write what is left and forget it."""
        if getattr(self._local, "task", None) is task:
            self._local.task = None
        task_id = getattr(getattr(task, "request", None), "id", None)
        pending = self.pending.pop(task_id, None) if task_id else None
        if pending is not None:
            try:
                self.write(task, pending)
            except Exception:
                pass


def record_line(record: logging.LogRecord) -> tuple[float, str, str, str]:
    """What a record leaves in the buffer: time, level, logger, message (formatted now: its
    arguments may change after the call, as ``QueueHandler`` knows)."""
    try:
        message = record.getMessage()
    except Exception as exc:  # a bad format string in the user's call: keep what can be kept
        message = f"{record.msg!r} (unformattable: {type(exc).__name__})"
    if record.exc_info and not record.exc_text:
        try:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        except Exception:
            record.exc_text = None
    if record.exc_text:
        message = f"{message}\n{record.exc_text}"
    if len(message) > LINE_LIMIT:
        message = f"{message[:LINE_LIMIT]}… ({len(message) - LINE_LIMIT} more characters cut)"
    return record.created, record.levelname, record.name, message


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

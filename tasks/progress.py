"""Progress and structured-failure reporting, for any bound Celery task.

``report_progress(self, current, total, message)`` stores a PROGRESS state (durable, for late
joiners and the REST API) and sends a ``task-progress`` event (live). ``fail(self, message,
**details)`` stores a FAILURE with custom details, sends ``task-failed`` and raises ``Ignore``.
"""

import logging
import math
import sys
import time
import traceback
from collections.abc import Iterable
from typing import Any, NoReturn

from celery import Task, states
from celery.exceptions import Ignore

from . import lifecycle
from .progress_writer import progress_writer
from .safejson import MAX_KEY, bounded_json, bounded_text

log = logging.getLogger(__name__)

PROGRESS = "PROGRESS"
MESSAGE_LIMIT = 1000
TYPE_LIMIT = 200
# All of a failure's custom details together (each one is bounded to safejson.MAX_CHARS too);
# more becomes a truncated preview.
DETAILS_LIMIT = 65_536
# Keys of a FAILURE meta that Celery itself reads; custom details may not reuse them.
FAILURE_KEYS = frozenset({"exc_type", "exc_message", "exc_module", "exc_cls"})
# After a failed write, progress is not attempted for this long: with Redis down every
# attempt costs a connection timeout, and a task's loop must not pay that per call.
OUTAGE_PAUSE = 5.0


class TaskFailure(Exception):
    """The default exception type of a structured failure."""


def _number(value: Any) -> float | int | None:
    """A finite number, or None for anything else (NaN, infinity, text, an int beyond a float)."""
    exact = isinstance(value, int) and not isinstance(value, bool) and abs(value) <= 2**53
    try:
        value = value if exact else float(value)
    except Exception:  # not a number, an int too large for a float, or a __float__ that raises
        return None
    return value if math.isfinite(value) else None


def progress_meta(current: Any, total: Any = None, message: Any = None) -> dict[str, Any]:
    """The PROGRESS meta: current (a finite number >= 0), total (a positive number, or None if
    unknown), percent (0-100, or None without a total) and message (at most MESSAGE_LIMIT
    characters, or None). Never raises, whatever it is given."""
    current = max(_number(current) or 0, 0)
    total = _number(total)
    if total is not None and total <= 0:
        total = None
    percent = None
    if total is not None:
        percent = round(min(max(current / total * 100.0, 0.0), 100.0), 1)
    message = bounded_text(message, MESSAGE_LIMIT)
    return {"current": current, "total": total, "percent": percent, "message": message}


def report_progress(task: Task, current: Any, total: Any = None, message: Any = None) -> bool:
    """Report progress; returns True when it was sent, False when throttled or not sent.

    Calls closer together than ``pulse_progress_interval`` (default 0.25 s) return at once;
    the first call and the one reaching ``total`` always go out. Never raises for a broker or
    backend error: reporting progress must not fail the task.
    """
    request = task.request
    if request.id is None:  # called directly, not as a task: nothing to report to
        return False
    now = time.monotonic()
    final = _reached(current, total)
    in_outage = getattr(request, "pulse_outage", False)
    if now < getattr(request, "pulse_next", 0.0) and (in_outage or not final):
        return False
    meta = progress_meta(current, total, message)
    try:
        _send(task, meta, point=(time.time(), meta["current"]))
    except Exception as exc:  # any broker/backend error: log and carry on with the task
        log.warning("pulse: progress of task %s not reported: %r", request.id, exc)
        # Counted from the failure, not the call: a frozen Redis takes a whole socket timeout to
        # fail, and counted from the call that would leave no pause at all.
        request.pulse_outage, request.pulse_next = True, time.monotonic() + OUTAGE_PAUSE
        return False
    interval = getattr(request, "pulse_interval", None)
    if interval is None:
        interval = request.pulse_interval = float(task.app.conf.get("pulse_progress_interval", 0.25))
    request.pulse_outage, request.pulse_next = False, now + interval
    return True


def _send(task: Task, meta: dict[str, Any], point: tuple[float, float]) -> None:
    writer = progress_writer(task.app)
    if writer is not None:  # all three in one round trip
        writer.write(task, PROGRESS, meta, point)
        return
    # The live event goes last, so whoever reacts to it reads the stored state.
    _record(task, "running", {"state": PROGRESS, "progress": meta}, point=point)
    task.update_state(state=PROGRESS, meta=meta)
    task.send_event("task-progress", retry=False, **meta)


def _reached(current: Any, total: Any) -> bool:
    current, total = _number(current), _number(total)
    return current is not None and total is not None and current >= total


def failure_meta(message: Any, exc_type: type[BaseException] | str, details: dict) -> dict:
    """The FAILURE meta that Celery's ``AsyncResult`` can rebuild, plus the custom details."""
    clash = FAILURE_KEYS.intersection(details)
    if clash:
        raise TypeError(f"fail(): detail names {sorted(clash)} are reserved by Celery; rename them")
    if isinstance(exc_type, type) and issubclass(exc_type, BaseException):
        type_name, module = exc_type.__qualname__, exc_type.__module__
    else:  # a bare name: Celery rebuilds an exception class of that name when reading
        type_name, module = exc_type, "builtins"
    meta = bounded_json({key: bounded_json(value) for key, value in details.items()}, DETAILS_LIMIT)
    meta.update(exc_type=bounded_text(type_name, TYPE_LIMIT),
                exc_message=[bounded_text(message, MESSAGE_LIMIT)], exc_module=module)
    return meta


def fail(
    task: Task,
    message: Any,
    exc_type: type[BaseException] | str = TaskFailure,
    expose: Iterable[str] = (),
    **details: Any,
) -> NoReturn:
    """Fail the task with structured details, then raise ``Ignore`` (the Ignore() pattern).

    Stores state FAILURE with ``exc_type``, ``exc_message``, ``exc_module``, the custom
    ``details`` and the traceback, and sends a ``task-failed`` event carrying them (a raised
    ``Ignore`` sends no event by itself). ``expose`` names the details that holders of a per-task
    token (the widget on the host application's page) may see; operators see them all. If the
    failure cannot be stored, the exception is raised instead of ``Ignore`` so that Celery's own
    failure handling still records it.
    """
    meta = failure_meta(message, exc_type, details)
    exception = f"{meta['exc_type']}({meta['exc_message'][0]!r})"
    tb = traceback.format_exc() if sys.exc_info()[0] is not None else _stack_traceback(meta)
    tb = bounded_text(tb)  # stored, recorded and sent: a giant exception text would be paid three times
    try:
        task.update_state(state=states.FAILURE, meta=meta, traceback=tb)
    except Exception as exc:  # backend down: let Celery record a plain failure instead
        log.warning("pulse: structured failure of task %s not stored: %r", task.request.id, exc)
        raise TaskFailure(meta["exc_message"][0]) from exc
    details = {k: v for k, v in meta.items() if k not in FAILURE_KEYS}
    try:
        _record(task, "failed", {
            "state": states.FAILURE, "finished_at": time.time(), "has_result": True,
            "failure": {"exc_type": meta["exc_type"], "exc_message": meta["exc_message"][0],
                        "traceback": tb, "details": details,
                        "exposed": _exposed(expose, details)},
        })
        lifecycle.abandon_chain(task, task.request)
        task.send_event(
            "task-failed", retry=False, exception=exception, traceback=tb,
            exc_type=meta["exc_type"], exc_message=meta["exc_message"], details=details,
        )
    except Exception as exc:  # stored already: the registry and the live event follow it
        log.warning("pulse: failure of task %s not recorded or announced: %r", task.request.id, exc)
    raise Ignore()


def _exposed(expose: Iterable[str], details: dict) -> list[str]:
    # Detail names were cut to MAX_KEY characters with the details: cut the exposed ones alike.
    return [name for name in (bounded_text(name, MAX_KEY) for name in expose) if name in details]


def _record(task: Task, status: str, fields: dict, point: tuple | None = None) -> None:
    registry = lifecycle.registry_of(task.app)
    if registry is not None:
        registry.write(task.request.id, status, fields=fields, point=point)



def _stack_traceback(meta: dict) -> str:
    """A traceback-shaped text for a failure raised outside an ``except`` block."""
    frames = "".join(traceback.format_stack()[:-2])  # up to the caller of fail()
    return f"Traceback (most recent call last):\n{frames}{meta['exc_type']}: {meta['exc_message'][0]}\n"

"""Structured failures: ``fail(self, message, **details)``.

It stores a FAILURE meta with custom details (the Ignore() pattern: Celery's ``AsyncResult`` can
rebuild it), records it (``pulse.record.failures`` shapes it), sends ``task-failed`` and raises
``Ignore``.
"""

import logging
import sys
import time
import traceback
from collections.abc import Iterable
from typing import Any, NoReturn

from celery import Task, states
from celery.exceptions import Ignore

from pulse.record.failures import DETAILS_LIMIT, FAILURE_KEYS, TYPE_LIMIT, failure_json
from pulse.record.safejson import bounded_json, bounded_text
from pulse.record.statuses import FAILED

from . import lifecycle
from .progress import MESSAGE_LIMIT

log = logging.getLogger(__name__)


class TaskFailure(Exception):
    """The default exception type of a structured failure."""

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
        lifecycle.record(task, FAILED, {
            "state": states.FAILURE, "finished_at": time.time(), "has_result": True,
            "failure": failure_json(meta["exc_type"], meta["exc_message"][0], tb, details, expose),
        })
        lifecycle.abandon_chain(task, task.request)
        task.send_event(
            "task-failed", retry=False, exception=exception, traceback=tb,
            exc_type=meta["exc_type"], exc_message=meta["exc_message"], details=details,
        )
    except Exception as exc:  # stored already: the registry and the live event follow it
        log.warning("pulse: failure of task %s not recorded or announced: %r", task.request.id, exc)
    raise Ignore()


def _stack_traceback(meta: dict) -> str:
    """A traceback-shaped text for a failure raised outside an ``except`` block."""
    frames = "".join(traceback.format_stack()[:-2])  # up to the caller of fail()
    return f"Traceback (most recent call last):\n{frames}{meta['exc_type']}: {meta['exc_message'][0]}\n"

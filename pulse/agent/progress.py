"""Progress reporting, for any bound Celery task of an app Pulse was installed in.

``report_progress(self, current, total, message)`` stores a PROGRESS state (durable, for late
joiners and the REST API), records it in the registry and sends a ``task-progress`` event (live).
"""

import logging
import math
import time
from typing import Any

from celery import Task

from pulse.agent import lifecycle
from pulse.agent.progress_writer import progress_writer
from pulse.record.safejson import bounded_text
from pulse.record.statuses import PROGRESS, RUNNING  # noqa: F401 - the state task authors may compare with

log = logging.getLogger(__name__)


MESSAGE_LIMIT = 1000
# After a failed write, progress is not attempted for this long: with Redis down every
# attempt costs a connection timeout, and a task's loop must not pay that per call.
OUTAGE_PAUSE = 5.0


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
        agent = getattr(task.app, "pulse", None)  # None: an app Pulse was not installed in
        interval = request.pulse_interval = agent.settings.progress_interval if agent else 0.25
    request.pulse_outage, request.pulse_next = False, now + interval
    return True


def _send(task: Task, meta: dict[str, Any], point: tuple[float, float]) -> None:
    writer = progress_writer(task.app)
    if writer is not None:  # all three in one round trip
        writer.write(task, PROGRESS, meta, point)
        return
    # The live event goes last, so whoever reacts to it reads the stored state.
    lifecycle.record(task, RUNNING, {"state": PROGRESS, "progress": meta}, point=point)
    task.update_state(state=PROGRESS, meta=meta)
    task.send_event("task-progress", retry=False, **meta)


def _reached(current: Any, total: Any) -> bool:
    current, total = _number(current), _number(total)
    return current is not None and total is not None and current >= total

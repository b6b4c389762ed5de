"""The task JSON: one shape for a task in the REST API, the Socket.IO pushes and the pages.

It merges what the event monitor saw (live, but only since the server started) with what
Celery's result backend holds (durable until ``result_expires``), keeping the later state.
"""

import re
from datetime import datetime
from typing import Any

from celery import states
from celery.events.state import Task

from tasks.progress import FAILURE_KEYS, PROGRESS, progress_meta
from tasks.safejson import bounded_json

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,254}")
STATUS_BY_STATE = {
    states.PENDING: "scheduled",
    states.RECEIVED: "scheduled",
    states.STARTED: "running",
    PROGRESS: "running",
    states.RETRY: "retrying",
    states.SUCCESS: "finished",
    states.FAILURE: "failed",
    states.REJECTED: "failed",
    states.REVOKED: "revoked",
}
FINAL_STATES = frozenset({states.SUCCESS, states.FAILURE, states.REVOKED, states.REJECTED})
_RANK = {states.PENDING: 0, states.RECEIVED: 1, states.STARTED: 2, states.RETRY: 2}


def valid_id(task_id: Any) -> bool:
    """Whether ``task_id`` looks like a Celery task id (a UUID or a custom id of safe characters)."""
    return isinstance(task_id, str) and ID_PATTERN.fullmatch(task_id) is not None


def status_of(state: str | None) -> str:
    """Pulse's lower-case status for a Celery state; custom states count as running."""
    if state is None:
        return "unknown"
    return STATUS_BY_STATE.get(state, "running")


def _rank(state: str | None) -> int:
    if state is None:
        return -1
    if state in FINAL_STATES:
        return 9
    return _RANK.get(state, 3)  # PROGRESS and other custom states: the task is running


def unknown_json(task_id: str) -> dict[str, Any]:
    """The JSON of an id Pulse has never seen: status ``unknown``, never a bare PENDING."""
    return {
        "id": task_id, "name": None, "state": None, "status": "unknown", "progress": None,
        "result": None, "failure": None, "worker": None, "sent_at": None, "received_at": None,
        "started_at": None, "finished_at": None, "runtime": None,
    }


def task_json(task_id: str, task: Task | None = None, meta: dict | None = None) -> dict[str, Any]:
    """Describe a task from its monitor record and/or its raw result-backend entry."""
    event_state = task.state if task is not None else None
    meta_state = meta.get("status") if meta else None
    # Events win a tie: they are at least as recent as the backend for the same state.
    state = event_state if _rank(event_state) >= _rank(meta_state) else meta_state
    out = unknown_json(task_id)
    if state is None:
        return out
    meta = meta or {}
    out.update(
        name=_first(getattr(task, "name", None), meta.get("name")),
        state=state,
        status=status_of(state),
        progress=_progress(state, task, meta),
        worker=_worker(task, meta),
        **_times(task, meta, state),
    )
    if state == states.SUCCESS:
        out["result"] = _result(task, meta)
    elif state in (states.FAILURE, states.REJECTED):
        out["failure"] = _failure(task, meta)
    return out


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _progress(state: str, task: Task | None, meta: dict) -> dict | None:
    fields = task.__dict__ if task is not None else {}
    if "current" in fields:  # a task-progress event reached the monitor
        last = progress_meta(fields.get("current"), fields.get("total"), fields.get("message"))
    elif meta.get("status") == PROGRESS and isinstance(meta.get("result"), dict):
        stored = meta["result"]
        last = progress_meta(stored.get("current"), stored.get("total"), stored.get("message"))
    else:
        last = None
    if state != states.SUCCESS:
        return last
    # A finished task keeps its last progress, completed, so a success always reads 100%.
    last = last or progress_meta(1, 1)
    if last["total"] is not None:
        last["current"] = last["total"]
    last["percent"] = 100.0
    return last


def _result(task: Task | None, meta: dict) -> Any:
    if meta.get("status") == states.SUCCESS:
        return bounded_json(meta.get("result"))
    # Only the event's repr is known (the backend entry expired or was not read yet).
    return bounded_json(getattr(task, "result", None))


def _failure(task: Task | None, meta: dict) -> dict[str, Any]:
    stored = meta.get("result") if meta.get("status") == states.FAILURE else None
    if isinstance(stored, dict) and "exc_type" in stored:
        source, traceback = stored, meta.get("traceback")
    else:  # from the task-failed event: Celery's (exception repr) or tasks.fail's (details)
        source = task.__dict__ if task is not None else {}
        traceback = source.get("traceback")
    exception = source.get("exception") or ""
    exc_type = source.get("exc_type") or exception.partition("(")[0] or None
    message = source.get("exc_message", exception)
    if isinstance(message, list | tuple):
        message = ", ".join(str(part) for part in message)
    details = source.get("details") if source is not stored else {
        key: value for key, value in stored.items() if key not in FAILURE_KEYS
    }
    return {
        "exc_type": exc_type,
        "exc_message": bounded_json(message),
        "traceback": bounded_json(traceback),
        "details": bounded_json(details or {}),
    }


def _worker(task: Task | None, meta: dict) -> str | None:
    worker = getattr(task, "worker", None)
    return _first(getattr(worker, "hostname", None), meta.get("worker"))


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def _times(task: Task | None, meta: dict, state: str) -> dict[str, float | None]:
    get = (lambda name: getattr(task, name, None)) if task is not None else (lambda name: None)
    finished = None
    if state in FINAL_STATES:
        finished = _first(get("succeeded"), get("failed"), get("revoked"), get("rejected"),
                          _epoch(meta.get("date_done")))
    started = get("started")
    runtime = get("runtime")
    if runtime is None and started is not None and finished is not None:
        runtime = round(finished - started, 6)
    return {
        "sent_at": get("sent"),
        "received_at": get("received"),
        "started_at": started,
        "finished_at": finished,
        "runtime": runtime,
    }

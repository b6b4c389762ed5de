"""The task JSON: one shape for a task in the REST API, the Socket.IO pushes and the pages.

It is built from the task's registry record. ``meta_write`` and ``event_write`` translate what
Celery's result backend and its events say into registry writes.
"""

import re
from datetime import datetime
from typing import Any

from celery import states

from tasks.lifecycle import REPR_LIMIT
from tasks.progress import DETAILS_LIMIT, FAILURE_KEYS, PROGRESS, TYPE_LIMIT, progress_meta
from tasks.registry import ACTIVE, RESOLVED
from tasks.safejson import bounded_json, bounded_text

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,254}")
STATUS_BY_STATE = {
    states.PENDING: "scheduled", states.RECEIVED: "scheduled", states.STARTED: "running",
    PROGRESS: "running", states.RETRY: "retrying", states.SUCCESS: "finished",
    states.FAILURE: "failed", states.REJECTED: "failed", states.REVOKED: "revoked",
}
FIELDS = (
    "name", "state", "progress", "result", "failure", "worker", "queue", "args", "kwargs", "retries",
    "sent_at", "received_at", "started_at", "finished_at", "runtime", "parent_id", "root_id",
    "group_id", "chain", "chain_of", "chord_of", "goal", "replay_of", "replayed_by", "revoke_requested_at",
    "revoke_reason", "last_error", "lost_reason", "created_at", "updated_at",
)
RATE_WINDOW = 10  # history points used for the rate
MESSAGE_PARTS = 20  # of an exception's args, joined into its message


def valid_id(task_id: Any) -> bool:
    """Whether ``task_id`` looks like a Celery task id (a UUID or a custom id of safe characters)."""
    return isinstance(task_id, str) and ID_PATTERN.fullmatch(task_id) is not None


def status_of(state: str | None) -> str:
    """Pulse's lower-case status for a Celery state; custom states count as running."""
    if state is None:
        return "unknown"
    return STATUS_BY_STATE.get(state, "running")


def unknown_json(task_id: str) -> dict[str, Any]:
    """The JSON of an id Pulse has never seen: status ``unknown``, never a bare PENDING."""
    return {"id": task_id, "status": "unknown", **dict.fromkeys(FIELDS), "children": [], "history": [],
            "can_replay": False, "can_skip": False, "can_revoke": False, "is_resolved": False}


def record_json(record: dict[str, Any] | None, task_id: str | None = None) -> dict[str, Any]:
    """The task JSON of a registry record (``unknown`` for None)."""
    if record is None:
        return unknown_json(task_id or "")
    status = record.get("status") or status_of(record.get("state"))
    history = record.get("history") or []
    out = {"id": record["id"], "status": status, **{field: record.get(field) for field in FIELDS},
           "children": record.get("children") or [], "history": history}
    out["progress"] = _progress(record, history)
    if out["state"] != states.SUCCESS:
        out["result"] = None
    if status in ("finished", "failed", "revoked"):  # it was lost, then its end came after all
        out["lost_reason"] = None
    if out["runtime"] is None and out["started_at"] and out["finished_at"]:
        out["runtime"] = round(out["finished_at"] - out["started_at"], 6)
    out.update(
        can_replay=status in ("failed", "lost") and record.get("call") is not None,
        can_skip=status in ("failed", "lost"),
        can_revoke=status in ACTIVE,
        is_resolved=status in RESOLVED,
    )
    return out


PUBLIC_FIELDS = ("id", "name", "status", "state", "progress", "result", "started_at", "finished_at",
                 "retries", "replay_of", "replayed_by", "revoke_requested_at", "updated_at")


def public_view(data: dict[str, Any], can_cancel: bool = False) -> dict[str, Any]:
    """What a per-task token may see: status, progress, result, and of a failure only its
    type, message and the details the task chose to expose (no traceback, arguments or worker)."""
    out = {field: data.get(field) for field in PUBLIC_FIELDS}
    failure = data.get("failure")
    if failure is not None:
        exposed = set(failure.get("exposed") or ())
        details = {key: value for key, value in (failure.get("details") or {}).items() if key in exposed}
        failure = {"exc_type": failure.get("exc_type"), "exc_message": failure.get("exc_message"),
                   "details": details}
    out["failure"] = failure
    out["can_cancel"] = bool(can_cancel and data.get("can_revoke"))
    return out


# What the dashboard pages (overview, tasks, workers) show of a task; the rest is on its own page.
SUMMARY_FIELDS = ("id", "name", "status", "progress", "result", "failure", "worker", "args", "kwargs",
                  "started_at", "finished_at", "runtime", "created_at", "updated_at")


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of the task JSON that the dashboard room carries (its snapshot and batches).

    Every batch goes to every open dashboard, so its size is paid once per client: with hundreds
    of tasks reporting, the progress history and the links, flags and timestamps no dashboard
    page shows would double it. The task's own room (the detail page) carries the full JSON.
    """
    return {key: data.get(key) for key in SUMMARY_FIELDS}


def _progress(record: dict[str, Any], history: list) -> dict[str, Any] | None:
    last = record.get("progress")
    if record.get("state") == states.SUCCESS:
        # A finished task keeps its last progress, completed, so a success reads 100%.
        done = dict(last or progress_meta(1, 1))
        if done.get("total") is not None:
            done["current"] = done["total"]
        return {**done, "percent": 100.0, "rate": None, "eta_seconds": None}
    if last is None:
        return None
    rate = _rate(history)
    eta = None
    if rate and last.get("total") is not None and record.get("status") in ACTIVE:
        eta = round(max(last["total"] - (last.get("current") or 0), 0) / rate, 1)
    return {**last, "rate": rate, "eta_seconds": eta}


def _rate(history: list) -> float | None:
    """Units per second over the last few reports; None until that means something."""
    window = history[-RATE_WINDOW:]
    if len(window) < 2:
        return None
    (t0, c0), (t1, c1) = window[0], window[-1]
    if t1 - t0 < 0.5 or c1 <= c0:
        return None
    return round((c1 - c0) / (t1 - t0), 3)


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def _failure(exc_type: Any, message: Any, traceback: Any, details: Any) -> dict[str, Any]:
    """The failure JSON, bounded; a list message (Celery's exception args) is joined."""
    if isinstance(message, list | tuple):
        message = ", ".join(str(bounded_text(part)) for part in message[:MESSAGE_PARTS])
    return {
        "exc_type": bounded_text(exc_type, TYPE_LIMIT),
        "exc_message": bounded_text(message),
        "traceback": bounded_text(traceback),
        "details": bounded_json(details or {}, DETAILS_LIMIT),
    }


def failure_of(stored: Any, traceback: Any) -> dict[str, Any]:
    """The failure JSON from a FAILURE meta, custom details separated from Celery's keys."""
    stored = stored if isinstance(stored, dict) else {}
    details = {k: v for k, v in stored.items() if k not in FAILURE_KEYS}
    return _failure(stored.get("exc_type"), stored.get("exc_message", ""), traceback, details)


def meta_write(meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The registry write (status, fields) that a result-backend entry stands for."""
    state = meta.get("status") or states.PENDING
    fields: dict[str, Any] = {"state": state, "name": meta.get("name"), "worker": meta.get("worker"),
                              "queue": meta.get("queue"), "retries": meta.get("retries")}
    if state == PROGRESS and isinstance(meta.get("result"), dict):
        stored = meta["result"]
        fields["progress"] = progress_meta(stored.get("current"), stored.get("total"), stored.get("message"))
    if state in states.READY_STATES:
        fields.update(finished_at=_epoch(meta.get("date_done")), has_result=True)
    if state == states.SUCCESS:
        fields["result"] = bounded_json(meta.get("result"))
    elif state == states.FAILURE:
        fields["failure"] = failure_of(meta.get("result"), meta.get("traceback"))
    return status_of(state), fields


def event_write(event: dict[str, Any]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """The registry write (status, fields, fill) that a task event stands for.

    Progress is written at the source, so a ``task-progress`` event writes nothing (None).
    """
    kind, at = event["type"], event.get("timestamp")
    worker = None if kind == "task-sent" else event.get("hostname")
    if kind == "task-sent":
        status = "retrying" if event.get("retries") else "scheduled"
        fields = {"state": states.PENDING, "name": event.get("name"), "args": _repr_text(event.get("args")),
                  "kwargs": _repr_text(event.get("kwargs")),
                  "queue": event.get("queue") or event.get("routing_key"),
                  "retries": event.get("retries"), "parent_id": event.get("parent_id"),
                  "root_id": event.get("root_id")}
        return status, fields, {"sent_at": at}
    if kind == "task-received":
        return "scheduled", {"state": states.RECEIVED, "worker": worker, "name": event.get("name")}, {
            "received_at": at, "args": _repr_text(event.get("args")),
            "kwargs": _repr_text(event.get("kwargs"))}
    if kind == "task-started":
        return "running", {"state": states.STARTED, "worker": worker}, {"started_at": at}
    if kind == "task-succeeded":
        return "finished", {"state": states.SUCCESS, "worker": worker, "runtime": event.get("runtime")}, {
            "finished_at": at, "has_result": True}
    if kind in ("task-failed", "task-rejected"):
        state = states.FAILURE if kind == "task-failed" else states.REJECTED
        return "failed", {"state": state, "worker": worker, "failure": _event_failure(event)}, {
            "finished_at": at, "has_result": True}
    if kind == "task-retried":
        return "retrying", {"state": states.RETRY, "last_error": _repr_text(event.get("exception"))}, {}
    if kind == "task-revoked":
        reason = "terminated" if event.get("terminated") else "revoked"
        reason = "expired" if event.get("expired") else reason
        return "revoked", {"state": states.REVOKED, "revoke_reason": reason}, {"finished_at": at}
    return None, {}, {}


def _repr_text(value: Any) -> str | None:
    """An event's repr of arguments or of an exception, bounded as the worker bounds its own."""
    return bounded_text(value, REPR_LIMIT)


def _event_failure(event: dict[str, Any]) -> dict[str, Any]:
    exception = str(event.get("exception") or "")
    return _failure(event.get("exc_type") or exception.partition("(")[0] or None,
                    event.get("exc_message", exception), event.get("traceback"), event.get("details"))

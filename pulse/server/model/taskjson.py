"""The task JSON: one shape for a task in the REST API, the Socket.IO pushes and the pages.

It is built from the task's registry record, and only read here: ``writes`` turns what Celery's
result backend and its events say into registry writes.
"""

import re
from typing import Any

from celery import states

from pulse.agent.progress import progress_meta
from pulse.record.statuses import ACTIVE, CELERY_ENDS, RESOLVED, UNSUCCESSFUL, status_of

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,254}")
FIELDS = (
    "name", "state", "progress", "result", "failure", "worker", "queue", "args", "kwargs", "retries",
    "sent_at", "received_at", "started_at", "finished_at", "runtime", "parent_id", "root_id",
    "group_id", "chain", "chain_of", "chord_of", "goal", "replay_of", "replayed_by", "revoke_requested_at",
    "revoke_reason", "last_error", "lost_reason", "periodic_entry", "created_at", "updated_at",
)
RATE_WINDOW = 10  # history points used for the rate


def valid_id(task_id: Any) -> bool:
    """Whether ``task_id`` looks like a Celery task id (a UUID or a custom id of safe characters)."""
    return isinstance(task_id, str) and ID_PATTERN.fullmatch(task_id) is not None


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
    if status in CELERY_ENDS:  # it was lost, then its end came after all
        out["lost_reason"] = None
    if out["runtime"] is None and out["started_at"] and out["finished_at"]:
        out["runtime"] = round(out["finished_at"] - out["started_at"], 6)
    out.update(
        can_replay=status in UNSUCCESSFUL and record.get("call") is not None,
        can_skip=status in UNSUCCESSFUL,
        # A bulk action's record is no Celery task: it is cancelled (POST /api/bulk/<id>/cancel).
        can_revoke=status in ACTIVE and not record.get("bulk_job"),
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

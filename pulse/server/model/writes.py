"""Registry writes from what Celery says: its result backend's meta and its task events."""

from datetime import datetime
from typing import Any

from celery import states

from pulse.agent.lifecycle import REPR_LIMIT
from pulse.agent.progress import progress_meta
from pulse.record.failures import failure_of_event, failure_of_meta
from pulse.record.safejson import bounded_json, bounded_text
from pulse.record.statuses import FAILED, FINISHED, PROGRESS, RETRYING, REVOKED, RUNNING, SCHEDULED, status_of


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
        fields["failure"] = failure_of_meta(meta.get("result"), meta.get("traceback"))
    return status_of(state), fields


def event_write(event: dict[str, Any]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """The registry write (status, fields, fill) that a task event stands for.

    Progress is written at the source, so a ``task-progress`` event writes nothing (None).
    """
    kind, at = event["type"], event.get("timestamp")
    worker = None if kind == "task-sent" else event.get("hostname")
    if kind == "task-sent":
        status = RETRYING if event.get("retries") else SCHEDULED
        fields = {"state": states.PENDING, "name": event.get("name"), "args": _repr_text(event.get("args")),
                  "kwargs": _repr_text(event.get("kwargs")),
                  "queue": event.get("queue") or event.get("routing_key"),
                  "retries": event.get("retries"), "parent_id": event.get("parent_id"),
                  "root_id": event.get("root_id")}
        return status, fields, {"sent_at": at}
    if kind == "task-received":
        return SCHEDULED, {"state": states.RECEIVED, "worker": worker, "name": event.get("name")}, {
            "received_at": at, "args": _repr_text(event.get("args")),
            "kwargs": _repr_text(event.get("kwargs"))}
    if kind == "task-started":
        return RUNNING, {"state": states.STARTED, "worker": worker}, {"started_at": at}
    if kind == "task-succeeded":
        return FINISHED, {"state": states.SUCCESS, "worker": worker, "runtime": event.get("runtime")}, {
            "finished_at": at, "has_result": True}
    if kind in ("task-failed", "task-rejected"):
        state = states.FAILURE if kind == "task-failed" else states.REJECTED
        return FAILED, {"state": state, "worker": worker, "failure": failure_of_event(event)}, {
            "finished_at": at, "has_result": True}
    if kind == "task-retried":
        return RETRYING, {"state": states.RETRY, "last_error": _repr_text(event.get("exception"))}, {}
    if kind == "task-revoked":
        reason = "terminated" if event.get("terminated") else "revoked"
        reason = "expired" if event.get("expired") else reason
        return REVOKED, {"state": states.REVOKED, "revoke_reason": reason}, {"finished_at": at}
    return None, {}, {}


def _repr_text(value: Any) -> str | None:
    """An event's repr of arguments or of an exception, bounded as the worker bounds its own."""
    return bounded_text(value, REPR_LIMIT)


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None

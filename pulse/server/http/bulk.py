"""The HTTP API of bulk actions (dry run, start, follow, cancel) and of the failure inbox."""

import re
from typing import Any

from flask import Blueprint, Flask, request

from pulse.server.http.api import ext
from pulse.server.http.auth import actor, api_access
from pulse.server.model.actions import ActionError
from pulse.server.model.bulk import JOB_ID_PREFIX
from pulse.server.model.inbox import failure_groups
from pulse.server.model.listing import ListingError, parse_filters

bp = Blueprint("bulk", __name__)
JOB_ID = re.compile(re.escape(JOB_ID_PREFIX) + "[0-9a-f]{16}")


def _filters(source: Any) -> dict[str, Any]:
    """A bulk action's filters: known keys only, and at least one (every task is a filter away:
    ``status=...``, never an empty object or a misspelt key)."""
    if not isinstance(source, dict):
        raise ActionError(400, '"filters" must be a JSON object of the task list\'s filters')
    filters = _listing(lambda: parse_filters(source, strict=True))
    if all(value is None or value == [] for value in filters.values()):
        raise ActionError(400, "a bulk action needs at least one filter (status, name, worker, queue, "
                               "exc_type, failure_group, q, since or until)")
    return filters


def _query_cap(raw: str | None) -> int | None:
    """The query string's cap as a number (the model checks its range)."""
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise ActionError(400, "cap must be a whole number")
    return int(raw)


def _job_id(job_id: str) -> str:
    if not JOB_ID.fullmatch(job_id):
        raise ActionError(400, f"malformed bulk action id: it looks like {JOB_ID_PREFIX}<16 hex digits>")
    return job_id


def _listing(call: Any) -> Any:
    try:
        return call()
    except ListingError as exc:
        raise ActionError(400, str(exc)) from None


@bp.get("/api/bulk/preview")
@api_access
def preview() -> dict[str, Any]:
    """The dry run: how many tasks the filters select (up to the cap), how many of them the
    action applies to, and the first ids."""
    query = {key: value for key, value in request.args.items() if key not in ("action", "cap")}
    filters = _filters(query)
    return _listing(lambda: ext("pulse_bulk").preview(request.args.get("action"), filters,
                                                      _query_cap(request.args.get("cap"))))


@bp.post("/api/bulk")
@api_access
def start() -> Any:
    """Start a bulk action: 202 with the job, which any server then carries out."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ActionError(400, 'send {"action": "...", "filters": {...}, "reason": "..."}')
    raw = body.get("filters", {})
    filters = _filters(raw)
    job = _listing(lambda: ext("pulse_bulk").start(actor(), body.get("action"), filters, raw,
                                                   body.get("reason"), body.get("cap")))
    return job, 202, {"Location": f"/api/bulk/{job['id']}"}


@bp.get("/api/bulk")
@api_access
def jobs() -> dict[str, Any]:
    return {"jobs": ext("pulse_bulk").jobs()}


@bp.get("/api/bulk/<job_id>")
@api_access
def job(job_id: str) -> Any:
    found = ext("pulse_bulk").job(_job_id(job_id))
    if found is None:
        raise ActionError(404, f"no bulk action with id {job_id!r}")
    return found


@bp.get("/api/bulk/<job_id>/outcomes")
@api_access
def outcomes(job_id: str) -> Any:
    """Each task's outcome so far (at most 10,000: a job's cap)."""
    bulk = ext("pulse_bulk")
    if bulk.job(_job_id(job_id)) is None:
        raise ActionError(404, f"no bulk action with id {job_id!r}")
    return {"id": job_id, "outcomes": bulk.outcomes(job_id, limit=bulk.cap)}


@bp.post("/api/bulk/<job_id>/cancel")
@api_access
def cancel(job_id: str) -> Any:
    body = request.get_json(silent=True)
    reason = body.get("reason") if isinstance(body, dict) else None
    return ext("pulse_bulk").cancel(actor(), _job_id(job_id), reason)


@bp.get("/api/failures")
@api_access
def failures() -> dict[str, Any]:
    """The failure inbox: unresolved failures grouped by task name and exception type."""
    return failure_groups(ext("pulse_registry"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)  # its ActionError answers come from commands' handler

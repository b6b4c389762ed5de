"""The HTTP API's queries: tasks, counts, workers, goals, the audit log, health and metrics."""

import hashlib
import json
import re
import time
from importlib import resources
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, g, request, session
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException
from werkzeug.routing import PathConverter

from pulse.record.statuses import ENDED
from pulse.server.http.auth import api_access, bearer_token
from pulse.server.http.grants import covers_task, reader_or_grant
from pulse.server.model.listing import FULL_LIMIT, MAX_LIMIT, ListingError, parse_filters
from pulse.server.model.overview import overview
from pulse.server.model.taskjson import RATE_WINDOW, public_view, summary, valid_id
from pulse.server.model.workers import all_workers

bp = Blueprint("api", __name__)
MAX_WAIT = 30.0
GOAL_LIMIT = 200
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def valid_goal(goal: Any) -> bool:
    """A goal key: 1-200 characters, none of them an ASCII control character."""
    return isinstance(goal, str) and 0 < len(goal) <= GOAL_LIMIT and not CONTROL_CHARACTERS.search(goal)


def ext(name: str) -> Any:
    return current_app.extensions[name]


def bad_id() -> tuple[dict, int]:
    return {"error": "malformed task id: use 1-255 letters, digits, '.', '_', ':' or '-', "
                     "starting with a letter or digit"}, 400


@bp.get("/healthz")
def healthz() -> dict[str, Any]:
    """Liveness with the state of Redis and of the event monitor (no credentials needed)."""
    try:
        redis_ok = bool(ext("pulse_redis").ping())
    except Exception:  # any connection error means "not reachable" here
        redis_ok = False
    monitor = ext("pulse_monitor")
    return {
        "status": "ok" if redis_ok and monitor.connected else "degraded",
        "redis": {"ok": redis_ok},
        "monitor": {"connected": monitor.connected, "events": monitor.events_seen,
                    "last_event_at": monitor.last_event_at},
    }


@bp.get("/api/openapi.json")
def openapi() -> Response:
    """The API's OpenAPI 3.1 description (public, like the API's shape)."""
    text = resources.files(__package__).joinpath("openapi.json").read_text()
    return Response(text, mimetype="application/json")


@bp.get("/metrics")
@api_access
def metrics() -> Response:
    return Response(ext("pulse_metrics").render(), mimetype="text/plain; version=0.0.4")


def _wait_seconds() -> float | None:
    raw = request.args.get("wait")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise ListingError(f"wait={raw[:20]!r} is not a number of seconds") from None
    if not 0 <= seconds < float("inf"):
        raise ListingError("wait must be a number of seconds from 0 to 30")
    return min(seconds, MAX_WAIT)


def _waiter() -> str:
    """Whose wait this is, as a key (a hash, never the secret): the token sent (bearer or
    ``?token=``, as ``reader_or_grant`` took it), else the login session."""
    secret = bearer_token() or request.args.get("token") or session.get("sid") or session.get("csrf") or ""
    return hashlib.sha256(str(secret).encode()).hexdigest()


def _wait_for_end(store: Any, task_id: str, data: dict[str, Any], wait: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    while data["status"] not in (*ENDED, "unknown") and time.monotonic() < deadline:
        # Woken by the monitor when the task ends; re-read at least every second regardless.
        ext("pulse_waiters").wait(task_id, min(1.0, deadline - time.monotonic()))
        data = store.describe(task_id)
    return data


@bp.get("/api/tasks/<path:task_id>")
@reader_or_grant
def get_task(task_id: str) -> Any:
    """The task JSON; 404 with status ``unknown`` for an id never seen, 400 for a malformed one.

    ``?wait=N`` holds the answer up to N seconds (at most 30) until the task has ended. A
    per-task token (header or ``?token=``) reads its own task, in the public view.
    """
    if not valid_id(task_id):
        return bad_id()
    grant = g.grant
    if grant is not None and not covers_task(ext("pulse_registry"), grant, task_id):
        return {"error": "this token does not grant that task"}, 403
    try:
        wait = _wait_seconds()
    except ListingError as exc:
        return {"error": str(exc)}, 400
    store = ext("pulse_store")
    data = store.describe(task_id)
    # An id nobody ever recorded will not end: answer 404 at once rather than after the wait.
    if wait and data["status"] not in (*ENDED, "unknown"):
        most = current_app.config["MAX_WAITS_PER_CREDENTIAL"]
        with ext("pulse_waiters").hold(_waiter(), most) as admitted:
            if not admitted:
                # Refused, not answered at once: a client that loops on ?wait= would take an
                # early answer for a wait that ended, and ask again at once, in a tight loop.
                return {"error": f"too many requests are waiting with this credential ({most} at most): "
                                 "wait for one to answer, or ask without ?wait="}, 429, {"Retry-After": "5"}
            data = _wait_for_end(store, task_id, data, wait)
    if data["status"] == "unknown":
        return {**data, "error": f"no task with id {task_id!r} has been seen"}, 404
    return data if grant is None else public_view(data, can_cancel=grant.cancel)


def filters_from_request() -> dict[str, Any]:
    """The list filters of this request's query string (``GET /api/tasks`` and the exports)."""
    return parse_filters(request.args)


@bp.get("/api/tasks")
@api_access
def list_tasks() -> Any:
    """A page of tasks, newest first, with filters and a stable cursor; above ``FULL_LIMIT``
    tasks a page holds their summaries (a task's full JSON, history and all, is one GET away)."""
    try:
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        return {"error": f"limit must be a whole number from 1 to {MAX_LIMIT}"}, 400
    try:
        page = ext("pulse_listing").page(filters_from_request(), limit, request.args.get("cursor"),
                                         request.args.get("order", "desc"))
    except ListingError as exc:
        return {"error": str(exc)}, 400
    store = ext("pulse_store")
    if limit <= FULL_LIMIT:
        return {"tasks": store.many_json(page.ids), "next_cursor": page.next_cursor}
    # The rate needs the newest few history points only.
    tasks = store.many_json(page.ids, points=lambda task_id: RATE_WINDOW)
    return {"tasks": [summary(task) for task in tasks], "next_cursor": page.next_cursor}


@bp.get("/api/tasks/counts")
@api_access
def task_counts() -> dict[str, Any]:
    return ext("pulse_listing").counts()


@bp.get("/api/workers")
@api_access
def workers() -> dict[str, Any]:
    """Every worker the monitor heard from, or that still has running tasks."""
    return {"workers": all_workers(ext("pulse_monitor"), ext("pulse_store"), ext("pulse_listing"))}


@bp.get("/api/overview")
@api_access
def get_overview() -> dict[str, Any]:
    """Counts, throughput per minute over the last hour, failure rate, queues and warnings."""
    monitor, upkeep = ext("pulse_monitor"), ext("pulse_maintenance")
    online = sum(1 for w in monitor.state.workers.values() if w.alive)
    return overview(ext("pulse_listing"), ext("pulse_broker"), ext("pulse_celery").conf.task_default_queue,
                    online, upkeep.consumers, monitor.connected, depths=ext("pulse_queue_depths"))


@bp.get("/api/goals/<path:goal>")
@api_access
def get_goal(goal: str) -> Any:
    if not valid_goal(goal):
        return {"error": f"a goal key is 1-{GOAL_LIMIT} characters, no control characters"}, 400
    task = ext("pulse_actions").goal(goal)
    if task is None:
        return {"goal": goal, "error": f"goal {goal!r} was never launched"}, 404
    return {"goal": goal, "status": task["status"], "task": task}


@bp.get("/api/audit")
@api_access
def audit() -> Any:
    try:
        limit = int(request.args.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        return {"error": "limit must be a whole number from 1 to 1000"}, 400
    return {"entries": ext("pulse_audit").read(limit)}


def _json_error(exc: HTTPException) -> Any:
    if request.path.startswith("/api/") or request.path in ("/healthz", "/metrics"):
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]  # keeps Allow
        return Response(json.dumps({"error": exc.description}), exc.code, headers=headers,
                        mimetype="application/json")
    return exc


def _redis_down(exc: Exception) -> Any:
    # Redis is Pulse's store and broker: without it the honest answer is "unavailable", not 500.
    return {"error": f"Redis is unreachable ({type(exc).__name__}); retry when it is back"}, 503


class AnyPath(PathConverter):
    """``path``, but matching line feeds too, so a malformed id reaches the view and gets its 400."""

    regex = "(?s:[^/].*?)"


def init_app(app: Flask) -> None:
    app.url_map.converters["path"] = AnyPath
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _json_error)
    for error in (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError):
        app.register_error_handler(error, _redis_down)

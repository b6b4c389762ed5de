"""The HTTP API: task status, launching allow-listed tasks, and the health check."""

from typing import Any

from flask import Blueprint, Flask, current_app, request, url_for
from kombu.exceptions import OperationalError
from werkzeug.exceptions import HTTPException

from .auth import api_access
from .taskjson import valid_id

bp = Blueprint("api", __name__)


def _monitor():
    return current_app.extensions["pulse_monitor"]


@bp.get("/healthz")
def healthz() -> dict[str, Any]:
    """Liveness with the state of Redis and of the event monitor (no credentials needed)."""
    try:
        redis_ok = bool(current_app.extensions["pulse_redis"].ping())
    except Exception:  # any connection error means "not reachable" here
        redis_ok = False
    monitor = _monitor()
    return {
        "status": "ok" if redis_ok and monitor.connected else "degraded",
        "redis": {"ok": redis_ok},
        "monitor": {
            "connected": monitor.connected,
            "events": monitor.state.event_count,
            "last_event_at": monitor.last_event_at,
        },
    }


@bp.get("/api/tasks/<path:task_id>")
@api_access
def get_task(task_id: str) -> Any:
    """The task JSON; 404 with status ``unknown`` for an id never seen, 400 for a malformed one."""
    if not valid_id(task_id):
        return {"error": "malformed task id: use 1-255 letters, digits, '.', '_', ':' or '-'"}, 400
    data = _monitor().describe(task_id)
    if data["status"] == "unknown":
        return {**data, "error": f"no task with id {task_id!r} has been seen"}, 404
    return data


def _launch_request(body: Any) -> tuple[str, list, dict]:
    if not isinstance(body, dict):
        raise ValueError('send a JSON object: {"name": "...", "args": [...], "kwargs": {...}}')
    name, args, kwargs = body.get("name"), body.get("args", []), body.get("kwargs", {})
    if not isinstance(name, str) or not name:
        raise ValueError('"name" must be a task name string')
    if not isinstance(args, list):
        raise ValueError('"args" must be a JSON array')
    if not isinstance(kwargs, dict):
        raise ValueError('"kwargs" must be a JSON object')
    return name, args, kwargs


@bp.post("/api/tasks")
@api_access
def launch_task() -> Any:
    """Launch an allow-listed task; 202 with its id."""
    try:
        name, args, kwargs = _launch_request(request.get_json(silent=True))
    except ValueError as exc:
        return {"error": str(exc)}, 400
    allowed = current_app.config["LAUNCH_ALLOW"]
    if name not in allowed:
        return {"error": f"task {name[:200]!r} is not in the launch allow-list "
                         f"(PULSE_LAUNCH_ALLOW): {', '.join(allowed)}"}, 403
    try:
        result = current_app.extensions["pulse_celery"].send_task(name, args=args, kwargs=kwargs)
    except (OperationalError, OSError) as exc:
        return {"error": f"the broker is unreachable, task not sent: {type(exc).__name__}"}, 503
    _monitor().record_sent(result.id, name)
    location = url_for("api.get_task", task_id=result.id)
    return {"id": result.id, "status": "scheduled", "url": location}, 202, {"Location": location}


def _json_error(exc: HTTPException) -> Any:
    if request.path.startswith("/api/") or request.path == "/healthz":
        return {"error": exc.description}, exc.code
    return exc


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _json_error)

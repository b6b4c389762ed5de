"""The HTTP API's commands: launch, revoke, replay, skip and forget. Operator only."""

from typing import Any

from flask import Blueprint, Flask, current_app, request, url_for

from pulse.server.http.api import GOAL_LIMIT, bad_id, ext, valid_goal
from pulse.server.http.auth import actor, api_access
from pulse.server.model.actions import ActionError
from pulse.server.model.taskjson import valid_id

bp = Blueprint("commands", __name__)


def _body() -> dict[str, Any]:
    if not request.content_length:
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ActionError(400, "send a JSON object as the request body")
    return body


def _launch_request(body: dict[str, Any]) -> tuple[str, list, dict, str | None, bool]:
    name, args, kwargs = body.get("name"), body.get("args", []), body.get("kwargs", {})
    goal, force = body.get("goal"), body.get("force", False)
    if not isinstance(name, str) or not name:
        raise ActionError(400, '"name" must be a task name string')
    if not isinstance(args, list):
        raise ActionError(400, '"args" must be a JSON array')
    if not isinstance(kwargs, dict):
        raise ActionError(400, '"kwargs" must be a JSON object')
    if goal is not None and not valid_goal(goal):
        raise ActionError(400, f'"goal" must be a string of 1-{GOAL_LIMIT} characters, no control characters')
    if not isinstance(force, bool):
        raise ActionError(400, '"force" must be true or false')
    allowed = current_app.config["LAUNCH_ALLOW"]
    if name not in allowed:
        raise ActionError(403, f"task {name[:200]!r} is not in the launch allow-list "
                               f"(PULSE_LAUNCH_ALLOW): {', '.join(allowed)}")
    return name, args, kwargs, goal, force


@bp.post("/api/tasks")
@api_access
def launch_task() -> Any:
    """Launch an allow-listed task: 202 with its id, or 200 with the goal's existing task."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return {"error": 'send a JSON object: {"name": "...", "args": [...], "kwargs": {...}}'}, 400
    name, args, kwargs, goal, force = _launch_request(body)
    started, task = ext("pulse_actions").launch(actor(), name, args, kwargs, goal, force)
    location = url_for("api.get_task", task_id=task["id"])
    answer = {"id": task["id"], "status": task["status"], "url": location, "started": started,
              "goal": goal, "task": task}
    return answer, 202 if started else 200, {"Location": location}


def _act(task_id: str, verb: str, **options: Any) -> Any:
    if not valid_id(task_id):
        return bad_id()
    return getattr(ext("pulse_actions"), verb)(actor(), task_id, **options)


@bp.post("/api/tasks/<task_id>/revoke")
@api_access
def revoke(task_id: str) -> Any:
    body = _body()
    terminate, signal = body.get("terminate", False), body.get("signal", "SIGTERM")
    if not isinstance(terminate, bool) or not isinstance(signal, str):
        return {"error": '"terminate" must be true or false and "signal" a signal name'}, 400
    return _act(task_id, "revoke", terminate=terminate, signal=signal)


@bp.post("/api/tasks/<task_id>/replay")
@api_access
def replay(task_id: str) -> Any:
    return _act(task_id, "replay")


@bp.post("/api/tasks/<task_id>/skip")
@api_access
def skip(task_id: str) -> Any:
    return _act(task_id, "skip")


@bp.delete("/api/tasks/<path:task_id>")
@api_access
def forget(task_id: str) -> Any:
    purge = request.args.get("purge", "false")
    if purge not in ("true", "false"):
        return {"error": "purge must be true or false"}, 400
    return _act(task_id, "forget", purge=purge == "true")


def _action_error(exc: ActionError) -> Any:
    return {"error": str(exc)}, exc.status


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.register_error_handler(ActionError, _action_error)

"""``GET /api/tasks/<id>/logs``: a task's log lines after a number, for the log pane's backlog.

The pane loads the lines after the last one it holds, then takes the ``log`` pushes, whose lines
carry the same numbers: no gap and no duplicate across a reload. Operator and viewers read every
task's lines; a per-task token only those of a task that exposes them
(``@app.task(pulse_expose_logs=True)``).
"""

from typing import Any

from flask import Blueprint, Flask, g, request

from pulse.record.logs import READ_LIMIT, TaskLogs
from pulse.server.http.api import bad_id, ext
from pulse.server.http.grants import covers_task, reader_or_grant
from pulse.server.model.taskjson import valid_id

bp = Blueprint("logs", __name__)
DIGITS = 15  # a line number or limit longer than this is no number Pulse wrote


def _whole(name: str, default: int, lowest: int, highest: int) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > DIGITS or not lowest <= int(raw) <= highest:
        return None
    return int(raw)


@bp.get("/api/tasks/<path:task_id>/logs")
@reader_or_grant
def task_logs(task_id: str) -> Any:
    """``{"id", "lines": [{"seq", "at", "level", "logger", "message"}], "last", "dropped", "lost"}``,
    oldest first, numbered above ``after``."""
    if not valid_id(task_id):
        return bad_id()
    after = _whole("after", 0, 0, 10**DIGITS)
    limit = _whole("limit", READ_LIMIT, 1, READ_LIMIT)
    if after is None or limit is None:
        return {"error": f"after is a line number (0 or more), limit a whole number from 1 to "
                         f"{READ_LIMIT}"}, 400
    registry = ext("pulse_registry")
    grant = g.grant
    if grant is not None:
        if not covers_task(registry, grant, task_id):
            return {"error": "this token does not grant that task"}, 403
        if registry.client.hget(registry.keys.task(task_id), "logs_exposed") is None:
            return {"error": "this task does not show its log lines to per-task tokens"}, 403
    if registry.client.exists(registry.keys.task(task_id), registry.keys.log_counts(task_id)) == 0:
        return {"error": f"no task with id {task_id!r} has been seen"}, 404
    return {"id": task_id, **TaskLogs(registry).read(task_id, after, limit)}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)  # after api, whose path converter it uses

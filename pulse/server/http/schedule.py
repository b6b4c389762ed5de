"""The periodic tasks over HTTP: the app's beat schedule with its runs (any reader), and run now
(operator only, with a reason, audited)."""

from typing import Any

from flask import Blueprint, Flask, request, url_for

from pulse.server.http.api import ext
from pulse.server.http.auth import actor, api_access
from pulse.server.model.schedule import NAME_LIMIT, REASON_LIMIT, Schedule, valid_entry_name

bp = Blueprint("schedule", __name__)


@bp.get("/api/periodic")
@api_access
def periodic() -> dict[str, Any]:
    """Every entry of the app's ``beat_schedule``: schedule in words, arguments, last runs, next run."""
    return ext("pulse_schedule").describe()


@bp.post("/api/periodic/<path:entry>/run")
@api_access
def run_entry(entry: str) -> Any:
    """Send the entry's task now: 202 with the new task's id and URL."""
    if not valid_entry_name(entry):
        return {"error": f"malformed entry name: 1-{NAME_LIMIT} characters, no control characters"}, 400
    body = request.get_json(silent=True)
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_LIMIT:
        return {"error": f'send a JSON object with a "reason": why you run it now, '
                         f"1-{REASON_LIMIT} characters"}, 400
    task_id = ext("pulse_schedule").run_now(actor(), entry, reason.strip())
    location = url_for("api.get_task", task_id=task_id)
    answer = {"id": task_id, "entry": entry, "url": location,
              "page": url_for("pages.task", task_id=task_id), "task": ext("pulse_store").describe(task_id)}
    return answer, 202, {"Location": location}


def init_app(app: Flask) -> None:
    extensions = app.extensions
    extensions["pulse_schedule"] = Schedule(
        extensions["pulse_celery"], extensions["pulse_registry"], extensions["pulse_listing"],
        extensions["pulse_audit"], send=extensions["pulse_actions"].send)
    app.register_blueprint(bp)

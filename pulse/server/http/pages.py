"""The browser pages: overview, tasks, task detail, workers, queues, periodic tasks, the failure
inbox, the runtime analytics and the alert rules (login lives in ``auth``).

Pages are shells: their scripts read the API and the Socket.IO rooms, so what a page shows is
exactly what the API answers.
"""

from typing import Any

from flask import Blueprint, Flask, current_app, render_template

from pulse.server.http.auth import page_access
from pulse.server.model.analytics import WINDOWS
from pulse.server.model.queues import NAME_LIMIT
from pulse.server.model.taskjson import valid_id

bp = Blueprint("pages", __name__)


@bp.get("/")
@page_access
def dashboard() -> Any:
    return render_template("overview.html", page="overview", launchable=current_app.config["LAUNCH_ALLOW"])


@bp.get("/tasks")
@page_access
def tasks() -> Any:
    return render_template("tasks.html", page="tasks")


@bp.get("/tasks/<path:task_id>")
@page_access
def task(task_id: str) -> Any:
    if not valid_id(task_id):
        return render_template("error.html", message="That is not a valid task id."), 400
    return render_template("task.html", page="tasks", task_id=task_id)


@bp.get("/workers")
@page_access
def workers() -> Any:
    return render_template("workers.html", page="workers")


@bp.get("/queues")
@page_access
def queues() -> Any:
    return render_template("queues.html", page="queues", name_limit=NAME_LIMIT)


@bp.get("/periodic")
@page_access
def periodic() -> Any:
    return render_template("periodic.html", page="periodic")


@bp.get("/failures")
@page_access
def failures() -> Any:
    return render_template("failures.html", page="failures")


@bp.get("/analytics")
@page_access
def analytics() -> Any:
    return render_template("analytics.html", page="analytics", windows=WINDOWS)


@bp.get("/alerts")
@page_access
def alerts() -> Any:
    return render_template("alerts.html", page="alerts")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

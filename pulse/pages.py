"""The browser pages: the dashboard (login lives in ``auth``)."""

from typing import Any

from flask import Blueprint, Flask, current_app, render_template

from .auth import page_access

bp = Blueprint("pages", __name__)


@bp.get("/")
@page_access
def dashboard() -> Any:
    return render_template("dashboard.html", launchable=current_app.config["LAUNCH_ALLOW"])


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

"""Runtime analytics over HTTP: the page (/analytics) and its API (any reader)."""

import time
from typing import Any

from flask import Blueprint, Flask, render_template, request

from pulse.record.analytics import BOUNDS
from pulse.server.http.api import ext
from pulse.server.http.auth import api_access, page_access
from pulse.server.model.analytics import CAPS, QUANTILES

bp = Blueprint("analytics", __name__)
WINDOWS = (3600, 86400)


@bp.get("/analytics")
@page_access
def page() -> Any:
    return render_template("analytics.html", page="analytics", windows=WINDOWS)


@bp.get("/api/analytics")
@api_access
def summary() -> Any:
    """Per task name, the tasks that ended in the last hour or day: counts, failure rate, runtime
    and queue wait percentiles (estimated from the buckets, whose bounds the answer carries)."""
    raw = request.args.get("window", str(WINDOWS[0]))
    if raw not in {str(window) for window in WINDOWS}:
        return {"error": f"window must be {' or '.join(map(str, WINDOWS))} (seconds)"}, 400
    now = time.time()
    return {"window": int(raw), "at": now, "bounds": list(BOUNDS),
            "quantiles": list(QUANTILES), "caps": CAPS,
            "names": ext("pulse_analytics").summary(int(raw), now)}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

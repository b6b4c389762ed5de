"""Runtime analytics over HTTP: ``GET /api/analytics`` (any reader); the page is in ``pages``."""

import time
from typing import Any

from flask import Blueprint, Flask, request

from pulse.record.analytics import BOUNDS
from pulse.server.http.api import ext
from pulse.server.http.auth import api_access
from pulse.server.model.analytics import CAPS, QUANTILES, WINDOWS

bp = Blueprint("analytics", __name__)

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

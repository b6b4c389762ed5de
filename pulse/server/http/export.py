"""Export routes: the tasks a list filter selects, as CSV or NDJSON, streamed (operator and viewer)."""

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, request

from pulse.server.http.api import ext, filters_from_request
from pulse.server.http.auth import api_access
from pulse.server.model import export
from pulse.server.model.listing import ListingError

bp = Blueprint("export", __name__)


def _export(media_type: str, suffix: str, encode: Callable[[Iterator[dict]], Iterator[bytes]],
            trailer: Callable[[str], bytes]) -> Any:
    try:  # reads the first page: a bad filter is a 400, not a broken download
        rows = export.tasks(ext("pulse_listing"), ext("pulse_store"), filters_from_request(),
                            request.args.get("order", "desc"))
    except ListingError as exc:
        return {"error": str(exc)}, 400
    name = f"pulse-tasks-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.{suffix}"
    return Response(export.guarded(encode(rows), trailer), mimetype=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "Cache-Control": "no-store"})


@bp.get("/api/tasks.ndjson")
@api_access
def tasks_ndjson() -> Any:
    """Every task the filters of ``GET /api/tasks`` select, one full task JSON a line."""
    return _export("application/x-ndjson", "ndjson", export.ndjson,
                   lambda reason: (json.dumps({"error": reason}) + "\n").encode())


@bp.get("/api/tasks.csv")
@api_access
def tasks_csv() -> Any:
    """The same tasks as CSV: a header and one line per task (``export.COLUMNS``)."""
    return _export("text/csv", "csv", export.csv_rows, lambda reason: f"# {reason}\n".encode())


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

"""Worker control over HTTP: each worker's reports (operator and viewer) and the operator's
commands to it, every one with a typed reason that goes to the audit log.

``GET /api/workers`` (the list) stays in ``api``; the model is ``pulse.server.model.control``.
"""

import math
import re
from typing import Any

from flask import Blueprint, Flask, current_app, request

from pulse.server.http.auth import actor, api_access
from pulse.server.model.actions import ActionError
from pulse.server.model.control import WorkerControl

bp = Blueprint("workers", __name__)

REASON_LIMIT = 500
NAME_LIMIT = 255  # a queue or task name
MOST_STEP = 32  # pool processes added or removed by one call
MOST_PROCESSES = 256  # autoscale's maximum
MOST_SECONDS = 31_536_000.0  # a time limit: a year
RATE = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?(/[smh])?", re.ASCII)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _control() -> WorkerControl:
    return current_app.extensions["pulse_control"]


def _command(name: str) -> tuple[WorkerControl, dict[str, Any], str]:
    """The control, the JSON body and its reason, for a command to worker ``name``: 400 for a
    malformed name, body or reason, 404 for a worker never seen (checked first)."""
    control = _control()
    control.check(name)
    body = request.get_json(silent=True) if request.content_length else None
    if not isinstance(body, dict):
        raise ActionError(400, 'send a JSON object as the body, with at least {"reason": "why you do this"}')
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_LIMIT:
        raise ActionError(400, f'"reason" is required: a string of 1-{REASON_LIMIT} characters saying why '
                               "(it is written to the audit log)")
    return control, body, reason


def _whole(body: dict[str, Any], key: str, low: int, high: int, default: int | None = None) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ActionError(400, f'"{key}" must be a whole number from {low} to {high}')
    return value


def _name(body: dict[str, Any], key: str, what: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or len(value) > NAME_LIMIT or CONTROL_CHARACTERS.search(value):
        raise ActionError(400, f'"{key}" must be a {what}: 1-{NAME_LIMIT} characters, no control characters')
    return value


def _seconds(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 < value <= MOST_SECONDS:
        raise ActionError(400, f'"{key}" must be a number of seconds above 0 and at most {MOST_SECONDS:.0f}, '
                               "or null for no limit")
    return float(value)


@bp.get("/api/workers/<name>")
@api_access
def reports(name: str) -> Any:
    """What the worker reports: stats and pool, queues, registered, active, reserved and scheduled
    tasks, configuration; 504 when it does not answer within the wait."""
    return _control().reports(name)


@bp.post("/api/workers/<name>/pool/grow")
@api_access
def pool_grow(name: str) -> Any:
    control, body, reason = _command(name)
    return control.pool_grow(actor(), name, _whole(body, "n", 1, MOST_STEP, 1), reason)


@bp.post("/api/workers/<name>/pool/shrink")
@api_access
def pool_shrink(name: str) -> Any:
    control, body, reason = _command(name)
    return control.pool_shrink(actor(), name, _whole(body, "n", 1, MOST_STEP, 1), reason)


@bp.post("/api/workers/<name>/pool/autoscale")
@api_access
def autoscale(name: str) -> Any:
    control, body, reason = _command(name)
    most = _whole(body, "max", 1, MOST_PROCESSES)
    least = _whole(body, "min", 0, MOST_PROCESSES)
    if least > most:
        raise ActionError(400, f'"min" ({least}) must not be above "max" ({most})')
    return control.autoscale(actor(), name, most, least, reason)


@bp.post("/api/workers/<name>/pool/restart")
@api_access
def pool_restart(name: str) -> Any:
    control, _body, reason = _command(name)
    return control.pool_restart(actor(), name, reason)


@bp.post("/api/workers/<name>/shutdown")
@api_access
def shutdown(name: str) -> Any:
    control, _body, reason = _command(name)
    return control.shutdown(actor(), name, reason)


@bp.post("/api/workers/<name>/consumers/add")
@api_access
def add_consumer(name: str) -> Any:
    control, body, reason = _command(name)
    return control.add_consumer(actor(), name, _name(body, "queue", "queue name"), reason)


@bp.post("/api/workers/<name>/consumers/cancel")
@api_access
def cancel_consumer(name: str) -> Any:
    control, body, reason = _command(name)
    return control.cancel_consumer(actor(), name, _name(body, "queue", "queue name"), reason)


@bp.post("/api/workers/<name>/rate-limit")
@api_access
def rate_limit(name: str) -> Any:
    control, body, reason = _command(name)
    task = _name(body, "task", "task name")
    rate = body.get("rate_limit")
    if not isinstance(rate, str) or not RATE.fullmatch(rate):
        raise ActionError(400, '"rate_limit" must be tasks per second, minute or hour, as "10", "10/s", '
                               '"10/m" or "0.5/h" ("0": no limit)')
    return control.rate_limit(actor(), name, task, rate, reason)


@bp.post("/api/workers/<name>/time-limit")
@api_access
def time_limit(name: str) -> Any:
    control, body, reason = _command(name)
    task = _name(body, "task", "task name")
    soft, hard = _seconds(body, "soft"), _seconds(body, "hard")
    if soft is not None and hard is not None and soft > hard:
        raise ActionError(400, f'"soft" ({soft:g} s) must not be above "hard" ({hard:g} s)')
    return control.time_limit(actor(), name, task, soft, hard, reason)


def init_app(app: Flask) -> None:
    socketio = app.extensions["socketio"]
    app.extensions["pulse_control"] = WorkerControl(
        app.extensions["pulse_celery"], app.extensions["pulse_monitor"], app.extensions["pulse_audit"],
        sleep=socketio.sleep)
    app.register_blueprint(bp)

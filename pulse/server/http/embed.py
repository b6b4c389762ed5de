"""Embedding: per-task tokens, the widget script, the iframe page, groups, cancel, and CORS.

Only the routes a widget needs answer other origins, and only the origins listed in
PULSE_EMBED_ORIGINS, exactly; everything else stays same-origin.
"""

from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    render_template,
    request,
    send_from_directory,
    url_for,
)

from pulse.agent.tokens import MAX_TTL, TokenError, mint_token
from pulse.server.http.api import bad_id, ext
from pulse.server.http.auth import actor, api_access
from pulse.server.http.grants import check, covers_task, reader_or_grant, revoke_all
from pulse.server.model.actions import ActionError
from pulse.server.model.groups import describe_unit
from pulse.server.model.taskjson import public_view, valid_id

bp = Blueprint("embed", __name__)
CORS_ENDPOINTS = frozenset({"api.get_task", "embed.get_group", "embed.cancel_task"})


def _mint_options() -> tuple[float, bool]:
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict):
        raise ActionError(400, 'send a JSON object: {"ttl": seconds, "cancel": false}')
    ttl, cancel = body.get("ttl", 3600), body.get("cancel", False)
    longest = int(min(MAX_TTL, current_app.config["GRANT_MAX_TTL"]))
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 1 <= ttl <= longest:
        raise ActionError(400, f'"ttl" must be a number of seconds from 1 to {longest}')
    if not isinstance(cancel, bool):
        raise ActionError(400, '"cancel" must be true or false')
    return float(ttl), cancel


def _mint(kind: str, scope_id: str) -> Any:
    if not valid_id(scope_id):
        return bad_id()
    ttl, cancel = _mint_options()
    store = ext("pulse_store")
    known = store.describe(scope_id)["status"] != "unknown" if kind == "task" else \
        describe_unit(store, scope_id) is not None
    if not known:
        raise ActionError(404, f"no {kind} with id {scope_id!r} has been seen")
    token, expires = mint_token(current_app.config["GRANT_KEY"], ttl=ttl, cancel=cancel,
                                **{f"{kind}_id": scope_id})
    ext("pulse_audit").append(actor(), "token", scope_id, kind=kind, ttl=ttl, cancel=cancel)
    return {"token": token, "expires_at": expires, kind: scope_id}


@bp.post("/api/tasks/<task_id>/token")
@api_access
def task_token(task_id: str) -> Any:
    """Mint a read-only (optionally cancel-capable) token for one task."""
    return _mint("task", task_id)


@bp.post("/api/groups/<group_id>/token")
@api_access
def group_token(group_id: str) -> Any:
    """Mint a read-only token for one group, chord or chain."""
    return _mint("group", group_id)


@bp.delete("/api/tasks/<task_id>/tokens")
@api_access
def revoke_tokens(task_id: str) -> Any:
    """Revoke every token issued so far for this task (or group/chain id)."""
    if not valid_id(task_id):
        return bad_id()
    config = current_app.config
    cutoff = revoke_all(ext("pulse_registry"), task_id, config["GRANT_SKEW"], config["GRANT_MAX_TTL"])
    ext("pulse_audit").append(actor(), "revoke-tokens", task_id)
    return {"scope": task_id, "revoked_before": cutoff}


@bp.get("/api/groups/<group_id>")
@reader_or_grant
def get_group(group_id: str) -> Any:
    """A group, chord or chain: its members in order and the aggregate progress."""
    if not valid_id(group_id):
        return bad_id()
    grant = g.grant
    if grant is not None and grant.group_id != group_id:
        return {"error": "this token does not grant that group"}, 403
    view = (lambda data: public_view(data)) if grant is not None else (lambda data: data)
    unit = describe_unit(ext("pulse_store"), group_id, view)
    if unit is None:
        return {"error": f"no group or chain with id {group_id!r} has been seen"}, 404
    return unit


@bp.post("/api/tasks/<task_id>/cancel")
@reader_or_grant
def cancel_task(task_id: str) -> Any:
    """Revoke (terminating) a task: the operator, or a token minted with the cancel right."""
    if not valid_id(task_id):
        return bad_id()
    grant = g.grant
    if grant is None:  # api_access let only the operator through to a POST
        return ext("pulse_actions").revoke(actor(), task_id, terminate=True)
    if not grant.cancel or not covers_task(ext("pulse_registry"), grant, task_id):
        return {"error": "this token does not allow cancelling that task"}, 403
    data = ext("pulse_actions").revoke(f"task token {grant.token_id[:8]}", task_id, terminate=True)
    return public_view(data, can_cancel=True)


@bp.get("/widget.js")
def widget() -> Response:
    response = send_from_directory(current_app.static_folder, "widget.js", mimetype="application/javascript")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/embed/<path:unit_id>")
def embed(unit_id: str) -> Any:
    """The widget alone, for pages that can only frame a URL: /embed/<id>?token=...[&group=1]."""
    if not valid_id(unit_id):
        return render_template("error.html", message="That is not a valid task id."), 400
    # Only a grant for this very task or group is written into the page: anything else there
    # (the operator's token, say) would be handed to whoever frames it, with its rights.
    token, is_group = request.args.get("token", ""), request.args.get("group") == "1"
    try:
        grant = check(token)
    except TokenError as exc:
        return render_template("error.html", message=f"This widget cannot be shown: {exc}"), exc.status
    covered = grant.group_id == unit_id if is_group else covers_task(ext("pulse_registry"), grant, unit_id)
    if not covered:
        return render_template("error.html", message="This widget's token does not grant that "
                               f"{'group' if is_group else 'task'}."), 403
    html = render_template("embed.html", task_id=unit_id, token=token, is_group=is_group,
                           widget_url=url_for("embed.widget", _external=True))
    return Response(html)  # pulse.security lets the configured origins frame it


def _cors(response: Response) -> Response:
    origin = request.headers.get("Origin")
    if request.endpoint in CORS_ENDPOINTS and origin in current_app.config["EMBED_ORIGINS"]:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Max-Age"] = "600"
    if request.endpoint in CORS_ENDPOINTS:
        response.vary.add("Origin")
    return response


def own_origin(environ: dict) -> str:
    return f"{environ.get('wsgi.url_scheme', 'http')}://{environ.get('HTTP_HOST', '')}"


def socket_origins(embed_origins: tuple[str, ...]):
    """Socket.IO's origin check: this server's own origin, or exactly one of PULSE_EMBED_ORIGINS."""

    def allowed(origin: str | None, environ: dict) -> bool:
        return origin is None or origin == own_origin(environ) or origin in embed_origins

    return allowed


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.after_request(_cors)

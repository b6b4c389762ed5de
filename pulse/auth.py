"""Who may do what: the operator token, the login session, and the checks views use.

The API takes ``Authorization: Bearer <PULSE_TOKEN>``; the browser logs in once and then
carries a session cookie, with a CSRF token required on every mutating request it makes.
"""

import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

OPERATOR = "operator"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bp = Blueprint("auth", __name__)


def role_for_token(token: Any) -> str | None:
    """The role a token grants, compared in constant time; None for a wrong or missing token."""
    if not isinstance(token, str) or not token:
        return None
    if hmac.compare_digest(token.encode(), current_app.config["PULSE_TOKEN"].encode()):
        return OPERATOR
    return None


def _bearer() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def socket_role(payload: Any) -> str | None:
    """The role of a Socket.IO connection: its auth payload's token, else its login session."""
    if isinstance(payload, dict) and "token" in payload:
        return role_for_token(payload["token"])
    return session.get("role")


def _refusal(status: int, message: str) -> tuple[dict[str, str], int]:
    return {"error": message}, status


def api_access(view: Callable) -> Callable:
    """Let the operator through, by bearer token or by session plus CSRF token on mutations."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = _bearer()
        if token is not None:
            if role_for_token(token) != OPERATOR:
                return _refusal(401, "invalid token: send Authorization: Bearer <PULSE_TOKEN>")
        elif session.get("role") != OPERATOR:
            return _refusal(401, "authentication required: send Authorization: Bearer <PULSE_TOKEN>")
        elif request.method not in SAFE_METHODS and not _csrf_ok():
            return _refusal(403, "missing or wrong X-CSRF-Token header for this session")
        return view(*args, **kwargs)

    return wrapped


def actor() -> str:
    """Who is acting, for the audit log: the role, how it authenticated, and from where."""
    how = "token" if _bearer() is not None else "session"
    return f"{session.get('role') if how == 'session' else OPERATOR} ({how}) from {request.remote_addr}"


def page_access(view: Callable) -> Callable:
    """Send visitors without a session to the login page."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if session.get("role") is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def _csrf_ok() -> bool:
    expected = session.get("csrf")
    sent = request.headers.get("X-CSRF-Token", "")
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def _safe_next(target: str | None) -> str:
    # Only same-site paths: "//host" or "http://..." would make login an open redirect.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("pages.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST":
        role = role_for_token(request.form.get("token", ""))
        if role is not None:
            session.clear()
            session.update(role=role, csrf=secrets.token_urlsafe(32))
            return redirect(_safe_next(request.args.get("next")))
        flash("That token is not valid. Use the PULSE_TOKEN printed by `make run`.")
        return render_template("login.html"), 401
    return render_template("login.html")


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    session.clear()
    return redirect(url_for("auth.login"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.context_processor
    def _session_context() -> dict[str, Any]:
        return {"csrf_token": session.get("csrf", ""), "role": session.get("role")}
